"""DPO and KTO steps for the torch backend (issue 27), beside SFT's in ``torch.py``.

Why here: the objective changes what a step computes, not how a run is set up, saved,
resumed, cancelled or stopped early, so ``torch._Run`` keeps all of that and calls
``preference_step`` / ``evaluator`` instead of its cross-entropy. A step computes, per
completion, the summed log-probability of its assistant tokens (the SFT mask) under
the policy, and under the reference policy: the *same* model with the LoRA adapter
disabled (``peft``'s ``disable_adapter()``), so no second copy is ever in memory.
Completions are packed into padding-free rows as in SFT (``Packed``); the losses are
``training.preference``'s, in fp32.

Not yet: several ranks (``options`` refuses ``devices``/``nodes`` > 1 with an objective
other than ``sft``); under torchrun a step would need one forward per backward.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..callbacks import MetricPoint, PreferenceFigures
from ..preference import dpo_loss, kl_estimate, kto_loss, mismatched_order
from .data import Example, PreferenceItem, batch_indices, splice
from .packed import Packed
from .step_state import StopRequested, record_step, rng_state


def sequence_logps(run: Any, examples: list[Example]) -> torch.Tensor:
    """Summed log-probability of each example's trained tokens, in ``examples`` order
    (with the graph when grad is on); rows of at most ``run.budget`` tokens."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]), reverse=True)
    rows: list[list[int]] = []
    sizes: list[int] = []
    for i in order:  # ``data.pack_rows``, keeping the indices
        for r, size in enumerate(sizes):
            if size + len(examples[i]) <= run.budget:
                rows[r].append(i)
                sizes[r] += len(examples[i])
                break
        else:
            rows.append([i])
            sizes.append(len(examples[i]))
    parts, where = [], []
    for idx in rows:
        row = Packed([examples[i] for i in idx], run.device)
        with run.autocast():
            hidden = run.decoder(**row.decoder_inputs()).last_hidden_state[0]
            logits = run.lm_head(hidden.index_select(0, row.src))
        token = -F.cross_entropy(logits.float(), row.tgt, reduction="none")
        sums = torch.zeros(len(idx), device=run.device, dtype=torch.float32)
        parts.append(sums.index_add(0, row.seg, token))
        where.extend(idx)
    flat = torch.cat(parts)
    inverse = torch.empty(len(where), dtype=torch.long, device=run.device)
    inverse[torch.tensor(where, device=run.device)] = torch.arange(len(where), device=run.device)
    return flat.index_select(0, inverse)


def _reference(run: Any, examples: list[Example]) -> torch.Tensor:
    """``sequence_logps`` under the base model: the adapter disabled, no gradient."""
    with torch.no_grad(), run.model.disable_adapter():
        return sequence_logps(run, examples)


def batch_loss(run: Any, items: list[PreferenceItem]) -> tuple[torch.Tensor, PreferenceFigures]:
    """The objective's loss on ``items`` and its metrics."""
    spec = run.spec
    if spec.objective == "dpo":
        examples = [it.examples[0] for it in items] + [it.examples[1] for it in items]
        policy, ref = sequence_logps(run, examples), _reference(run, examples)
        n = len(items)
        return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], spec.beta)
    examples = [it.examples[0] for it in items]
    labels = torch.tensor([bool(it.label) for it in items], device=run.device)
    mismatched = [
        splice(examples[i], examples[j]) for i, j in enumerate(mismatched_order(len(items)))
    ]
    with torch.no_grad():  # the KL estimate carries no gradient (TRL, the paper)
        kl = kl_estimate(sequence_logps(run, mismatched), _reference(run, mismatched))
    policy, ref = sequence_logps(run, examples), _reference(run, examples)
    return kto_loss(
        policy, ref, labels, kl, spec.beta, spec.desirable_weight, spec.undesirable_weight
    )


def _averaged(parts: list[PreferenceFigures]) -> PreferenceFigures:
    """Metrics of micro-batches averaged (a metric a micro-batch lacks is left out)."""
    keys = {k for p in parts for k in p}
    out: PreferenceFigures = {}
    for key in keys:
        values = [p[key] for p in parts if p.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def preference_step(run: Any, it: int) -> MetricPoint:
    """One optimizer step of DPO/KTO: ``gradient_accumulation`` micro-batches of
    ``batch_size`` items, each one backward of its mean loss; the metric of the step."""
    spec, done = run.spec, run.progress
    rng_before = rng_state() if spec.checkpoint_every > 0 else None
    tic = time.perf_counter()
    items = [
        run.train_set[i]
        for i in batch_indices(len(run.train_set), spec.step_examples, it, spec.seed)
    ]
    micro = [items[i : i + spec.batch_size] for i in range(0, len(items), spec.batch_size)]
    lr = run.scheduler.get_last_lr()[0]
    losses, parts = [], []
    try:
        for chunk in micro:
            loss, metrics = batch_loss(run, chunk)
            (loss / len(micro)).backward()
            losses.append(float(loss.detach()))
            parts.append(metrics)
    except StopRequested:
        run.optimizer.zero_grad(set_to_none=True)
        raise run._stop(it, rng_before) from None
    run.apply_step()
    step_time, tokens = time.perf_counter() - tic, sum(len(x) for x in items)
    loss = sum(losses) / len(losses)
    metric = record_step(done, it, tokens, step_time, loss, lr, run.device)
    return {**metric, **_averaged(parts)}


def evaluator(run: Any) -> Any:
    """``torch.evaluate``'s stand-in: the mean preference loss over the validation items
    (the best checkpoint and early stopping read it), their reward margin kept in
    ``run.val_extra`` as ``valRewardMargin``."""

    @torch.no_grad()
    def evaluate(decoder: Any, lm_head: Any, items: list[PreferenceItem], batch_size: int,
                 *_: Any, should_stop: Any = None) -> float | None:  # fmt: skip
        decoder.eval()
        total, margins, count = 0.0, [], 0
        for i in range(0, len(items), max(1, batch_size)):
            if should_stop is not None and should_stop():
                return None
            chunk = items[i : i + batch_size]
            try:
                loss, metrics = batch_loss(run, chunk)
            except StopRequested:
                return None
            total += float(loss) * len(chunk)
            count += len(chunk)
            if metrics.get("rewardMargin") is not None:
                margins.append(metrics["rewardMargin"])
        run.val_extra = {"valRewardMargin": sum(margins) / len(margins)} if margins else {}
        value = total / max(1, count)
        return value if math.isfinite(value) else float("nan")

    return evaluate
