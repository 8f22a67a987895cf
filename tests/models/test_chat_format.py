"""The chat format Ollama gets: the Go template, rendered by Go's text/template as Ollama
renders it, must give exactly the prompt the tokenizer's own Jinja template gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from milady_lab.errors import InputError
from milady_lab.models.handoff.chat_format import PROBES, chat_format

from .engine import GoTemplate

TEMPLATES = Path(__file__).parent / "chat_templates"
AGENT_TURNS = [
    {"role": "system", "content": "You are Milady.\n\n# Actions\nREPLY, IGNORE"},
    {"role": "user", "content": 'alice: gm! what is {{ "this" }}? <b>bold</b> \\ done'},
    {"role": "assistant", "content": "<response><actions>REPLY</actions></response>"},
    {"role": "user", "content": "bob: and now?"},
]


@pytest.fixture(scope="session")
def go(tmp_path_factory: pytest.TempPathFactory) -> GoTemplate:
    return GoTemplate(tmp_path_factory.mktemp("go"))


def _tokenizer(tiny_base: Path, template: str, bos: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    tok.chat_template = template
    tok.bos_token = bos
    return tok


CASES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("<|endoftext|>", "chatml", True),
    "Qwen-Qwen3-0.6B.jinja": ("<|endoftext|>", "chatml", False),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": ("<|begin_of_text|>", "llama3", True),
    "google-gemma-2-2b-it.jinja": ("<bos>", "gemma", False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_templates_render_the_same_in_go(tiny_base: Path, go: GoTemplate, name: str) -> None:
    bos, family, default_system = CASES[name]
    tok = _tokenizer(tiny_base, (TEMPLATES / name).read_text(), bos)
    fmt = chat_format(tok)
    assert fmt.family == family
    assert (fmt.default_system is not None) == default_system
    template = fmt.go_template()
    conversations = [list(p) for p in PROBES] + [AGENT_TURNS, AGENT_TURNS[1:2]]
    for messages in conversations:
        try:
            expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:
            continue  # Gemma 2 refuses a system role; Ollama sends it as a user turn
        expected = expected.removeprefix(bos)  # llama.cpp adds BOS when it tokenizes
        assert go.render(template, messages) == expected, messages
        assert fmt.render(messages) == expected


def test_smollm2_default_system_and_stop(go: GoTemplate) -> None:
    from transformers import AutoTokenizer

    from milady_lab.config import Settings
    from milady_lab.training.base_models import DEFAULT_MODEL, resolve_base_model

    tok = AutoTokenizer.from_pretrained(
        resolve_base_model(DEFAULT_MODEL, Settings.from_env()).hf_path
    )
    fmt = chat_format(tok)
    assert fmt.default_system is not None and "SmolLM" in fmt.default_system
    assert "<|im_end|>" in fmt.ollama_parameters()["stop"]
    messages = [{"role": "user", "content": "hi"}]
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert go.render(fmt.go_template(), messages) == expected
    # The previous assistant turn is left open when it is last (Ollama's continuation).
    partial = [*messages, {"role": "assistant", "content": "Hel"}]
    assert go.render(fmt.go_template(), partial).endswith("<|im_start|>assistant\nHel")


def test_a_format_it_cannot_translate_is_a_clear_400(tiny_base: Path) -> None:
    phi = (TEMPLATES / "microsoft-Phi-3.5-mini-instruct.jinja").read_text()
    with pytest.raises(InputError, match="cannot translate this model's chat template"):
        chat_format(_tokenizer(tiny_base, phi, "<s>"))
    with pytest.raises(InputError, match="no chat template"):
        chat_format(_tokenizer(tiny_base, "", "<s>"))
    # ChatML markers but extra text after each turn: refused, not mistranslated.
    odd = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>"
        "[{{ loop.index }}]\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% endif %}"
    )
    with pytest.raises(InputError, match="cannot translate this model's chat template"):
        chat_format(_tokenizer(tiny_base, odd, "<s>"))
