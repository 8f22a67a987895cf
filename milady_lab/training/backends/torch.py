"""The ``cpu`` and ``cuda`` backends: transformers + peft LoRA in a hand-written loop.

Why not ``transformers.Trainer``: on a small model much of its time goes into the
``lm_head`` over every position (a ``tokens × vocab`` logits tensor, 49k wide for
SmolLM2) and into padding. Here:

- a batch is split into padding-free rows of at most ``pack_tokens`` tokens (512 on
  CPU, 4096 on CUDA); examples sharing a row get ``position_ids`` that restart. On
  CUDA the row runs one sdpa call under a block-diagonal causal mask; on CPU, whose
  sdpa kernel would compute every masked block, each example's attention runs on its
  own (``attention.py``);
- each example's prompt but its last ``prompt_gradient_tokens`` runs first without
  gradient, into a cache the rest reads (``packed.Packed.detached``): the same losses,
  and a backward pass over those tokens and the reply only, where agent prompts are
  ~2,000 tokens and their replies ~60;
- with gradients through the whole example (``prompt_gradient_tokens=None``), examples of a
  batch that share a prompt prefix of ``MIN_SHARED_PREFIX`` tokens or more (the system
  prompt, the character, the template's instructions) carry it once per row, each
  continuation seeing the prefix and itself only (``packed.py``,
  ``data.shared_blocks``): the same losses and gradients on fewer tokens
  (``TrainSpec.share_prefix``);
- the decoder runs once per row and ``lm_head`` + cross-entropy run only on the hidden
  states that predict assistant tokens;
- frozen base weights are bf16 with autocast on GPUs and CPUs with native bf16 (LoRA
  weights stay fp32, their inputs not upcast only to be cast back); CPU threads
  follow the idle cores (see ``pick_cpu_threads``).

``benchmarks/bench_training.py`` measures the gain against a plain ``Trainer``;
``benchmarks/bench_agent_training.py`` measures agent-shaped data at 2048 tokens.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from ...errors import InputError
from ..callbacks import MetricPoint, PreferenceFigures, TrainingCallback, TrainingCancelled
from ..controls import ATTENTION_MODULES
from ..early_stop import BestTracker
from ..schedule import lr_factor
from ..spec import TrainResult, TrainSpec
from .common import (
    META_FILE,
    adapted_layers,
    pick_cpu_threads,
    read_checkpoint_meta,
    resolve_model_path,
    write_atomically,
)
from .data import (
    MIN_SHARED_PREFIX,
    Block,
    Example,
    Packing,
    batch_indices,
    preference_items,
    prompt_length,
    train_and_val_examples,
)
from .packed import Packed, row_loss_sum
from .parallel import Group, StateDict
from .step_state import RngState, StopRequested, rate, record_step, restore_rng, rng_state

CHECKPOINT_KIND = "torch"
STATE_FILE = "trainer_state.pt"


class CheckpointState(TypedDict):
    """What ``STATE_FILE`` keeps beside the adapter weights: enough to resume exactly."""

    optimizer: StateDict
    scheduler: StateDict
    rng: RngState
    trained_tokens: int
    train_time: float


# -- the loop ------------------------------------------------------------------------------
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX), where bf16 base
    weights + autocast measured 1.5-1.9× faster than fp32 for LoRA on SmolLM2."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def _use_cpu_bf16(spec: TrainSpec) -> bool:
    """``spec.cpu_bf16`` (True/False) overrides; by default bf16 where native."""
    return cpu_has_native_bf16() if spec.cpu_bf16 is None else bool(spec.cpu_bf16)


def train_torch(spec: TrainSpec, callback: TrainingCallback) -> TrainResult:
    """Run one LoRA fine-tune on ``cpu`` or ``cuda``; see the module docstring."""
    threads = torch.get_num_threads()
    try:
        return _train(spec, callback)
    finally:  # in-process callers (tests, notebooks) get their thread count back
        torch.set_num_threads(threads)


def _train(spec: TrainSpec, callback: TrainingCallback) -> TrainResult:
    """Set up (model, data, LoRA, optimizer, resume point), then run the loop."""
    return _Run(spec, callback).train()


@dataclass
class _Progress:
    """What the loop has done so far (restored from a checkpoint on resume)."""

    start: int = 0
    trained_tokens: int = 0
    train_time: float = 0.0
    last_loss: float | None = None
    last_val: float | None = None
    saved_at: int = 0
    #: The first step of this process (kernels chosen, memory allocated): in the
    #: totals, left out of ``tokensPerSecond`` once a later step exists.
    warmup_tokens: int = 0
    warmup_time: float = 0.0


class _Run:
    """One training run: ``__init__`` sets everything up, ``train`` is the loop (the
    split of mlx-lm's ``lora.py`` from ``trainer.train``)."""

    def __init__(self, spec: TrainSpec, callback: TrainingCallback) -> None:
        if spec.backend == "cuda" and not torch.cuda.is_available():
            raise InputError("backend 'cuda' asked for, but torch sees no GPU here")
        self.spec = spec
        self.callback = callback
        self.group = Group.current(spec.backend, spec.strategy)  # alone, or one of the ranks
        self.device = self.group.device
        self.on_cuda = self.device.type == "cuda"
        bf16 = (self.on_cuda and torch.cuda.is_bf16_supported()) or (
            not self.on_cuda and _use_cpu_bf16(spec)
        )
        _seed_everything(spec.seed)
        if not self.on_cuda:
            threads = pick_cpu_threads(spec.threads, torch.get_num_threads())
            if threads is not None:
                torch.set_num_threads(threads)
            callback.on_log(f"{torch.get_num_threads()} CPU threads, {'bf16' if bf16 else 'fp32'}")
        self.model_path = resolve_model_path(spec)
        base, tokenizer = self._load_base(bf16)
        if spec.objective != "sft":  # DPO/KTO items (``preference_torch``)
            self.train_set, self.val_set = preference_items(spec, tokenizer, callback)
            self.group.check_same_data([ex for it in self.train_set for ex in it.examples])
        else:
            self.train_set, self.val_set = train_and_val_examples(spec, tokenizer, callback)
            self.group.check_same_data(self.train_set)
        self.model = _with_lora(base, spec)
        if bf16 and spec.lean_lora_casts:
            _without_input_casts(self.model)
        causal_lm = self.model.get_base_model()
        self.decoder = causal_lm.base_model
        self.lm_head = causal_lm.get_output_embeddings()
        if spec.resume_from is not None:  # before DDP copies them, or FSDP splits them
            self._load_weights()
        self.decoder = self.group.place(self.model, self.decoder)  # on the device, wrapped
        self.evaluate = self.group.evaluator(evaluate)
        #: Extra validation metrics of the last evaluation (``valRewardMargin``).
        self.val_extra: PreferenceFigures = {}
        if spec.objective != "sft":
            from .preference_torch import evaluator

            self.evaluate = evaluator(self)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=spec.learning_rate, weight_decay=0.0)
        total, warm, kind = spec.iterations, spec.warmup, spec.lr_schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warm, kind)
        )
        self.best = BestTracker(spec.early_stopping_patience)
        self.progress = self._resume() if spec.resume_from is not None else _Progress()
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if bf16
            else nullcontext
        )
        # Rows of at most ``budget`` tokens: on CPU sdpa has no varlen kernel, so a long
        # packed row pays for attention across examples; short examples still share a row.
        self.budget = spec.pack_tokens or (4096 if self.on_cuda else 512)
        sft = spec.objective == "sft"
        #: Prompt tokens before each reply trained through (the older ones run without
        #: gradient); None: the whole example.
        self.keep = spec.prompt_gradient_tokens if sft else None
        # Through the whole example, shared prompt prefixes are carried once per row (issue
        # 26): a row holding one may reach the longest an example may be, as a long
        # example alone already does.
        share = MIN_SHARED_PREFIX if spec.share_prefix and sft and self.keep is None else 0
        self.packing = Packing(self.budget, share, spec.max_seq_length)
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    # -- setup ----------------------------------------------------------------------------
    def _load_base(self, bf16: bool) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = self.spec
        self.callback.on_log(f"loading base model {spec.model} from {self.model_path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
            # Frozen base weights in bf16 (half the memory, no per-step casts); the LoRA
            # weights stay fp32 (peft upcasts adapters) and autocast mixes the two.
            weights_dtype = torch.bfloat16 if bf16 else torch.float32
            base = AutoModelForCausalLM.from_pretrained(
                str(self.model_path), dtype=weights_dtype, attn_implementation=self._attention()
            )
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load base model {spec.model!r}: {exc}") from exc
        if tokenizer.chat_template is None:
            raise InputError(f"base model {spec.model!r} has no chat template to format examples")
        return base, tokenizer

    def _attention(self) -> str:
        """Per-example and shared-prefix attention (``attention.py``): split at the
        examples on CPU, one masked sdpa call per row on CUDA."""
        from .attention import register

        return register()

    def _resume(self) -> _Progress:
        """Adapter weights, optimizer, schedule, random state and counters of the checkpoint."""
        spec = self.spec
        assert spec.resume_from is not None
        meta = read_checkpoint_meta(spec.resume_from, CHECKPOINT_KIND)
        start = int(meta["iteration"])
        state: CheckpointState = torch.load(
            spec.resume_from / STATE_FILE, map_location=self.device, weights_only=False
        )
        self.group.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        self.callback.on_log(f"resuming from iteration {start} ({spec.resume_from})")
        if start >= spec.iterations:
            raise InputError(
                f"checkpoint is at iteration {start}, nothing left of {spec.iterations}"
            )
        return _Progress(
            start=start,
            trained_tokens=int(state["trained_tokens"]),
            train_time=float(state["train_time"]),
            saved_at=start,
        )

    def _load_weights(self) -> None:
        """The checkpoint's adapter weights into the model."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = self.spec.resume_from
        assert folder is not None
        read_checkpoint_meta(folder, CHECKPOINT_KIND)  # a clear error for a foreign folder
        weights = load_file(str(folder / "adapter_model.safetensors"), device=str(self.device))
        set_peft_model_state_dict(self.model, weights)

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> TrainResult:
        spec, callback, done = self.spec, self.callback, self.progress
        total = spec.iterations
        callback.on_train_start(total, done.start)
        callback.on_log(f"training {total - done.start} iterations on {spec.backend}")
        # A step of a real model is seconds on a CPU, and most of it is one C++ call
        # (backward): hooks on every decoder layer poll the stop flag in both directions.
        install_stop_points(getattr(self.decoder, "module", self.decoder), callback.should_stop)
        self.model.train()
        iteration = done.start
        for it in range(done.start, total):
            if callback.should_stop():
                raise self._stop(it)
            metric = self._step(it)
            iteration = it + 1
            if self.val_set and (iteration % max(1, spec.eval_every) == 0 or iteration == total):
                callback.on_stage("evaluating")
                val = self.evaluate(
                    self.decoder, self.lm_head, self.val_set, spec.batch_size, self.packing,
                    self.device, self.autocast, should_stop=callback.should_stop,
                )  # fmt: skip
                self.model.train()
                if val is not None:  # None: cancelled mid-way; the next check ends the run
                    done.last_val = metric["valLoss"] = val
                    metric.update(self.val_extra)
                    self._evaluated(iteration, val)
                if iteration < total:
                    callback.on_stage("training")
            callback.on_metric(metric)
            if not math.isfinite(metric["loss"]):
                raise RuntimeError(f"loss became {metric['loss']} at iteration {iteration}")
            if spec.checkpoint_every > 0 and iteration % spec.checkpoint_every == 0:
                self._checkpoint(iteration)
            if self.best.should_stop:
                callback.on_log(f"stopping early at iteration {iteration}: {self.best.reason()}")
                break
        if callback.should_stop():  # a cancelled job registers no model: don't write one
            raise self._stop(iteration)
        callback.on_stage("saving")
        last = self._save_last()
        return TrainResult(
            adapter_dir=spec.output_dir,
            final_loss=done.last_loss,
            final_val_loss=done.last_val,
            trained_tokens=done.trained_tokens,
            tokens_per_second=rate(done),
            base_model_path=self.model_path,
            best_iteration=self.best.best_iteration,
            best_val_loss=self.best.best_val_loss,
            iterations_done=iteration,
            stopped_early=self.best.should_stop,
            stop_reason=self.best.reason() if self.best.should_stop else None,
            last_adapter_dir=last,
        )

    def _evaluated(self, iteration: int, val: float) -> None:
        """Track the best validation loss; save the adapter when it is the best so far."""
        if not self.best.update(iteration, val):
            return
        if self.spec.save_best:
            self._save_to(self.spec.output_dir)
        self.callback.on_summary({"bestIteration": iteration, "bestValLoss": val})

    def _save_to(self, dest: Path) -> None:
        """The adapter as it is now, at ``dest`` (atomically); every rank calls it (FSDP
        gathers the weights), the reporter writes."""
        weights = self.group.adapter_weights(self.model)
        if self.group.reporter:
            extra = {"state_dict": weights} if weights else {}
            write_atomically(dest, lambda tmp: self.model.save_pretrained(str(tmp), **extra))

    def _save_last(self) -> Path | None:
        """Write the last adapter: into ``output_dir`` unless that holds the best one, then
        into ``last_dir`` (the job folder); returns where it went besides ``output_dir``."""
        spec = self.spec
        keeps_best = spec.save_best and self.best.best_iteration is not None
        dest = spec.last_dir if keeps_best else spec.output_dir
        if dest is None:
            return None
        self._save_to(dest)
        self.callback.on_log(
            f"best adapter (iteration {self.best.best_iteration}) in {spec.output_dir}, "
            f"last in {dest}"
            if keeps_best
            else f"adapter written to {dest}"
        )
        return dest if keeps_best else None

    def _step(self, it: int) -> MetricPoint:
        """One optimizer step (iteration ``it``, 0-based); its metric."""
        if self.spec.objective != "sft":
            from .preference_torch import preference_step

            return preference_step(self, it)
        spec, done = self.spec, self.progress
        # A cancel between micro-batches drops the half-done step; its checkpoint then
        # carries the random state from before it, so a resume redoes the step exactly.
        rng_before = rng_state() if spec.checkpoint_every > 0 else None
        tic = time.perf_counter()
        group = self.group  # this rank's share of the global batch (all of it alone)
        indices = batch_indices(
            len(self.train_set), spec.step_examples * group.world, it, spec.seed
        )
        batch = [self.train_set[i] for i in group.shard(indices)]
        # ``gradient_accumulation`` micro-batches of ``batch_size``; the loss is the mean
        # over every assistant token of the step, so the update equals the larger batch's.
        micro = [batch[i : i + spec.batch_size] for i in range(0, len(batch), spec.batch_size)]
        # Every rank knows the global batch: a step detaches its prompts on all of them or
        # none, so each row runs as many forwards everywhere (FSDP pairs them up).
        detach = self.keep is not None and all(
            prompt_length(self.train_set[i]) > self.keep for i in indices
        )
        rows = [self._row(r, detach) for m in micro for r in self.packing.rows(m)]
        n_labels, n_rows = group.agree(sum(r.n_labels for r in rows), len(rows))
        lr = self.scheduler.get_last_lr()[0]
        loss_sum = 0.0
        try:
            for i, (row, weight) in enumerate(group.rows(rows, n_rows)):
                with group.sync(self.decoder, last=i == n_rows - 1):
                    part = row_loss_sum(self.decoder, self.lm_head, row, self.autocast)
                    (part * (weight * group.world / n_labels)).backward()
                loss_sum += weight * float(part.detach())
        except StopRequested:
            self.optimizer.zero_grad(set_to_none=True)
            raise self._stop(it, rng_before) from None
        self.apply_step()
        loss_sum, tokens = group.total(loss_sum, sum(r.n_tokens for r in rows))
        step_time, step_tokens = time.perf_counter() - tic, int(tokens)
        metric = record_step(done, it, step_tokens, step_time, loss_sum / n_labels, lr, self.device)
        if it == done.start:
            computed = sum(r.n_processed for r in rows)
            shared = (
                f", {computed} computed on this rank (shared prompt prefixes carried once)"
                if computed < sum(r.n_tokens for r in rows)
                else ""
            )
            if detach:
                prompts = sum(r.prompt.n_processed for r in rows if r.prompt is not None)
                shared = f", {prompts} of them in prompts run without gradient"
            self.callback.on_log(
                f"warm-up step: {step_tokens} tokens in {step_time:.2f} s "
                f"(left out of tokensPerSecond from the next step on){shared}"
            )
        return metric

    def _row(self, blocks: list[Block], detach: bool) -> Packed:
        """One packed row of the step, its prompts detached when the step does (when
        every example of the step has a prompt longer than the tokens kept)."""
        if detach and self.keep is not None:  # no shared prefixes then: only examples
            examples = [b for b in blocks if isinstance(b, Example)]
            return Packed.detached(examples, self.device, self.keep)
        return Packed(blocks, self.device)

    def _checkpoint(self, iteration: int, rng: RngState | None = None) -> None:
        state: CheckpointState = {
            "optimizer": self.group.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng or rng_state(),
            "trained_tokens": self.progress.trained_tokens,
            "train_time": self.progress.train_time,
        }
        weights = self.group.adapter_weights(self.model)  # gathered under FSDP
        self.progress.saved_at = iteration
        if not self.group.reporter:
            return
        path = _save_checkpoint(self.model, self.spec, iteration, state, weights)
        self.callback.on_log(f"checkpoint at iteration {iteration}")
        self.callback.on_checkpoint(iteration, path)

    def apply_step(self) -> None:
        """The update of one step, its gradients already summed: clip, step the optimizer
        and the schedule, clear the gradients (SFT here, DPO/KTO in ``preference_torch``)."""
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.on_cuda:
            torch.cuda.synchronize(self.device)

    def _stop(self, done: int, rng: RngState | None = None) -> TrainingCancelled:
        """Cancelled with ``done`` iterations complete: keep the work since the last
        checkpoint (a LoRA checkpoint takes well under a second), then end the run."""
        due = self.spec.checkpoint_every > 0 and done > self.progress.saved_at
        if due and self.group.saves_alone:
            self._checkpoint(done, rng)
        return TrainingCancelled(done)


def _with_lora(base: Any, spec: TrainSpec) -> Any:
    """The base model wrapped with fresh LoRA adapters on the targets it has."""
    from peft import LoraConfig, get_peft_model

    layers = int(base.config.num_hidden_layers)
    adapted = adapted_layers(spec, layers)
    targets = _existing_targets(base, spec.target_modules)
    if targets == "all-linear" and adapted < layers:  # peft takes the preset on all layers
        targets = sorted({n.rsplit(".", 1)[-1] for n, m in base.named_modules() if _in_layer(n, m)})
    lora = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        target_modules=targets,
        # The last ``adapted`` layers: nothing below them needs a gradient, so the
        # backward pass ends there.
        layers_to_transform=None if adapted == layers else list(range(layers - adapted, layers)),
        task_type="CAUSAL_LM",
        bias="none",
    )
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(base, lora)


def _in_layer(name: str, module: Any) -> bool:
    """A linear module inside a decoder layer (what ``all-linear`` adapts)."""
    return isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"


def _without_input_casts(model: Any) -> None:
    """Stop peft's LoRA layers casting their input to the adapter's dtype. Under bf16
    autocast that cast is a round trip: a bf16 input upcast to fp32 (the adapter weights
    stay fp32) is cast back to bf16 by autocast for ``lora_A``, the same values, at two
    copies of the input per adapted projection per pass (~7 % of a step at 2048 tokens
    on SmolLM2, measured with ``torch.profiler``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


@torch.no_grad()
def evaluate(
    decoder: Any,
    lm_head: Any,
    examples: list[Example],
    batch_size: int,
    packing: Packing,
    device: torch.device,
    autocast: Any,
    should_stop: Callable[[], bool] | None = None,
) -> float | None:
    """Mean cross-entropy per assistant token over ``examples``; None when
    ``should_stop`` (polled between rows) asked to end early."""
    decoder.eval()
    total = 0.0
    count = 0
    for i in range(0, len(examples), max(1, batch_size)):
        chunk = examples[i : i + batch_size]
        for r in packing.rows(chunk):
            if should_stop is not None and should_stop():
                return None
            row = Packed(r, device)
            try:
                total += float(row_loss_sum(decoder, lm_head, row, autocast))
            except StopRequested:
                return None
            count += row.n_labels
    return total / max(1, count)


def install_stop_points(decoder: Any, should_stop: Callable[[], bool]) -> list[Any]:
    """Hooks that raise ``StopRequested`` once ``should_stop()``: before each decoder
    layer's forward and when backward reaches its output. Raising there leaves nothing
    half-applied: weights change only in ``optimizer.step``. Returns the hook handles."""
    layers = getattr(decoder, "layers", None)
    if layers is None:
        return []

    def check(*_: Any) -> None:
        if should_stop():
            raise StopRequested()

    def after_forward(module: Any, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
            hidden.register_hook(check)  # returns None: the gradient is left as it is

    handles = []
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(check))
        handles.append(layer.register_forward_hook(after_forward))
    return handles


def _existing_targets(model: Any, wanted: tuple[str, ...]) -> list[str] | str:
    """The LoRA targets: ``all-linear`` as peft knows it; the default attention set as
    far as this architecture has it (an input error if none); names the user listed,
    each of which must exist."""
    if tuple(wanted) == ("all-linear",):
        return "all-linear"
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    found = [t for t in wanted if t in names]
    missing = [t for t in wanted if t not in names]
    if not found or (missing and tuple(wanted) != ATTENTION_MODULES):
        raise InputError(f"LoRA target modules {missing} do not exist in this model")
    return found


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass


def _save_checkpoint(
    model: Any, spec: TrainSpec, iteration: int, state: CheckpointState, weights: Any = None
) -> Path:
    def fill(tmp: Path) -> None:
        model.save_pretrained(str(tmp), **({"state_dict": weights} if weights else {}))
        torch.save(state, tmp / STATE_FILE)
        meta = {"kind": CHECKPOINT_KIND, "iteration": iteration, "jobId": spec.job_id}
        (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    return write_atomically(spec.checkpoint_dir / str(iteration), fill)
