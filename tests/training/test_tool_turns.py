"""Tool calls train in the chat form the base model's template understands (issue 15), on
both backends: a template that renders tool use gets the dataset's messages as they are,
one that does not (SmolLM2's ChatML) gets the calls written as Hermes ``<tool_call>``
text; either way the assistant's tool calls and reply, with their end-of-turn token,
are the only targets, and a real job trains on such a dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from milady_lab.training.backends import run_training
from milady_lab.training.backends.chat_tools import understands
from milady_lab.training.backends.data import tokenize_row
from milady_lab.training.callbacks import RecordingCallback

from .conftest import write_dataset
from .test_backends import make_spec
from .test_controls import BACKENDS, _spans, _tokenizer, assert_backends_train_the_mask

CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
SCHEMA = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
ROW = {
    "messages": [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "name": "get_weather", "content": "21C"},
        {"role": "assistant", "content": "It is 21 degrees."},
    ],
    "tools": [SCHEMA],
}
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'

#: Real chat templates (as their models ship them) that understand tool use.
TEMPLATES = Path(__file__).parent.parent / "models" / "chat_templates"


def _with_template(tiny: Path, folder: Path, template: str) -> Path:
    """The tiny Llama (SmolLM2's vocabulary) with another model's chat template."""
    for item in tiny.iterdir():
        if item.is_file() and item.name != "chat_template.jinja":
            shutil.copy(item, folder / item.name)
    shutil.copy(TEMPLATES / template, folder / "chat_template.jinja")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def qwen_template_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen-template")
    return _with_template(tiny_llama_dir, folder, "Qwen-Qwen2.5-7B-Instruct.jinja")


@pytest.fixture(scope="module")
def llama_template_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama3-template")
    return _with_template(tiny_llama_dir, folder, "meta-llama-Llama-3.2-3B-Instruct.jinja")


def test_a_template_without_tools_gets_the_calls_as_text(tiny_llama_dir: Path) -> None:
    tok = _tokenizer(tiny_llama_dir)
    can = understands(tok)
    assert (can.calls, can.schemas) == (False, False)  # SmolLM2's ChatML drops both
    ex = tokenize_row(tok, ROW)
    text = tok.decode(ex.input_ids)
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert "<|im_start|>tool\n21C<|im_end|>" in text  # a tool turn ChatML renders as is
    assert _spans(tok, ex.input_ids, ex.mask) == [
        CALL_TEXT + "<|im_end|>",
        "It is 21 degrees.<|im_end|>",
    ]
    assert_backends_train_the_mask(ex)


def test_a_template_with_tools_gets_the_messages_as_they_are(qwen_template_dir: Path) -> None:
    tok = _tokenizer(qwen_template_dir)
    can = understands(tok)
    assert (can.calls, can.results, can.schemas) == (True, True, True)
    ex = tokenize_row(tok, ROW)
    rendered = tok.apply_chat_template(ROW["messages"], tools=ROW["tools"], tokenize=False)
    assert ex.input_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert "<tool_response>\n21C\n</tool_response>" in rendered
    assert _spans(tok, ex.input_ids, ex.mask) == [
        CALL_TEXT + "<|im_end|>",
        "It is 21 degrees.<|im_end|>",
    ]
    assert_backends_train_the_mask(ex)


def test_a_conversation_the_template_refuses_gets_its_tools_as_text(
    llama_template_dir: Path,
) -> None:
    """Llama 3's template renders one tool call per turn and raises on two: such a line
    trains with its calls as text rather than failing the job; one call stays native."""
    tok = _tokenizer(llama_template_dir)
    assert understands(tok).calls
    one = tokenize_row(tok, ROW)
    trained = "".join(_spans(tok, one.input_ids, one.mask))
    assert '"name": "get_weather"' in trained and "<tool_call>" not in trained
    assert "It is 21 degrees." in trained and "21C" not in trained
    two = {"messages": [*ROW["messages"][:2], {**ROW["messages"][2], "tool_calls": [CALL, CALL]},
                        *ROW["messages"][3:]], "tools": ROW["tools"]}  # fmt: skip
    ex = tokenize_row(tok, two)
    spans = _spans(tok, ex.input_ids, ex.mask)
    assert spans[0].startswith(CALL_TEXT + "\n" + CALL_TEXT)
    assert "It is 21 degrees." in spans[-1]
    assert_backends_train_the_mask(ex)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_trains_on_tool_calls(tiny_llama_dir: Path, tmp_path: Path, backend: str) -> None:
    """A real run over tool-use lines lowers the loss on the calls and replies."""
    rows: list[dict[str, Any]] = []
    for i, city in enumerate(["Paris", "Rome", "Oslo", "Lima"]):
        call = {**CALL, "function": {"name": "get_weather", "arguments": {"city": city}}}
        rows.append({
            "messages": [
                {"role": "user", "content": f"Weather in {city}?"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "name": "get_weather", "content": f"{20 + i}C"},
                {"role": "assistant", "content": f"It is {20 + i} degrees in {city}."},
            ],
            "tools": [SCHEMA],
        })  # fmt: skip
    data = write_dataset(tmp_path / "ds", rows, rows[:2])
    cb = RecordingCallback()
    spec = make_spec(tiny_llama_dir, data, tmp_path, backend, iterations=12)
    run_training(spec, cb)
    losses = [m["loss"] for m in cb.metrics]
    print(backend, [round(x, 2) for x in losses])
    assert sum(losses[-4:]) / 4 < 0.75 * losses[0], losses
