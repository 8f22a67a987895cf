"""What a registered model's files are: its PEFT adapter and its base model folder.

Benchmark, export, Ollama import and chat all start from these two paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConflictError, InputError

#: The files of a PEFT LoRA adapter folder.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def require_peft_adapter(model: Mapping[str, Any]) -> Path:
    """The model's PEFT adapter folder (mlx-trained models carry one too), or a 409."""
    adapter = Path(str(model.get("adapterPath") or ""))
    missing = [n for n in ADAPTER_FILES if not (adapter / n).is_file()]
    if missing:
        raise ConflictError(
            f"model {model['id']} has no PEFT adapter at {adapter} (missing {', '.join(missing)})"
        )
    return adapter


def resolve_base_path(settings: Settings, model: Mapping[str, Any]) -> Path:
    """The base model's HF folder: the recorded one, else resolved from its name."""
    recorded = model.get("baseModelPath")
    if recorded and (Path(recorded) / "config.json").is_file():
        return Path(recorded)
    from ..training.base_models import resolve_base_model

    try:
        return resolve_base_model(str(model.get("baseModel")), settings).hf_path
    except InputError as exc:
        raise ConflictError(f"cannot find the base model of {model['id']}: {exc.message}") from None
