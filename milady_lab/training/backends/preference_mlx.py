"""DPO and KTO on the mlx backend (issue 27): the losses on ``mlx.core`` arrays and the
optimizer steps that feed them, beside SFT's ``mlx.py``.

Why its own module: the formulas must be exactly ``training.preference``'s (TRL's), so
they are written once more here in mx ops, fp32, small enough to read against the torch
ones and tested against them on the same batch (``test_preference_mlx.py``). mlx-lm's
trainer only reports a loss, so a preference run drives its own steps (``train_loop``)
and hands each one to ``mlx._MlxRun.on_report`` with the metrics, which keeps
evaluation, checkpoints, cancel, early stopping and the best adapter as for SFT.

The reference policy is the *same* model with every LoRA layer's ``scale`` set to 0
(``adapter_disabled``): no second copy in memory, and no gradient (it is computed
before, and apart from, the policy's ``value_and_grad``). Completions are the SFT
examples, masked as SFT masks them; a completion's log-probability is the sum over its
assistant targets.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from ..callbacks import PreferenceFigures
from ..preference import DEFAULT_BETA, mismatched_order
from .data import Example, PreferenceItem, batch_indices, splice


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32), copy=False)


def dpo_terms(
    policy_chosen: mx.array, policy_rejected: mx.array, ref_chosen: mx.array,
    ref_rejected: mx.array, beta: float = DEFAULT_BETA,
) -> mx.array:  # fmt: skip
    """The sigmoid DPO loss (mean over pairs) as an mx scalar, differentiable in the policy."""
    chosen = policy_chosen.astype(mx.float32) - mx.stop_gradient(ref_chosen.astype(mx.float32))
    rejected = policy_rejected.astype(mx.float32) - mx.stop_gradient(
        ref_rejected.astype(mx.float32)
    )
    return -nn.log_sigmoid(beta * (chosen - rejected)).mean()


def dpo_metrics(
    policy_chosen: mx.array, policy_rejected: mx.array, ref_chosen: mx.array,
    ref_rejected: mx.array, beta: float = DEFAULT_BETA,
) -> PreferenceFigures:  # fmt: skip
    """``preference.dpo_loss``'s metrics, as floats."""
    pc, pr = _np(policy_chosen), _np(policy_rejected)
    rc, rr = beta * (pc - _np(ref_chosen)), beta * (pr - _np(ref_rejected))
    return {
        "rewardsChosen": _mean(rc),
        "rewardsRejected": _mean(rr),
        "rewardMargin": _mean(rc - rr),
        "rewardAccuracy": _mean((rc > rr).astype(np.float32)),
        "logpsChosen": _mean(pc),
        "logpsRejected": _mean(pr),
    }


def dpo_loss(*args: Any, **kw: Any) -> tuple[mx.array, PreferenceFigures]:
    """``preference.dpo_loss`` on mx arrays: the loss and its metrics."""
    return dpo_terms(*args, **kw), dpo_metrics(*args, **kw)


def kl_estimate(policy_mismatched: mx.array, ref_mismatched: mx.array) -> mx.array:
    """KTO's reference point: mean log-ratio on mismatched completions, at least 0, no gradient."""
    diff = policy_mismatched.astype(mx.float32) - ref_mismatched.astype(mx.float32)
    return mx.stop_gradient(mx.maximum(diff.mean(), 0.0))


