"""Helpers every backend shares: model path, checkpoints, memory.

Kept free of torch and mlx imports so the mlx backend doesn't pay for torch.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Required, TypedDict

from ...atomic import atomic_dir
from ...errors import InputError
from ..spec import TrainSpec

META_FILE = "checkpoint.json"


class CheckpointMeta(TypedDict, total=False):
    """A checkpoint's ``META_FILE``: which backend wrote it, at which iteration (and, from
    mlx, the tokens and seconds trained so far)."""

    kind: Required[str]
    iteration: Required[int]
    jobId: str
    trainedTokens: int
    trainTime: float


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint folder with the highest iteration, or None (for ``resumeFrom``)."""
    best: tuple[int, Path] | None = None
    if not Path(checkpoint_dir).is_dir():
        return None
    for child in Path(checkpoint_dir).iterdir():
        ok = child.name.isdigit() and (child / META_FILE).is_file()
        if ok and (best is None or int(child.name) > best[0]):
            best = (int(child.name), child)
    return best[1] if best else None


def adapted_layers(spec: TrainSpec, model_layers: int) -> int:
    """How many of the model's last layers get LoRA adapters (all when unbounded)."""
    if spec.lora_layers is None:
        return model_layers
    return min(spec.lora_layers, model_layers)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def resolve_model_path(spec: TrainSpec) -> Path:
    """The HF folder to train on: the worker passes it resolved (``base_model_path``)."""
    if spec.base_model_path is not None:
        return Path(spec.base_model_path)
    from ...config import Settings
    from ..base_models import resolve_base_model

    return resolve_base_model(spec.model, Settings.from_env()).hf_path


def read_checkpoint_meta(path: Path, kind: str) -> CheckpointMeta:
    """The checkpoint's ``checkpoint.json``; an input error if it is missing or foreign."""
    meta_path = Path(path) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{path} is not a training checkpoint (no readable {META_FILE})") from None
    if meta.get("kind") != kind:
        raise InputError(
            f"checkpoint {path} was written by the {meta.get('kind')} backend; "
            f"it can only be resumed with that backend"
        )
    return meta


def write_atomically(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``final`` as a folder: ``fill(tmp)`` writes into a sibling temp folder that
    is then renamed (``atomic.atomic_dir``), so a crash never leaves a half-written
    checkpoint behind; an older folder of that name is replaced."""
    with atomic_dir(final, replace=True) as tmp:
        fill(tmp)
    return final


def idle_cores(sample_s: float = 0.3) -> float:
    """Cores idle right now: from two /proc/stat samples on Linux, else the load average."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1

    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                fields = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields)

    first = read()
    if first is not None:
        time.sleep(sample_s)
        second = read()
        if second is not None and second[1] > first[1]:
            frac = (second[0] - first[0]) / (second[1] - first[1])
            return max(0.0, min(1.0, frac)) * (os.cpu_count() or cores)
    try:
        return max(0.0, cores - os.getloadavg()[0])
    except OSError:
        return float(cores)


def pick_cpu_threads(threads: int | None, default: int) -> int | None:
    """Threads for a CPU run: ``threads`` when set, else None when OMP_NUM_THREADS is
    set, else the cores idle now (at least 1, at most ``default``).

    Why: with more threads than free cores, every op's OpenMP barrier waits for a
    descheduled thread; on a busy 2-core machine one thread trained SmolLM2 ~9× faster
    than two.
    """
    if threads:
        return max(1, int(threads))
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, min(default, round(idle_cores())))
