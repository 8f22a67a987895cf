"""The real engine in the tests: llama.cpp (llama-cpp-python, built from its pinned source
distribution by ``make venv``) and Go's text/template, which Ollama renders prompts with.

``llama_greedy`` and ``torch_greedy`` run the same greedy loop (argmax, no stop token)
so their tokens and first-step logits can be compared one for one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RENDER_GO = Path(__file__).parent / "gotemplate" / "render.go"


def nmse(got: Any, ref: Any) -> float:
    """Normalised mean squared error of two logit vectors."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(((got - ref) ** 2).sum() / (ref**2).sum())


def llama_cpp() -> Any:
    try:
        import llama_cpp as module
    except ImportError:
        pytest.fail(
            "llama-cpp-python is not installed: `make venv` builds it from its pinned "
            "source distribution",
            pytrace=False,
        )
    return module


def llama_model(path: Path, *, lora: Path | None = None, n_ctx: int = 512) -> Any:
    """llama.cpp's model + context for ``path``, optionally with a GGUF LoRA applied."""
    kw = {"lora_path": str(lora)} if lora is not None else {}
    return llama_cpp().Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        logits_all=True,
        n_threads=2,
        seed=0,
        verbose=False,
        **kw,
    )


def llama_tokens(llm: Any, prompt: str) -> list[int]:
    """How Ollama's runner tokenizes a rendered prompt: BOS as the GGUF says, specials parsed."""
    return list(llm.tokenize(prompt.encode(), add_bos=True, special=True))


def llama_greedy(llm: Any, ids: Sequence[int], n: int) -> tuple[list[int], Any]:
    llm.reset()
    llm.eval(list(ids))
    first = np.array(llm.scores[llm.n_tokens - 1])
    out: list[int] = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out, first


def torch_greedy(model: Any, ids: Sequence[int], n: int) -> tuple[list[int], Any]:
    out, first, _ = torch_greedy_margins(model, ids, n)
    return out, first


def torch_greedy_margins(
    model: Any, ids: Sequence[int], n: int
) -> tuple[list[int], Any, list[float]]:
    """Greedy tokens, the first step's logits, and at each step the gap between the best
    and the second-best logit (how close the choice was)."""
    import torch

    out: list[int] = []
    margins: list[float] = []
    first = None
    past = None
    x = torch.tensor([list(ids)])
    with torch.inference_mode():
        for _ in range(n):
            step = model(input_ids=x, past_key_values=past, use_cache=True)
            logits = step.logits[0, -1].float()
            past = step.past_key_values
            if first is None:
                first = logits.numpy().copy()
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            token = int(logits.argmax())
            out.append(token)
            x = torch.tensor([[token]])
    return out, first, margins


def agree_but_for_a_tie(
    got: list[int], want: list[int], margins: list[float], noise: float
) -> bool:
    """``got`` equals ``want``, or first differs where the reference's two best logits were
    closer than ``noise`` (a quantized model may break a near-tie the other way; after
    that the continuations differ by construction)."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            return margins[i] < noise
    return True


class GoTemplate:
    """Renders Ollama templates with Go's text/template (a small program built once)."""

    def __init__(self, workdir: Path) -> None:
        go = shutil.which("go")
        if go is None:
            pytest.fail(
                "Go is not installed: `make sysdeps` installs Debian's golang-go, which the "
                "template tests use to render prompts exactly as Ollama does",
                pytrace=False,
            )
        self.binary = workdir / "render"
        subprocess.run(
            [go, "build", "-o", str(self.binary), str(RENDER_GO)],
            check=True,
            capture_output=True,
        )

    def render(self, template: str, messages: Sequence[dict[str, str]]) -> str:
        done = subprocess.run(
            [str(self.binary)],
            input=json.dumps({"template": template, "messages": list(messages)}).encode(),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"Go could not render the template: {done.stderr.decode()}")
        return done.stdout.decode()