def kto_terms(
    policy: mx.array, ref: mx.array, labels: mx.array, kl: mx.array, beta: float = DEFAULT_BETA,
    desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> mx.array:  # fmt: skip
    """The KTO loss (mean over the batch's examples) as an mx scalar; ``labels`` bool."""
    ratio = policy.astype(mx.float32) - mx.stop_gradient(ref.astype(mx.float32))
    kl = mx.stop_gradient(kl.astype(mx.float32))
    desirable = desirable_weight * (1 - mx.sigmoid(beta * (ratio - kl)))
    undesirable = undesirable_weight * (1 - mx.sigmoid(beta * (kl - ratio)))
    return mx.where(labels, desirable, undesirable).mean()


def kto_metrics(
    policy: mx.array, ref: mx.array, labels: mx.array, kl: mx.array, beta: float = DEFAULT_BETA,
    desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> PreferenceFigures:  # fmt: skip
    """``preference.kto_loss``'s metrics, as floats (the weights do not enter them)."""
    del desirable_weight, undesirable_weight
    good = np.array(labels, copy=False).astype(bool)
    pol = _np(policy)
    reward = beta * (pol - _np(ref))
    metrics: PreferenceFigures = {
        "rewardsChosen": _mean(reward[good]),
        "rewardsRejected": _mean(reward[~good]),
        "logpsChosen": _mean(pol[good]),
        "logpsRejected": _mean(pol[~good]),
        "klEstimate": float(kl.item()),
    }
    if good.any() and (~good).any():
        metrics["rewardMargin"] = metrics["rewardsChosen"] - metrics["rewardsRejected"]
    return metrics


def kto_loss(*args: Any, **kw: Any) -> tuple[mx.array, PreferenceFigures]:
    """``preference.kto_loss`` on mx arrays: the loss and its metrics."""
    return kto_terms(*args, **kw), kto_metrics(*args, **kw)


# -- log-probabilities ------------------------------------------------------------------------
@contextlib.contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """The base model: every LoRA layer's ``scale`` 0 for the block, then restored."""
    layers = [m for _, m in model.named_modules() if hasattr(m, "lora_a") and hasattr(m, "scale")]
    scales = [m.scale for m in layers]
    try:
        for m in layers:
            m.scale = 0.0
        yield
    finally:
        for m, s in zip(layers, scales, strict=True):
            m.scale = s


def sequence_logps(model: Any, examples: list[Example], selective: bool) -> mx.array:
    """Summed log-probability of each example's trained tokens (right-padded rows, so
    padding never reaches a real token); ``selective``: the head only where a target is."""
    width = max(len(e) for e in examples)
    ids = np.zeros((len(examples), width), np.int32)
    mask = np.zeros((len(examples), width), np.float32)
    for j, e in enumerate(examples):
        ids[j, : len(e)] = e.input_ids
        mask[j, : len(e)] = e.mask
    inputs = mx.array(ids[:, :-1])
    if not selective:
        logits = model(inputs)
        token = -nn.losses.cross_entropy(logits, mx.array(ids[:, 1:])).astype(mx.float32)
        return (token * mx.array(mask[:, 1:])).sum(axis=1)
    rows, cols = np.nonzero(mask[:, 1:])  # target t+1 is predicted at position t
    hidden = model.model(inputs)
    picked = hidden.reshape(-1, hidden.shape[-1])[mx.array(rows * (width - 1) + cols)]
    if model.args.tie_word_embeddings:
        logits = model.model.embed_tokens.as_linear(picked)
    else:
        logits = model.lm_head(picked)
    token = -nn.losses.cross_entropy(logits, mx.array(ids[rows, cols + 1])).astype(mx.float32)
    owner = mx.array((rows[None, :] == np.arange(len(examples))[:, None]).astype(np.float32))
    return owner @ token


def reference_logps(model: Any, examples: list[Example], selective: bool) -> mx.array:
    """``sequence_logps`` under the base model (adapter off), evaluated, without gradient."""
    with adapter_disabled(model):
        out = mx.stop_gradient(sequence_logps(model, examples, selective))
        mx.eval(out)
    return out


# -- the objective's loss on a micro-batch ----------------------------------------------------
def loss_fn(run: Any, items: list[PreferenceItem]) -> tuple[Any, Any]:
    """``(f, metrics)``: ``f(model)`` the objective's loss on ``items`` (references and
    the KL estimate already computed, outside the gradient), ``metrics(policy)`` its
    metrics from the policy log-probs ``f`` returns beside the loss."""
    spec, sel = run.spec, run.batches.selective
    if spec.objective == "dpo":
        examples = [it.examples[0] for it in items] + [it.examples[1] for it in items]
        ref, n = reference_logps(run.model, examples, sel), len(items)
        args: tuple[Any, ...] = (ref[:n], ref[n:], spec.beta)

        def dpo(model: Any) -> tuple[mx.array, mx.array]:
            policy = sequence_logps(model, examples, sel)
            return dpo_terms(policy[:n], policy[n:], *args), policy

        return dpo, lambda p: dpo_metrics(p[:n], p[n:], *args)
    examples = [it.examples[0] for it in items]
    labels = mx.array([bool(it.label) for it in items])
    mismatched = [
        splice(examples[i], examples[j]) for i, j in enumerate(mismatched_order(len(items)))
    ]
    kl = kl_estimate(
        mx.stop_gradient(sequence_logps(run.model, mismatched, sel)),
        reference_logps(run.model, mismatched, sel),
    )
    ref = reference_logps(run.model, examples, sel)
    rest = (spec.beta, spec.desirable_weight, spec.undesirable_weight)

    def kto(model: Any) -> tuple[mx.array, mx.array]:
        policy = sequence_logps(model, examples, sel)
        return kto_terms(policy, ref, labels, kl, *rest), policy

    return kto, lambda p: kto_metrics(p, ref, labels, kl, *rest)


def _averaged(parts: list[PreferenceFigures]) -> PreferenceFigures:
    """Metrics of micro-batches averaged (a metric a micro-batch lacks is left out)."""
    out: PreferenceFigures = {}
    for key in {k for p in parts for k in p}:
        values = [p[key] for p in parts if p.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def preference_step(run: Any, it: int) -> tuple[float, PreferenceFigures]:
    """One optimizer step (``gradient_accumulation`` micro-batches, gradients averaged,
    clipped at norm 1 as torch's); its mean loss and averaged metrics."""
    from mlx.optimizers import clip_grad_norm

    spec, model = run.spec, run.model
    idx = batch_indices(len(run.train_set), spec.step_examples, it, spec.seed)
    items = [run.train_set[i] for i in idx]
    micro = [items[i : i + spec.batch_size] for i in range(0, len(items), spec.batch_size)]
    grads, losses, parts = None, [], []
    for chunk in micro:
        f, metrics = loss_fn(run, chunk)
        (loss, policy), g = nn.value_and_grad(model, f)(model)
        mx.eval(loss, policy, g)
        grads = g if grads is None else tree_map(mx.add, grads, g)
        losses.append(loss.item())
        parts.append(metrics(policy))
    grads = tree_map(lambda g: g / len(micro), grads)
    grads, _ = clip_grad_norm(grads, 1.0)
    run.optimizer.update(model, grads)
    mx.eval(model.parameters(), run.optimizer.state)
    run.batches.tokens += sum(len(x) for x in items)
    return sum(losses) / len(losses), _averaged(parts)


def train_loop(run: Any) -> None:
    """The run's steps from ``run.start``, each reported to ``run.on_report`` (which
    evaluates, checkpoints, and raises to cancel or stop early)."""
    run.model.train()
    run.tic = time.perf_counter()
    for it in range(run.start, run.spec.iterations):
        loss, metrics = preference_step(run, it)
        run.extra = metrics
        lr = float(run.optimizer.learning_rate.item())
        run.on_report({"iteration": (it + 1 - run.start) * run.spec.gradient_accumulation,
                       "train_loss": loss, "learning_rate": lr})  # fmt: skip


def evaluate(run: Any) -> float:
    """Mean preference loss over the validation items (the best checkpoint and early
    stopping read it); their reward margin kept in ``run.val_extra``."""
    size = max(1, run.spec.batch_size)
    run.model.eval()
    total, count, margins = 0.0, 0, []
    for i in range(0, len(run.val_set), size):
        chunk = run.val_set[i : i + size]
        f, metrics = loss_fn(run, chunk)
        loss, policy = f(run.model)
        mx.eval(loss, policy)
        total += loss.item() * len(chunk)
        count += len(chunk)
        margin = metrics(policy).get("rewardMargin")
        if margin is not None:
            margins.append(margin)
    run.model.train()
    run.val_extra = {"valRewardMargin": sum(margins) / len(margins)} if margins else {}
    value = total / max(1, count)
    return value if math.isfinite(value) else float("nan")
