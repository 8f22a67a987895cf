"""DPO and KTO steps for the torch backend (issue 27), beside SFT's in ``torch.py``.

Why here: the objective changes what a step computes, not how a run is set up, saved,
resumed, cancelled or stopped early, so ``torch._Run`` keeps all of that and calls
``preference_step`` / ``evaluator`` instead of its cross-entropy. A step computes, per
completion, the summed log-probability of its assistant tokens (the SFT mask) under
the policy, and under the reference policy: the *same* model with the LoRA adapter
disabled (``peft``'s ``disable_adapter()``), so no second copy is ever in memory.
Completions are packed into padding-free rows as in SFT (``Packed``); the losses are
``training.preference``'s, in fp32.

Several ranks (torchrun, ``strategy: ddp``): every rank draws the same global batch
and each micro-batch of ``batchSize × world`` items is split over the ranks, so the
step equals one process's with that global batch. The policy's forwards of a
micro-batch run through the DDP wrapper: several forwards (one per packed row, as many
as that rank's share needs; DDP's forward runs no collective), then one backward, on
which DDP all-reduces the LoRA gradients (the last micro-batch; ``no_sync`` before it).
Every LoRA weight takes part in each policy forward, so DDP needs no unused-parameter
search. The reference's and the KL estimate's forwards run under ``no_grad`` on the
module DDP wraps, so no reducer hook sees them. KTO's KL estimate pairs each item
with its predecessor in the *global* micro-batch and is averaged over every rank's
mismatched pairs before the clamp; the loss and metrics are averaged over the ranks.
``fsdp`` is refused (``options``): its forwards gather each layer, and this step's
several forwards per backward have not been made to pair up across ranks.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from ..callbacks import MetricPoint, PreferenceFigures
from ..preference import (
    PREFERENCE_METRICS,
    dpo_loss,
    kl_estimate,
    kto_loss,
    mismatched_order,
)
from .data import Example, PreferenceItem, batch_indices, splice
from .packed import Packed
from .parallel import Group
from .step_state import StopRequested, record_step, rng_state


def sequence_logps(run: Any, examples: list[Example], decoder: Any = None) -> torch.Tensor:
    """Summed log-probability of each example's trained tokens, in ``examples`` order
    (with the graph when grad is on); rows of at most ``run.budget`` tokens, each a
    forward of ``decoder`` (``run.decoder``, the DDP wrapper on several ranks)."""
    decoder = run.decoder if decoder is None else decoder
    if not examples:  # a rank without a share of a short validation chunk
        return torch.zeros(0, device=run.device, dtype=torch.float32)
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
            hidden = decoder(**row.decoder_inputs()).last_hidden_state[0]
            logits = run.lm_head(hidden.index_select(0, row.src))
        token = -F.cross_entropy(logits.float(), row.tgt, reduction="none")
        sums = torch.zeros(len(idx), device=run.device, dtype=torch.float32)
        parts.append(sums.index_add(0, row.seg, token))
        where.extend(idx)
    flat = torch.cat(parts)
    inverse = torch.empty(len(where), dtype=torch.long, device=run.device)
    inverse[torch.tensor(where, device=run.device)] = torch.arange(len(where), device=run.device)
    return flat.index_select(0, inverse)


def _unwrapped(run: Any) -> Any:
    """The decoder without DDP's wrapper: forwards there leave the reducer alone."""
    return getattr(run.decoder, "module", run.decoder)


def _no_grad_logps(run: Any, examples: list[Example], reference: bool) -> torch.Tensor:
    """``sequence_logps`` without gradient on the unwrapped decoder: under the base
    model (the adapter disabled) when ``reference``, else under the policy."""
    with torch.no_grad(), run.model.disable_adapter() if reference else nullcontext():
        return sequence_logps(run, examples, _unwrapped(run))


def share(group: Group, items: list[PreferenceItem]) -> tuple[list[Any], list[Any]]:
    """This rank's items of a global micro-batch (every ``world``-th, from its rank; all
    of them alone) and, for each, the item whose completion KTO's KL estimate pairs
    with its prompt: its predecessor in the global micro-batch (``mismatched_order``)."""
    order = mismatched_order(len(items))
    mine = range(group.rank, len(items), group.world)
    return [items[g] for g in mine], [items[order[g]] for g in mine]


def _kl(run: Any, mismatched: list[Example]) -> torch.Tensor:
    """KTO's KL estimate over every rank's mismatched pairs (each rank's share summed
    up before the mean and the clamp; ``kl_estimate`` alone)."""
    policy = _no_grad_logps(run, mismatched, reference=False)
    ref = _no_grad_logps(run, mismatched, reference=True)
    if not run.group.active:
        return kl_estimate(policy, ref)
    total, count = run.group.total(float((policy - ref).sum()), policy.numel())
    return torch.tensor(total / max(1.0, count), device=run.device).clamp(min=0)


