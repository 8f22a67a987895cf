"""The backends that really train: ``cpu``/``cuda`` (transformers + peft, ``torch.py``)
and ``mlx`` (mlx-lm's own trainer, ``mlx.py``).

Everything here is cheap to import: torch and mlx are imported only when a backend is
probed or run, so ``GET status`` never waits seconds for them.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import InputError
from ..callbacks import TrainingCancelled

if TYPE_CHECKING:
    from ..callbacks import TrainingCallback
    from ..spec import TrainResult, TrainSpec

BACKENDS = ("mlx", "cuda", "cpu")


def _is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


@functools.cache
def _has_mlx() -> bool:
    """True when mlx and mlx-lm are installed; find_spec avoids importing them."""
    try:
        return (
            importlib.util.find_spec("mlx") is not None
            and importlib.util.find_spec("mlx.core") is not None
            and importlib.util.find_spec("mlx_lm") is not None
        )
    except (ImportError, ValueError):
        return False


def _torch_build_has_gpu() -> bool:
    """Read torch/version.py instead of importing torch (≈1.5 s): a CPU build says
    ``cuda = None`` and ``hip = None``."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    version_py = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_py.read_text(encoding="utf-8")
    except OSError:
        return True  # unknown layout: ask torch itself
    cpu_only = re.search(r"^cuda\s*(:[^=]*)?=\s*None", text, re.M) and re.search(
        r"^hip\s*(:[^=]*)?=\s*None", text, re.M
    )
    return not cpu_only


@functools.cache
def _has_cuda() -> bool:
    """torch is imported only when its build has GPU support."""
    if not _torch_build_has_gpu():
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


@functools.cache
def available_backends() -> list[str]:
    """The backends this machine can run, best first; ``cpu`` is always there."""
    out = []
    if _has_mlx():
        out.append("mlx")
    if _has_cuda():
        out.append("cuda")
    out.append("cpu")
    return out


def best_backend() -> str:
    """mlx on Apple silicon, cuda where torch sees a GPU, else cpu."""
    avail = available_backends()
    if _is_apple_silicon() and "mlx" in avail:
        return "mlx"
    if "cuda" in avail:
        return "cuda"
    return "cpu"


def check_backend(name: str) -> None:
    """Raise ``InputError`` with what to install when ``name`` can't run here."""
    if name not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name in available_backends():
        return
    if name == "mlx":
        raise InputError("backend 'mlx' needs mlx and mlx-lm: pip install 'milady-lab[mlx]'")
    raise InputError(
        "backend 'cuda' needs an NVIDIA GPU and a CUDA build of torch; "
        "none is visible here (torch.cuda.is_available() is False)"
    )


def run_training(spec: TrainSpec, callback: TrainingCallback) -> TrainResult:
    """Train ``spec`` on its backend, blocking; raises ``TrainingCancelled`` when the
    callback asks to stop and ``InputError`` for a bad model, dataset or backend."""
    check_backend(spec.backend)
    if spec.backend == "mlx":
        from .mlx import train_mlx

        return train_mlx(spec, callback)
    from .torch import train_torch

    return train_torch(spec, callback)


from .common import latest_checkpoint  # noqa: E402 - light, and part of the API

__all__ = [
    "BACKENDS",
    "TrainingCancelled",
    "available_backends",
    "best_backend",
    "check_backend",
    "latest_checkpoint",
    "run_training",
]
