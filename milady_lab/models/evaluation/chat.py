"""Try a fine-tuned model before activating it: streamed replies, stoppable at once.

Two engines, one interface (``ChatSession.stream``):

* **llama.cpp** (``llama-cpp-python``, installed by ``make venv``): the model is fused
  and converted to one f16 GGUF once (cached under ``<home>/chat/``), the very file
  ``import-ollama`` uploads, so what you try is what the agent will run;
* **torch** otherwise: the base with the PEFT adapter, generation in a thread with
  transformers' ``TextIteratorStreamer``.

``stop`` (a ``threading.Event``) ends generation between two tokens; the CLI sets it on
Ctrl-C and the model manager's Stop button sets it from the kernel's main thread while
generation runs in a worker thread, so the kernel stays free.

Without a system prompt of its own, a conversation speaks with the agent's persona:
``agent_persona`` picks the system prompt the agent itself sends, from its recorded calls.
Loading is quiet: transformers' progress bars, info logs and FutureWarnings are silenced
while a model loads and generates (``quiet_transformers``), and only then.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...atomic import atomic_file
from ...config import Settings
from ...errors import InputError

if TYPE_CHECKING:
    import polars as pl

ENGINES = ("auto", "llama.cpp", "torch")
Message = dict[str, str]


def agent_persona(calls: pl.LazyFrame) -> str | None:
    """The agent's own system prompt: the most common non-blank ``systemPrompt`` of its
    ``purpose == "response"`` calls, else of all its calls; None when it recorded none.
    Ties go to the alphabetically first prompt, so the choice is stable."""
    import polars as pl

    prompts = (
        calls.select("purpose", "systemPrompt")
        .filter(pl.col("systemPrompt").str.strip_chars().str.len_chars() > 0)
        .collect()
    )
    for frame in (prompts.filter(pl.col("purpose") == "response"), prompts):
        if frame.height:
            ranked = (
                frame.group_by("systemPrompt")
                .len()
                .sort(["len", "systemPrompt"], descending=[True, False])
            )
            return str(ranked.item(0, "systemPrompt"))
    return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without its noise (the ``Loading weights`` bar, info logs, deprecation
    FutureWarnings) for the ``with`` block; its verbosity and bars are put back after."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", module=r"(transformers|peft)(\.|$)")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class ChatSession:
    """One loaded model and a conversation with it."""

    def __init__(
        self,
        settings: Settings,
        model: Mapping[str, Any],
        *,
        engine: str = "auto",
        system: str | None = None,
        max_tokens: int = 256,
    ) -> None:
        if engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}")
        if not 1 <= max_tokens <= 4096:
            raise InputError("max tokens must be between 1 and 4096")
        if engine == "llama.cpp" and not llama_cpp_available():
            raise InputError("llama.cpp (llama-cpp-python) is not installed; use --engine torch")
        if engine == "auto":
            engine = "llama.cpp" if llama_cpp_available() else "torch"
        self.engine = engine
        self.max_tokens = max_tokens
        self.messages: list[Message] = [{"role": "system", "content": system}] if system else []
        self.stop = threading.Event()
        self._backend = (
            _LlamaCpp(settings, model) if self.engine == "llama.cpp" else _Torch(settings, model)
        )

    def stream(self, text: str) -> Iterator[str]:
        """Send ``text`` as the user; yield the reply piece by piece until done or stopped."""
        if not text.strip():
            raise InputError("say something: the message is empty")
        self.stop.clear()
        self.messages.append({"role": "user", "content": text})
        reply: list[str] = []
        try:
            for piece in self._backend.generate(self.messages, self.max_tokens, self.stop):
                reply.append(piece)
                yield piece
        finally:
            self.messages.append({"role": "assistant", "content": "".join(reply)})


class _LlamaCpp:
    def __init__(self, settings: Settings, model: Mapping[str, Any]) -> None:
        from llama_cpp import Llama

        from ..handoff.export import write_fused_gguf

        path = settings.home / "chat" / f"{model['id']}-f16.gguf"
        if not path.is_file():
            with atomic_file(path) as tmp, quiet_transformers():
                write_fused_gguf(settings, model, tmp, outtype="f16")
        self.llm = Llama(model_path=str(path), n_ctx=4096, verbose=False)

    def generate(self, messages: list[Message], max_tokens: int, stop: threading.Event):
        chunks = self.llm.create_chat_completion(
            messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
        )
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
        finally:
            chunks.close()


class _Torch:
    def __init__(self, settings: Settings, model: Mapping[str, Any]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..artifacts import require_peft_adapter, resolve_base_path

        base: Path = resolve_base_path(settings, model)
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(base)
            loaded = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            self.model = PeftModel.from_pretrained(loaded, require_peft_adapter(model)).eval()

    def generate(self, messages: list[Message], max_tokens: int, stop: threading.Event):
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                return stop.is_set()

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        worker = threading.Thread(
            target=self._generate_quietly,
            kwargs={
                **ids,
                "max_new_tokens": max_tokens,
                "do_sample": False,
                "streamer": streamer,
                "stopping_criteria": StoppingCriteriaList([_Stop()]),
                "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            },
            daemon=True,
        )
        worker.start()
        finished = False
        try:
            for piece in streamer:
                if stop.is_set():
                    break
                if piece:
                    yield piece
            else:
                finished = True
        finally:
            if not finished:  # stopped, or the caller left early: end generate() too
                stop.set()
            worker.join()

    def _generate_quietly(self, **kwargs: Any) -> None:
        with quiet_transformers():
            self.model.generate(**kwargs)
