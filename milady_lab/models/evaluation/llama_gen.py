"""A benchmark's greedy replies from llama.cpp, on the GGUF files the agent will run.

Why: Ollama (the agent's runtime) is llama.cpp. Generating from the exact GGUF that
``import-ollama`` sends, in its default quantization (``f16``) and with the same writer
(``export.write_fused_gguf``'s merge + ``gguf.write_model``), measures what ships. It is
asked for (``engine: "llama.cpp"``), not the default: one reply at a time, it was slower
than torch's batches on 2 shared cores (``benchmark._engine``). torch keeps the
log-likelihood scores (reply NLL, preference accuracy): only the replies come from here.

* **Files.** Every variant is written through the same writer at the same quantization:
  the fine-tuned model and the active one fused with their adapters, the base converted
  alone. The base is *not* the GGUF Ollama pulls for it (the bundled SmolLM2 is a Q4_1
  file): comparing an f16 fine-tune with a Q4_1 base would credit the adapter with the
  quantization's gain, and the activation gate reads that difference. The files are
  kept under ``$MILADY_LAB_HOME/gguf/`` (a model's adapter never changes, so its file
  is written once: the next benchmark, or an import, can reuse it).
* **Same tokens.** llama.cpp gets the token ids the tokenizer gave torch (the chat
  template's rendering, nothing added) and stops at the same stop tokens and per
  example cap; its tokens are decoded by the same tokenizer. On an ``f32`` file (with an
  f32 KV cache) the replies equal torch's.
* **Prefix reuse.** Examples run sorted by their token ids, so consecutive prompts share
  their longest prefix (the agent's system prompt) and llama-cpp-python keeps that part
  of its KV cache.
* **Never beside torch.** llama.cpp (built without OpenMP) collapses when another
  process takes its cores: a 4,700-token prompt took 259 s beside a torch training
  instead of seconds. The worker runs generation and scoring one after the other, with
  the thread count it gives torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict

from ...atomic import atomic_file
from ...errors import InputError
from ..handoff import gguf

#: The quantization import-ollama sends by default (``ollama.ImportRequest``).
DEFAULT_QUANTIZATION = "f16"
GGUF_DIR = "gguf"


class GgufSource(TypedDict):
    """One variant's GGUF: where it is kept and what it is written from."""

    path: str
    basePath: str
    adapterPath: str | None  # None: the base alone
    tokenizerGguf: str | None  # the GGUF the base came from (its tokenizer fields are exact)
    name: str


class Prompt(Protocol):
    """What generation needs of a benchmark example."""

    index: int
    prompt_ids: list[int]
    max_new: int


def available() -> bool:
    """Whether llama-cpp-python is installed."""
    return importlib.util.find_spec("llama_cpp") is not None


def writable(base_path: Path) -> bool:
    """Whether a model on this base can be written as GGUF (its architecture is mapped)."""
    try:
        config = json.loads((Path(base_path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") in gguf.ARCHITECTURES


def require(base_path: Path) -> None:
    """A 400 when llama.cpp cannot generate for a model on this base."""
    if not available():
        raise InputError("llama.cpp (llama-cpp-python) is not installed; use engine torch")
    if not writable(base_path):
        raise InputError(
            f"engine llama.cpp needs a GGUF of the model: its base ({base_path}) is not one of "
            f"the {', '.join(gguf.ARCHITECTURES)} architectures; use engine torch"
        )


def model_gguf_path(home: Path, model_id: str, quantization: str) -> Path:
    """Where a fine-tuned model's fused GGUF is kept."""
    return home / GGUF_DIR / f"{model_id}-{quantization}.gguf"


def base_gguf_path(home: Path, base_path: Path, quantization: str) -> Path:
    """Where a base model's own GGUF is kept (named after its folder and its path)."""
    digest = hashlib.sha256(str(Path(base_path).absolute()).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(base_path).name).strip("-.")[:60] or "base"
    return home / GGUF_DIR / f"base-{slug}-{digest}-{quantization}.gguf"


def ensure_gguf(source: GgufSource, quantization: str) -> bool:
    """Write ``source``'s GGUF unless it is there already; True when it was written."""
    path = Path(source["path"])
    if path.is_file():
        return False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..handoff.export import merge_adapter

    base = Path(source["basePath"])
    if source["adapterPath"] is not None:
        model, tokenizer = merge_adapter(base, Path(source["adapterPath"]))
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer_gguf = source["tokenizerGguf"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        gguf.write_model(
            model,
            tokenizer,
            base,
            tmp,
            outtype=quantization,
            name=source["name"],
            tokenizer_gguf=None if tokenizer_gguf is None else Path(tokenizer_gguf),
        )
    return True


def generate(
    path: Path,
    examples: Sequence[Prompt],
    stop_ids: set[int],
    *,
    threads: int,
    quantization: str,
    on_example: Callable[[], None] | None = None,
) -> dict[int, list[int]]:
    """Greedy tokens per example index (stop token excluded, at most ``max_new``);
    ``on_example()`` after each example."""
    if not examples:
        return {}
    llm = _load(path, examples, threads, quantization)
    out: dict[int, list[int]] = {}
    try:
        for e in sorted(examples, key=lambda e: (e.prompt_ids, e.index)):
            out[e.index] = _greedy(llm, e, stop_ids)
            if on_example is not None:
                on_example()
    finally:
        llm.close()
    return out


def _load(path: Path, examples: Sequence[Prompt], threads: int, quantization: str) -> Any:
    """llama.cpp's model and a context long enough for the longest prompt and its cap;
    an f32 file gets an f32 KV cache (llama.cpp's default f16 cache would round it)."""
    import llama_cpp

    kv = llama_cpp.GGML_TYPE_F32 if quantization == "f32" else llama_cpp.GGML_TYPE_F16
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=max(len(e.prompt_ids) + e.max_new for e in examples) + 1,
        n_threads=threads,
        n_threads_batch=threads,
        type_k=kv,
        type_v=kv,
        seed=0,
        verbose=False,
    )


def _greedy(llm: Any, example: Prompt, stop_ids: set[int]) -> list[int]:
    """Argmax decoding (temperature 0, no penalties) until a stop token or the cap;
    ``generate`` keeps the KV cache of the prefix this prompt shares with the last one."""
    tokens: list[int] = []
    if example.max_new <= 0:
        return tokens
    for token in llm.generate(example.prompt_ids, temp=0.0, repeat_penalty=1.0, reset=True):
        if token in stop_ids:
            break
        tokens.append(int(token))
        if len(tokens) >= example.max_new:
            break
    return tokens
