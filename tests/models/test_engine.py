"""Ollama's runtime is llama.cpp: the exact bytes ``import-ollama`` uploads, run in a real
llama.cpp with the prompt Ollama's Go template gives, must generate what torch + peft
generates. Checked for tiny llama, qwen2 and qwen3 models and for the real SmolLM2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training.conftest import smollm2_dir

from milady_lab.config import Settings
from milady_lab.models.handoff import gguf
from milady_lab.models.handoff.export import export_model
from milady_lab.models.handoff.ollama import import_model
from milady_lab.state import StateStore

from .conftest import insert_model, one_thread
from .engine import (
    GoTemplate,
    agree_but_for_a_tie,
    llama_greedy,
    llama_model,
    llama_tokens,
    nmse,
    torch_greedy,
    torch_greedy_margins,
)
from .ollama_standin import OllamaStandIn

__all__ = ["smollm2_dir"]

CONVERSATION = [
    {"role": "system", "content": "You are Milady. Answer in <response> XML."},
    {"role": "user", "content": "hello there friend how are you today"},
]
#: The base each architecture's adapter is created ``from`` in the stand-in.
OLLAMA_BASES = {"llama": "smollm2:135m", "qwen2": "qwen2.5:0.5b", "qwen3": "qwen3:0.6b"}
#: (quantization, tokens that must agree, largest first-step logits NMSE). f32 is not
#: exact: llama.cpp keeps its KV cache in f16.
CHECKS = (("f32", 32, 2e-5), ("f16", 32, 1e-3), ("q8_0", 16, 2e-2))


@pytest.fixture(scope="session")
def go(tmp_path_factory: pytest.TempPathFactory) -> GoTemplate:
    return GoTemplate(tmp_path_factory.mktemp("go"))


def _upload(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    tmp_path: Path,
    **body: Any,
) -> tuple[dict[str, Any], Path]:
    """Import, then the create body and the uploaded blob as a file, bytes as sent."""
    answer = import_model(settings, store, model, {"ollamaUrl": ollama.url, **body})
    name = answer["model"]["ollamaName"]
    create = ollama.models[name]
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(ollama.blobs[answer["import"]["digest"]])
    return create, path


def _reference(base: Path, adapter: Path) -> tuple[Any, Any, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tuned = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(tuned, adapter).eval()
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    return AutoTokenizer.from_pretrained(base), tuned, plain


def _prompt_ids(
    go: GoTemplate, create: dict[str, Any], tok: Any, llm: Any, conversation: Any = CONVERSATION
) -> list[int]:
    """The prompt as Ollama builds it; it must be the text and tokens the model trained on."""
    prompt = go.render(create["template"], conversation)
    trained = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert prompt == trained
    ids = llama_tokens(llm, prompt)
    assert ids == tok(trained, add_special_tokens=False)["input_ids"]
    assert tok.eos_token in create["parameters"]["stop"]
    return ids


@pytest.mark.slow
def test_uploaded_model_generates_like_torch_peft(
    tiny_arch: tuple[str, Path, Path],
    settings: Settings,
    store: StateStore,
    ollama: OllamaStandIn,
    go: GoTemplate,
    tmp_path: Path,
) -> None:
    arch, base, adapter = tiny_arch
    model = insert_model(store, adapter, base)
    tok, tuned, plain = _reference(base, adapter)
    with one_thread():
        for quant, n, limit in CHECKS:
            create, path = _upload(
                settings, store, model, ollama, tmp_path, quantization=quant, modelName=quant
            )
            llm = llama_model(path)
            ids = _prompt_ids(go, create, tok, llm)
            want, want_logits, margins = torch_greedy_margins(tuned, ids, n)
            got, got_logits = llama_greedy(llm, ids, n)
            assert nmse(got_logits, want_logits) < limit, quant
            if quant == "q8_0":  # 8-bit weights may break a near-tie: only there
                noise = 2 * float(np.abs(got_logits - want_logits).max())
                assert agree_but_for_a_tie(got, want, margins, noise), f"{arch} q8_0: {got} {want}"
            else:
                assert got == want, f"{arch} {quant}: llama.cpp and torch+peft disagree"

        # The adapter's effect is there, the same way in both engines.
        ids = tok(
            tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        tuned_tokens, _ = torch_greedy(tuned, ids, 32)
        plain_tokens, _ = torch_greedy(plain, ids, 32)
        assert plain_tokens != tuned_tokens
        gguf.write_model(plain, tok, base, tmp_path / "base.gguf", outtype="f32")
        base_llm = llama_model(tmp_path / "base.gguf")
        assert llama_greedy(base_llm, ids, 32)[0] == plain_tokens

        # Adapter mode: the uploaded GGUF LoRA on that base, as llama-server --lora runs it.
        create, lora = _upload(
            settings,
            store,
            model,
            ollama,
            tmp_path,
            mode="adapter",
            baseModel=OLLAMA_BASES[arch],
            modelName="lora",
        )
        assert create["from"] == OLLAMA_BASES[arch]
        got, got_logits = llama_greedy(llama_model(tmp_path / "base.gguf", lora=lora), ids, 32)
        want, want_logits = torch_greedy(tuned, ids, 32)
        assert got == want
        assert nmse(got_logits, want_logits) < 1e-5

        # `models export --format gguf` writes the same runnable file.
        out = tmp_path / "export.gguf"
        export_model(settings, store, model, {"format": "gguf", "out": str(out), "outtype": "f16"})
        assert llama_greedy(llama_model(out), ids, 32)[0] == tuned_tokens


#: No system message: Ollama's template must add SmolLM2's default system prompt itself.
SMOLLM2_CONVERSATION = [
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
]


def _smollm2_adapter(base: Path, folder: Path) -> Path:
    """A LoRA on q/k/v/o of every layer with random weights: a clear, still coherent effect
    ("…is the French capital." where the base says "…is Paris.")."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg)
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_smollm2_import_runs_in_llama_cpp(
    smollm2_dir: Path,
    settings: Settings,
    store: StateStore,
    ollama: OllamaStandIn,
    go: GoTemplate,
    tmp_path: Path,
) -> None:
    adapter = _smollm2_adapter(smollm2_dir, tmp_path / "adapter")
    model = insert_model(store, adapter, smollm2_dir, baseModel="smollm2-135m-instruct")
    tok, tuned, plain = _reference(smollm2_dir, adapter)
    first: list[int] = []
    for quant, n, limit in CHECKS[1:]:  # f16 (the default) and q8_0
        create, path = _upload(
            settings, store, model, ollama, tmp_path, quantization=quant, modelName=quant
        )
        llm = llama_model(path)
        ids = _prompt_ids(go, create, tok, llm, SMOLLM2_CONVERSATION)
        want, want_logits = torch_greedy(tuned, ids, n)
        got, got_logits = llama_greedy(llm, ids, n)
        assert got == want, f"SmolLM2 {quant}: {tok.decode(got)!r} vs {tok.decode(want)!r}"
        assert nmse(got_logits, want_logits) < limit
        first = first or want
        del llm
    assert torch_greedy(plain, ids, 32)[0] != first  # the adapter changes the reply
