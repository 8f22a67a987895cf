"""The DPO and KTO objectives (issue 27), as pure functions of sequence log-probabilities.

Why its own module: the losses are the part that must be *right*, so they are kept
apart from the loop that feeds them, in fp32, and tested against TRL's trainers on
the same batch (``tests/training/test_preference_losses.py``). A backend computes,
per completion, the summed log-probability of its assistant tokens under the policy
(the LoRA model) and under the reference (the same model with the adapter disabled),
and hands them here.

* **DPO** (sigmoid; Rafailov et al. 2023, TRL ``loss_type="sigmoid"``):
  ``loss = mean(-log σ(β·((π_c − ref_c) − (π_r − ref_r))))``.
* **KTO** (Ethayarajh et al. 2024, TRL ``loss_type="kto"``): with the KL estimate
  ``z = max(0, mean(π(y′|x) − ref(y′|x)))`` over *mismatched* completions (example
  ``i``'s prompt with example ``i−1``'s completion, ``mismatched_order``), detached,
  desirable ``λ_D·(1 − σ(β·(π − ref − z)))`` and undesirable
  ``λ_U·(1 − σ(β·(z − (π − ref))))``, averaged over the batch's examples.

Metrics, as TRL logs them: ``rewardsChosen``/``rewardsRejected`` (mean ``β·(π − ref)``),
``rewardMargin`` (their difference), ``rewardAccuracy`` (DPO: share of pairs whose
chosen reward is higher), ``logpsChosen``/``logpsRejected`` (mean policy log-prob),
``klEstimate`` (KTO's ``z``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .callbacks import PreferenceFigures

#: Objectives a job can train with; ``sft`` is the cross-entropy of ``backends``.
OBJECTIVES = ("sft", "dpo", "kto")
#: Metric keys a preference step reports (besides ``loss``).
PREFERENCE_METRICS = (
    "rewardsChosen", "rewardsRejected", "rewardMargin", "rewardAccuracy", "logpsChosen",
    "logpsRejected", "klEstimate",
)  # fmt: skip
DEFAULT_BETA = 0.1


def _mean(t: torch.Tensor) -> float | None:
    return float(t.mean()) if t.numel() else None


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = DEFAULT_BETA,
) -> tuple[torch.Tensor, PreferenceFigures]:
    """The sigmoid DPO loss of a batch of pairs (1-D tensors, one value per pair) and
    its metrics; the loss keeps the policy's graph."""
    chosen = policy_chosen.float() - ref_chosen.float().detach()
    rejected = policy_rejected.float() - ref_rejected.float().detach()
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    rc, rr = beta * chosen.detach(), beta * rejected.detach()
    metrics: PreferenceFigures = {
        "rewardsChosen": _mean(rc),
        "rewardsRejected": _mean(rr),
        "rewardMargin": _mean(rc - rr),
        "rewardAccuracy": _mean((rc > rr).float()),
        "logpsChosen": _mean(policy_chosen.detach().float()),
        "logpsRejected": _mean(policy_rejected.detach().float()),
    }
    return loss, metrics


def kl_estimate(policy_mismatched: torch.Tensor, ref_mismatched: torch.Tensor) -> torch.Tensor:
    """KTO's reference point: the mean log-ratio on mismatched completions, at least 0,
    without gradient (the paper's and TRL's choice)."""
    return (policy_mismatched.float() - ref_mismatched.float()).mean().detach().clamp(min=0)


def kto_loss(
    policy: torch.Tensor,
    ref: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor,
    beta: float = DEFAULT_BETA,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, PreferenceFigures]:
    """The KTO loss of a batch of labelled completions (``labels`` True: desirable) given
    the KL estimate ``kl`` (``kl_estimate``), and its metrics."""
    labels = labels.to(torch.bool)
    ratio = policy.float() - ref.float().detach()
    kl = kl.float().detach()
    chosen, rejected = ratio[labels], ratio[~labels]
    losses = torch.cat(
        (
            desirable_weight * (1 - torch.sigmoid(beta * (chosen - kl))),
            undesirable_weight * (1 - torch.sigmoid(beta * (kl - rejected))),
        )
    )
    rc, rr = beta * chosen.detach(), beta * rejected.detach()
    metrics: PreferenceFigures = {
        "rewardsChosen": _mean(rc),
        "rewardsRejected": _mean(rr),
        "logpsChosen": _mean(policy.detach().float()[labels]),
        "logpsRejected": _mean(policy.detach().float()[~labels]),
        "klEstimate": float(kl),
    }
    if rc.numel() and rr.numel():
        metrics["rewardMargin"] = metrics["rewardsChosen"] - metrics["rewardsRejected"]
    return losses.mean(), metrics


def mismatched_order(n: int) -> list[int]:
    """Whose completion each example's prompt is paired with for the KL estimate: the
    previous one's, cyclically (TRL's ``[last] + completions[:-1]``)."""
    return [(i - 1) % n for i in range(n)]
