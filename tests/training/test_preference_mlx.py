"""The mlx DPO and KTO losses equal TRL's (and the torch ones) on the same batch, to 1e-5
in fp32 (issue 27): ``test_preference_losses``'s batches and TRL values, fed to the
``mlx.core`` formulas of ``backends.preference_mlx``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from milady_lab.training import preference as pref
from milady_lab.training.backends import TrainingCancelled, run_training
from milady_lab.training.preference import PREFERENCE_METRICS

from .conftest import write_dataset
from .test_backends import Recorder, make_spec
from .test_preference_losses import DPO_KEYS, KTO_KEYS, TOL, dpo_case, kto_case
from .test_preference_training import HELD_OUT, TRAIN_WORDS, labelled_line, pair_line

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


# -- training on the tiny Llama ---------------------------------------------------------------
@pytest.mark.slow
def test_mlx_dpo_margin_rises_on_held_out_pairs(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "pairs", [pair_line(w) for w in TRAIN_WORDS],
                         [pair_line(w) for w in HELD_OUT])  # fmt: skip
    cb = Recorder()
    spec = make_spec(
        tiny_llama_dir, data, tmp_path, "mlx", objective="dpo", beta=0.1, iterations=12,
        eval_every=1, learning_rate=2e-3,
    )  # fmt: skip
    result = run_training(spec, cb)
    evals = [m["valRewardMargin"] for m in cb.metrics if "valRewardMargin" in m]
    assert len(evals) == 12 and evals[-1] > evals[0] + 0.05, evals
    assert evals[-1] > 0
    first = cb.metrics[0]
    # A fresh adapter (B = 0) is the base model: step 1's policy is the reference.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["rewardMargin"] == pytest.approx(0.0, abs=1e-4)
    for m in cb.metrics:
        assert set(PREFERENCE_METRICS) - {"klEstimate"} <= set(m)
    assert cb.metrics[-1]["rewardMargin"] > 0
    assert result.best_iteration is not None
    assert (spec.output_dir / "adapter_config.json").is_file()
    assert (spec.output_dir / "mlx" / "adapters.safetensors").is_file()


@pytest.mark.slow
def test_mlx_kto_separates_desirable_from_undesirable(tiny_llama_dir: Path, tmp_path: Path):
    rows = [labelled_line(w, good) for w in TRAIN_WORDS for good in (True, False)]
    held = [labelled_line(w, good) for w in HELD_OUT for good in (True, False)]
    data = write_dataset(tmp_path / "labelled", rows, held)
    cb = Recorder()
    # A quarter of the torch test's rate: mlx's AdamW has no bias correction, so its first
    # steps are ~3x larger, and at 2e-2 the margin swings instead of rising.
    spec = make_spec(
        tiny_llama_dir, data, tmp_path / "out", "mlx", objective="kto", beta=0.5, iterations=10,
        eval_every=5, learning_rate=5e-3,
    )  # fmt: skip
    run_training(spec, cb)
    assert all("klEstimate" in m and m["klEstimate"] >= 0 for m in cb.metrics)
    evals = [m["valRewardMargin"] for m in cb.metrics if "valRewardMargin" in m]
    assert len(evals) == 2 and evals[-1] > evals[0], evals
    assert cb.metrics[-1]["loss"] < cb.metrics[0]["loss"]


@pytest.mark.slow
def test_mlx_dpo_cancel_and_resume_continue_exactly(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "pairs", [pair_line(w) for w in TRAIN_WORDS], [])
    kw = {"objective": "dpo", "iterations": 4, "checkpoint_every": 2, "eval_every": 100}
    full = Recorder()
    run_training(make_spec(tiny_llama_dir, data, tmp_path / "a", "mlx", **kw), full)
    cut = Recorder(stop_after=2)
    spec = make_spec(tiny_llama_dir, data, tmp_path / "b", "mlx", **kw)
    with pytest.raises(TrainingCancelled):
        run_training(spec, cut)
    resumed = Recorder()
    ckpt = spec.checkpoint_dir / "2"
    run_training(make_spec(tiny_llama_dir, data, tmp_path / "c", "mlx", resume_from=ckpt, **kw),
                 resumed)  # fmt: skip
    assert [m["iteration"] for m in resumed.metrics] == [3, 4]
    assert [m["loss"] for m in resumed.metrics] == pytest.approx(
        [m["loss"] for m in full.metrics[2:]], rel=1e-4
    )


def test_mlx_logps_both_head_paths_and_the_disabled_adapter(tiny_llama_dir: Path) -> None:
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from milady_lab.training.backends.data import Example

    model, _ = load(str(tiny_llama_dir))
    examples = [
        Example([5, 9, 14, 3, 7, 2], [False, False, True, True, False, True]),
        Example([8, 4, 11], [False, True, True]),
    ]
    base = pm.sequence_logps(model, examples, selective=False)
    selective = pm.sequence_logps(model, examples, selective=True)
    assert np.allclose(np.array(selective), np.array(base), atol=1e-4)
    logits = model(mx.array([examples[1].input_ids[:-1]]))[0].astype(mx.float32)
    by_hand = sum((logits[t] - mx.logsumexp(logits[t]))[examples[1].input_ids[t + 1]].item()
                  for t in (0, 1))  # fmt: skip
    assert abs(base[1].item() - by_hand) < 1e-4
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {"rank": 4, "scale": 2.0, "dropout": 0.0})
    for _, m in model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.ones_like(m.lora_b) * 0.05  # the adapter now changes the model
    policy = pm.sequence_logps(model, examples, True)
    ref = pm.reference_logps(model, examples, True)
    assert np.allclose(np.array(ref), np.array(base), atol=1e-4)
    assert np.abs(np.array(policy) - np.array(base)).max() > 1e-2
    assert all(m.scale == 2.0 for _, m in model.named_modules() if hasattr(m, "lora_b"))
