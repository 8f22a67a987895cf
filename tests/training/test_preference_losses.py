"""The DPO and KTO losses equal TRL's on the same batch, to 1e-5 in fp32 (issue 27).

TRL 1.x has no standalone loss function: the loss lives in ``DPOTrainer._compute_loss``
and ``KTOTrainer._compute_loss``. They are called here on a bare trainer instance (no
``__init__``: no model download, no dataset) whose ``model`` is a stand-in returning
fixed per-token log-probabilities, with the reference log-probabilities precomputed
(TRL's ``precompute_ref_logps`` path), so TRL's own arithmetic runs on our numbers.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from milady_lab.training import preference as pref

trl = pytest.importorskip("trl")

TOL = 1e-5


class _Accelerator:
    device = torch.device("cpu")

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t

    gather_for_metrics = gather

    def unwrap_model(self, model: Any) -> Any:
        return model


class _Model:
    """Returns TRL's fused-head outputs with fixed log-probs, chosen by input width."""

    training = True

    def __init__(self, by_width: dict[int, torch.Tensor]) -> None:
        self.by_width = by_width

    def __call__(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        logps = self.by_width[input_ids.shape[1]]
        zeros = torch.zeros_like(logps)
        return SimpleNamespace(
            log_probs=logps, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool()
        )


def _bare(cls: type, **attrs: Any) -> Any:
    trainer = object.__new__(cls)
    common = {
        "accelerator": _Accelerator(), "aux_loss_enabled": False, "precompute_ref_logps": True,
        "_metrics": {"train": defaultdict(list), "eval": defaultdict(list)},
        "_total_train_tokens": 0, "_tp_size": 1, "args": SimpleNamespace(),
    }  # fmt: skip
    for key, value in {**common, **attrs}.items():
        object.__setattr__(trainer, key, value)
    return trainer


def _token_logps(rows: int, width: int, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-token log-probs (negative, zero outside the completion) of ``rows`` sequences."""
    return -torch.rand(rows, width - 1, generator=gen, dtype=torch.float32) * 3 * mask[:, 1:]


#: Our metric names and TRL's logged ones.
DPO_KEYS = [
    ("rewardsChosen", "rewards/chosen"), ("rewardsRejected", "rewards/rejected"),
    ("rewardMargin", "rewards/margins"), ("rewardAccuracy", "rewards/accuracies"),
    ("logpsChosen", "logps/chosen"), ("logpsRejected", "logps/rejected"),
]  # fmt: skip
KTO_KEYS = [
    ("rewardsChosen", "rewards/chosen"), ("rewardsRejected", "rewards/rejected"),
    ("rewardMargin", "rewards/margins"), ("logpsChosen", "logps/chosen"),
    ("logpsRejected", "logps/rejected"), ("klEstimate", "kl"),
]  # fmt: skip


def dpo_case(beta: float) -> tuple[float, dict[str, float], torch.Tensor, torch.Tensor]:
    """A DPO batch and TRL's loss and metrics on it: ``(loss, metrics, policy, ref)``,
    ``policy``/``ref`` the summed log-probs, chosen first then rejected."""
    gen = torch.Generator().manual_seed(1)
    pairs, width = 6, 9
    mask = (torch.rand(2 * pairs, width, generator=gen) > 0.3).long()
    mask[:, 0] = 0
    logps = _token_logps(2 * pairs, width, mask, gen)
    ref = -torch.rand(2 * pairs, generator=gen) * 10
    trainer = _bare(
        trl.DPOTrainer, model=_Model({width: logps}), ld_alpha=None,
        f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0], beta=beta,
        label_smoothing=0.0, use_weighting=False,
    )  # fmt: skip
    inputs = {
        "input_ids": torch.ones(2 * pairs, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, width, dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref[:pairs],
        "ref_rejected_logps": ref[pairs:],
    }
    theirs = trainer._compute_loss(trainer.model, inputs, False)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return float(theirs), logged, logps.sum(1), ref


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_equals_trl(beta: float) -> None:
    theirs, logged, seq, ref = dpo_case(beta)
    pairs = len(seq) // 2
    ours, metrics = pref.dpo_loss(seq[:pairs], seq[pairs:], ref[:pairs], ref[pairs:], beta)
    assert abs(float(ours) - theirs) < TOL
    for mine, trl_key in DPO_KEYS:
        assert abs(metrics[mine] - logged[trl_key]) < TOL, mine


def kto_case(beta: float, dw: float, uw: float) -> tuple[float, dict[str, float], dict]:
    """A KTO batch and TRL's loss and metrics on it; the batch as summed log-probs:
    ``policy``, ``ref``, ``labels``, ``policy_kl``, ``ref_kl`` (mismatched completions)."""
    gen = torch.Generator().manual_seed(2)
    n, width, kl_width = 7, 8, 10  # distinct widths tell the stand-in which pass it is
    labels = torch.tensor([True, False, True, True, False, False, True])
    mask = (torch.rand(n, width, generator=gen) > 0.3).long()
    kl_mask = (torch.rand(n, kl_width, generator=gen) > 0.3).long()
    logps = _token_logps(n, width, mask, gen)
    kl_logps = _token_logps(n, kl_width, kl_mask, gen)
    ref, ref_kl = -torch.rand(n, generator=gen) * 8, -torch.rand(n, generator=gen) * 8
    ref_kl -= 10.0  # a positive KL estimate (the clamp at 0 is tested below)
    trainer = _bare(
        trl.KTOTrainer, model=_Model({width: logps, kl_width: kl_logps}), calculate_KL=True,
        loss_type="kto", beta=beta, desirable_weight=dw, undesirable_weight=uw,
    )  # fmt: skip
    inputs = {
        "input_ids": torch.ones(n, width, dtype=torch.long),
        "attention_mask": torch.ones(n, width, dtype=torch.long),
        "completion_mask": mask,
        "KL_input_ids": torch.ones(n, kl_width, dtype=torch.long),
        "KL_attention_mask": torch.ones(n, kl_width, dtype=torch.long),
        "KL_completion_mask": kl_mask,
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    theirs = trainer._compute_loss(trainer.model, inputs, False)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    batch = {"policy": logps.sum(1), "ref": ref, "labels": labels,
             "policy_kl": kl_logps.sum(1), "ref_kl": ref_kl}  # fmt: skip
    return float(theirs), logged, batch


@pytest.mark.parametrize(("beta", "dw", "uw"), [(0.1, 1.0, 1.0), (0.3, 1.33, 0.7)])
def test_kto_loss_equals_trl(beta: float, dw: float, uw: float) -> None:
    theirs, logged, b = kto_case(beta, dw, uw)
    kl = pref.kl_estimate(b["policy_kl"], b["ref_kl"])
    assert float(kl) > 0
    ours, metrics = pref.kto_loss(b["policy"], b["ref"], b["labels"], kl, beta, dw, uw)
    assert abs(float(ours) - theirs) < TOL
    for mine, trl_key in KTO_KEYS:
        assert abs(metrics[mine] - logged[trl_key]) < TOL, mine


def test_kl_estimate_is_clamped_and_detached() -> None:
    policy = torch.tensor([-5.0, -6.0], requires_grad=True)
    assert float(pref.kl_estimate(policy, torch.tensor([-1.0, -1.0]))) == 0.0
    assert not pref.kl_estimate(policy, torch.tensor([-9.0, -9.0])).requires_grad
    assert pref.mismatched_order(4) == [3, 0, 1, 2]


def test_losses_keep_the_policy_gradient() -> None:
    policy = torch.tensor([-2.0, -3.0], requires_grad=True)
    loss, _ = pref.dpo_loss(policy[:1], policy[1:], torch.tensor([-2.5]), torch.tensor([-2.5]))
    loss.backward()
    assert policy.grad is not None and policy.grad[0] < 0 < policy.grad[1]
