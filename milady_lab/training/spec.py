"""What a backend is asked to train: everything resolved, validated and on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: ``TrainSpec.prompt_gradient_tokens`` of a job that gives none (training guide).
DEFAULT_PROMPT_GRADIENT_TOKENS: int | None = 128


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
    #: Adapters on the model's last N transformer layers only (mlx-lm's ``num_layers``);
    #: None, or N at or above the model's layer count: every layer. The backward pass
    #: stops at the lowest adapted layer, so fewer layers train faster.
    lora_layers: int | None = None
    max_seq_length: int = 2048
    eval_every: int = 25  # iterations between validation losses (and always at the end)
    checkpoint_every: int = 25
    seed: int = 0
    #: Micro-batches of ``batch_size`` per optimizer step (one iteration).
    gradient_accumulation: int = 1
    #: None: ``schedule.default_warmup(iterations)``.
    warmup_steps: int | None = None
    lr_schedule: str = "cosine"  # constant | cosine | linear (``schedule.py``)
    #: Evaluations without a lower validation loss before stopping; None: never.
    early_stopping_patience: int | None = None
    #: Write the lowest-valLoss adapter to ``output_dir`` (else the last one).
    save_best: bool = True
    #: Where the last adapter goes when ``output_dir`` holds the best one; None: nowhere.
    last_dir: Path | None = None
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
    #: Carry a prompt prefix shared by examples of a batch once per packed row (torch;
    #: mlx on llama, qwen2, qwen3; SFT; ``data.Packing``): the same losses and gradients,
    #: fewer tokens to compute.
    share_prefix: bool = True
    #: Under bf16 autocast, LoRA layers take their input as it comes instead of peft's
    #: upcast to fp32 (which autocast casts straight back): the same values, two copies
    #: of every adapted projection's input fewer (torch). False: peft's casts.
    lean_lora_casts: bool = True
    #: The gradient flows back through the reply and the last N tokens of its prompt;
    #: the prompt's older tokens run first without gradient, as a cache the rest reads
    #: (SFT; ``packed.Packed.detached``, mlx ``_PromptCache``): the same losses, a
    #: backward pass over N + the reply's tokens. What it leaves out is how the adapter
    #: would change the older tokens' own hidden states. Takes the place of
    #: ``share_prefix``. None: through the whole example.
    prompt_gradient_tokens: int | None = DEFAULT_PROMPT_GRADIENT_TOKENS
    #: Validation examples evaluated (the first ones of ``valid.jsonl``).
    max_val_examples: int = 64
    #: ``ddp`` | ``fsdp``: how the model is spread when torchrun runs several ranks
    #: (``distributed.py``); unused by a run alone.
    strategy: str = "ddp"
    #: ``sft`` | ``dpo`` | ``kto`` (``preference.py``); β and KTO's example weights.
    objective: str = "sft"
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    @property
    def warmup(self) -> int:
        """Warmup steps of the learning-rate schedule."""
        from .schedule import default_warmup

        return default_warmup(self.iterations) if self.warmup_steps is None else self.warmup_steps

    @property
    def step_examples(self) -> int:
        """Examples per optimizer step: ``batch_size × gradient_accumulation``."""
        return self.batch_size * self.gradient_accumulation


@dataclass(frozen=True)
class TrainResult:
    """What a finished run leaves behind."""

    adapter_dir: Path
    final_loss: float | None
    final_val_loss: float | None
    trained_tokens: int
    tokens_per_second: float
    base_model_path: Path | None
    best_iteration: int | None = None
    best_val_loss: float | None = None
    #: Iterations run (fewer than asked when the run stopped early).
    iterations_done: int | None = None
    stopped_early: bool = False
    stop_reason: str | None = None
    #: The last adapter, when it is not ``adapter_dir`` (which holds the best).
    last_adapter_dir: Path | None = None
