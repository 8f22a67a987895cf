"""What a backend is asked to train: everything resolved, validated and on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainSpec:
    """One training run, as the worker hands it to a backend."""

    job_id: str
    backend: str  # "cpu" | "cuda" | "mlx"
    model: str  # what the user asked for (friendly name, folder, .gguf, hub id)
    dataset_dir: Path  # holds train.jsonl and valid.jsonl
    #: The backend writes the final adapter here (a temp folder; the job renames it).
    output_dir: Path
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
    #: The HF folder of the base model, when the caller resolved it (the worker does);
    #: None: the backend resolves ``model`` itself.
    base_model_path: Path | None = None
    #: CPU threads; None: the cores idle at the start (see ``common.pick_cpu_threads``).
    threads: int | None = None
    #: bf16 base weights on CPU; None: where the CPU computes bf16 natively.
    cpu_bf16: bool | None = None
    #: Token budget of one packed row (torch); None: 4096 on CUDA, 512 on CPU.
    pack_tokens: int | None = None
    #: Validation examples evaluated (the first ones of ``valid.jsonl``).
    max_val_examples: int = 64
    #: ``ddp`` | ``fsdp``: how the model is spread when torchrun runs several ranks
    #: (``distributed.py``); unused by a run alone.
    strategy: str = "ddp"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run leaves behind."""

    adapter_dir: Path
    final_loss: float | None
    final_val_loss: float | None
    trained_tokens: int
    tokens_per_second: float
    base_model_path: Path | None
