"""What a backend is asked to train: everything resolved, validated and on disk."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainSpec:
    """One training run, as the worker hands it to a backend."""

    job_id: str
    backend: str  # "cpu" | "cuda" | "mlx"
    model: str  # what the user asked for (friendly name, folder, .gguf, hub id)
    dataset_dir: Path  # holds train.jsonl and valid.jsonl
    output_dir: (
        Path  # the backend writes the final adapter here (a temp folder; the job renames it)
    )
    checkpoint_dir: Path  # checkpoints, one sub-folder per saved iteration
    iterations: int = 100
    batch_size: int = 4
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_seq_length: int = 2048
    eval_every: int = 25  # iterations between validation losses (and always at the end)
    checkpoint_every: int = 25
    seed: int = 0
    resume_from: Path | None = None  # a checkpoint folder written by an earlier run
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainSpec:
        d = dict(d)
        for k in ("dataset_dir", "output_dir", "checkpoint_dir"):
            d[k] = Path(d[k])
        if d.get("resume_from"):
            d["resume_from"] = Path(d["resume_from"])
        d["target_modules"] = tuple(d.get("target_modules", ()))
        return cls(**d)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run leaves behind."""

    adapter_dir: Path
    final_loss: float | None
    final_val_loss: float | None
    trained_tokens: int
    tokens_per_second: float
    base_model_path: Path | None
