"""Export a fine-tuned model as a standalone model: a Hugging Face folder or a GGUF file.

The adapter is fused into its base (peft ``merge_and_unload``), so the result needs no
peft and no base model: load the folder with transformers, or give the GGUF to
llama.cpp or Ollama. The GGUF conversion itself lives in ``gguf.py`` (llama, qwen2,
qwen3). Output is written to a temporary path beside the target and renamed into
place; an existing target is never overwritten.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from ... import validation as v
from ...atomic import atomic_dir, atomic_file
from ...config import Settings
from ...errors import ConflictError, InputError
from ...state import StateStore, now_ms
from ..artifacts import require_peft_adapter, resolve_base_path
from . import gguf

FORMATS = ("hf", "gguf")
GGUF_TYPES = gguf.OUTTYPES
#: Called with (what is happening, fraction of that phase done).
PhaseProgress = Callable[[str, float], None]


class Exported(TypedDict):
    """What an export wrote (also its ``model_exported`` event's fields)."""

    modelId: str
    format: str
    path: str
    bytes: int
    completedAt: int
    outtype: NotRequired[str]


class ExportAnswer(TypedDict):
    export: Exported


def export_model(
    settings: Settings, store: StateStore, model: Mapping[str, Any], body: Any = None
) -> ExportAnswer:
    """Fuse the adapter into the base and write it where ``out`` says (or under exports/)."""
    fields = v.body_object(body, ("format", "out", "outtype"))
    fmt = v.choice(fields.get("format"), "format", FORMATS, default="hf")
    outtype = v.choice(fields.get("outtype"), "outtype", GGUF_TYPES, default="f16")
    out_text = v.text(fields.get("out"), "out", max_length=4096)
    if out_text is not None:
        out = Path(out_text).expanduser().absolute()
    elif fmt == "hf":
        out = settings.home / "exports" / f"{model['id']}-hf"
    else:
        out = settings.home / "exports" / f"{model['id']}-{outtype}.gguf"
    if out.exists() or out.is_symlink():
        raise ConflictError(f"{out} already exists; remove it or pass another output path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConflictError(f"cannot create {out.parent}: {exc.strerror or exc}") from None

    if fmt == "hf":
        merged, tokenizer = merge_adapter(
            resolve_base_path(settings, model), require_peft_adapter(model)
        )
        with atomic_dir(out) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    else:
        with atomic_file(out) as tmp:
            write_fused_gguf(settings, model, tmp, outtype=outtype)
        size = out.stat().st_size
    body_out: Exported = {
        "modelId": model["id"],
        "format": fmt,
        "path": str(out),
        "bytes": size,
        "completedAt": now_ms(),
    }
    if fmt == "gguf":
        body_out["outtype"] = outtype
    store.emit("model_exported", f"model {model['id']} exported as {fmt} to {out}", **body_out)
    return {"export": body_out}


def write_fused_gguf(
    settings: Settings,
    model: Mapping[str, Any],
    path: Path,
    *,
    outtype: str = "f16",
    progress: PhaseProgress | None = None,
) -> Any:
    """Fuse the model's adapter into its base and write one GGUF at ``path``.

    Returns the tokenizer (the caller derives the chat template from it). The
    architecture is checked before the (slow) merge, so an unsupported one is a 400 at once.
    """
    from transformers import AutoConfig

    adapter = require_peft_adapter(model)
    base_path = resolve_base_path(settings, model)
    gguf.gguf_architecture(AutoConfig.from_pretrained(base_path))
    if progress is not None:
        progress("merging", 0.0)
    merged, tokenizer = merge_adapter(base_path, adapter)
    gguf.write_model(
        merged,
        tokenizer,
        base_path,
        path,
        outtype=outtype,
        name=str(model.get("name") or model["id"]),
        tokenizer_gguf=source_gguf(model),
        progress=None if progress is None else lambda d, t: progress("converting", d / t),
    )
    return tokenizer


def merge_adapter(base_path: Path, adapter: Path) -> tuple[Any, Any]:
    """The base with the LoRA weights added in (fp32), and its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.eval()
    return merged, AutoTokenizer.from_pretrained(base_path)


def source_gguf(model: Mapping[str, Any]) -> Path | None:
    """The GGUF the base model was converted from, when it was (its tokenizer is exact)."""
    from ...training.base_models import DEFAULT_MODEL, builtin_gguf_path

    base = str(model.get("baseModel") or "")
    if base.strip().lower() == DEFAULT_MODEL:
        with contextlib.suppress(InputError):
            return builtin_gguf_path()
        return None
    path = Path(base).expanduser()
    return path if path.suffix.lower() == ".gguf" and path.is_file() else None
