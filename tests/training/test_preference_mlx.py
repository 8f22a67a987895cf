"""The mlx DPO and KTO losses equal TRL's (and the torch ones) on the same batch, to 1e-5
in fp32 (issue 27): ``test_preference_losses``'s batches and TRL values, fed to the
``mlx.core`` formulas of ``backends.preference_mlx``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from milady_lab.training import preference as pref

from .test_preference_losses import DPO_KEYS, KTO_KEYS, TOL, dpo_case, kto_case

mx = pytest.importorskip("mlx.core")
pm = pytest.importorskip("milady_lab.training.backends.preference_mlx")


def _mx(t: torch.Tensor) -> mx.array:
    return mx.array(t.numpy())


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_mlx_dpo_loss_equals_trl_and_torch(beta: float) -> None:
    theirs, logged, seq, ref = dpo_case(beta)
    n = len(seq) // 2
    ours, metrics = pm.dpo_loss(_mx(seq[:n]), _mx(seq[n:]), _mx(ref[:n]), _mx(ref[n:]), beta)
    assert ours.dtype == mx.float32 and abs(ours.item() - theirs) < TOL
    torch_loss, torch_metrics = pref.dpo_loss(seq[:n], seq[n:], ref[:n], ref[n:], beta)
    assert abs(ours.item() - float(torch_loss)) < TOL
    for mine, trl_key in DPO_KEYS:
        assert abs(metrics[mine] - logged[trl_key]) < TOL, mine
        assert abs(metrics[mine] - torch_metrics[mine]) < TOL, mine


@pytest.mark.parametrize(("beta", "dw", "uw"), [(0.1, 1.0, 1.0), (0.3, 1.33, 0.7)])
def test_mlx_kto_loss_equals_trl_and_torch(beta: float, dw: float, uw: float) -> None:
    theirs, logged, b = kto_case(beta, dw, uw)
    kl = pm.kl_estimate(_mx(b["policy_kl"]), _mx(b["ref_kl"]))
    assert abs(kl.item() - float(pref.kl_estimate(b["policy_kl"], b["ref_kl"]))) < TOL
    labels = _mx(b["labels"])
    ours, metrics = pm.kto_loss(_mx(b["policy"]), _mx(b["ref"]), labels, kl, beta, dw, uw)
    assert abs(ours.item() - theirs) < TOL
    torch_loss, torch_metrics = pref.kto_loss(
        b["policy"], b["ref"], b["labels"], torch.tensor(kl.item()), beta, dw, uw
    )
    assert abs(ours.item() - float(torch_loss)) < TOL
    for mine, trl_key in KTO_KEYS:
        assert abs(metrics[mine] - logged[trl_key]) < TOL, mine
        assert abs(metrics[mine] - torch_metrics[mine]) < TOL, mine


def test_mlx_kl_estimate_is_clamped_and_losses_keep_the_policy_gradient() -> None:
    assert pm.kl_estimate(mx.array([-5.0, -6.0]), mx.array([-1.0, -1.0])).item() == 0.0
    grad = mx.grad(lambda p: pm.dpo_terms(p[:1], p[1:], mx.array([-2.5]), mx.array([-2.5])))
    g = np.array(grad(mx.array([-2.0, -3.0])))
    assert g[0] < 0 < g[1]
    # The KL estimate carries no gradient.
    kl_grad = mx.grad(lambda p: pm.kl_estimate(p, mx.array([-9.0, -9.0])))(mx.array([-1.0, -2.0]))
    assert np.all(np.array(kl_grad) == 0)