def batch_loss(
    run: Any, items: list[PreferenceItem], partners: list[PreferenceItem] | None = None
) -> tuple[torch.Tensor, PreferenceFigures]:
    """The objective's loss on ``items`` and its metrics; KTO pairs each item's prompt
    with the completion of its ``partners`` entry for the KL estimate (by default its
    predecessor in ``items``)."""
    spec = run.spec
    if spec.objective == "dpo":
        examples = [it.examples[0] for it in items] + [it.examples[1] for it in items]
        policy, ref = sequence_logps(run, examples), _no_grad_logps(run, examples, True)
        n = len(items)
        return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], spec.beta)
    if partners is None:
        partners = [items[j] for j in mismatched_order(len(items))]
    examples = [it.examples[0] for it in items]
    labels = torch.tensor([bool(it.label) for it in items], device=run.device)
    # The KL estimate carries no gradient (TRL, the paper).
    kl = _kl(run, [splice(ex, p.examples[0]) for ex, p in zip(examples, partners, strict=True)])
    policy, ref = sequence_logps(run, examples), _no_grad_logps(run, examples, True)
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


def across_ranks(group: Group, figures: PreferenceFigures) -> PreferenceFigures:
    """Each metric averaged over the ranks that have it (one all-reduce; itself alone)."""
    if not group.active:
        return figures
    present = [figures.get(k) is not None for k in PREFERENCE_METRICS]
    values = [float(figures.get(k) or 0.0) for k in PREFERENCE_METRICS]
    sums = group.total(*values, *map(float, present))
    n, out = len(PREFERENCE_METRICS), PreferenceFigures()
    for i, key in enumerate(PREFERENCE_METRICS):
        if sums[n + i] > 0:
            out[key] = sums[i] / sums[n + i]  # type: ignore[literal-required]
    return out


def preference_step(run: Any, it: int) -> MetricPoint:
    """One optimizer step of DPO/KTO: ``gradient_accumulation`` micro-batches of
    ``batch_size`` items per rank, each one backward of its mean loss (DDP reducing the
    gradients on the last); the metric of the step, averaged over the ranks."""
    spec, done, group = run.spec, run.progress, run.group
    rng_before = rng_state() if spec.checkpoint_every > 0 else None
    tic = time.perf_counter()
    items = [  # the global batch: the same on every rank
        run.train_set[i]
        for i in batch_indices(len(run.train_set), spec.step_examples * group.world, it, spec.seed)
    ]
    size = spec.batch_size * group.world
    micro = [items[i : i + size] for i in range(0, len(items), size)]
    lr = run.scheduler.get_last_lr()[0]
    losses, parts = [], []
    try:
        for i, chunk in enumerate(micro):
            with group.sync(run.decoder, last=i == len(micro) - 1):
                loss, metrics = batch_loss(run, *share(group, chunk))
                (loss / len(micro)).backward()
            losses.append(float(loss.detach()))
            parts.append(metrics)
    except StopRequested:
        run.optimizer.zero_grad(set_to_none=True)
        raise run._stop(it, rng_before) from None
    run.apply_step()
    step_time, tokens = time.perf_counter() - tic, sum(len(x) for x in items)
    (loss_sum,) = group.total(sum(losses) / len(losses))
    metric = record_step(done, it, tokens, step_time, loss_sum / group.world, lr, run.device)
    return {**metric, **across_ranks(group, _averaged(parts))}


def evaluator(run: Any) -> Any:
    """``torch.evaluate``'s stand-in: the mean preference loss over the validation items
    (the best checkpoint and early stopping read it), their reward margin kept in
    ``run.val_extra`` as ``valRewardMargin``. On several ranks each chunk of
    ``batch_size × world`` items is shared out as in training, and the sums are added
    up; stop requests wait for the step boundary there (a rank leaving would stall)."""
    group = run.group

    @torch.no_grad()
    def evaluate(decoder: Any, lm_head: Any, items: list[PreferenceItem], batch_size: int,
                 *_: Any, should_stop: Any = None) -> float | None:  # fmt: skip
        decoder.eval()
        total, margin, count, n_margins = 0.0, 0.0, 0, 0
        size = max(1, batch_size) * group.world
        for i in range(0, len(items), size):
            if should_stop is not None and should_stop() and not group.active:
                return None
            mine, partners = share(group, items[i : i + size])
            try:
                loss, metrics = batch_loss(run, mine, partners)
            except StopRequested:
                return None
            if mine:  # an empty share's loss is nan: it counts for nothing
                total += float(loss) * len(mine)
                count += len(mine)
            if metrics.get("rewardMargin") is not None:
                margin += metrics["rewardMargin"] * len(mine)  # type: ignore[operator]
                n_margins += len(mine)
        total, count, margin, n_margins = group.total(total, count, margin, n_margins)
        run.val_extra = {"valRewardMargin": margin / n_margins} if n_margins else {}
        value = total / max(1, count)
        return value if math.isfinite(value) else float("nan")

    return evaluate
