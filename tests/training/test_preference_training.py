"""DPO and KTO on the tiny Llama, cpu backend (issue 27): the chosen-over-rejected margin
rises on held-out pairs, the reference is the base model with the adapter off, the
metrics reach the callback, and cancel/resume continue exactly as for SFT."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from milady_lab.training.backends import TrainingCancelled, run_training

from .conftest import write_dataset
from .test_backends import Recorder, make_spec

TRAIN_WORDS = ["red", "blue", "green", "gold", "pink", "grey", "teal", "lime"]
HELD_OUT = ["plum", "rose", "sand"]


def pair_line(word: str) -> dict[str, Any]:
    prompt = [{"role": "system", "content": "Colours."}, {"role": "user", "content": f"{word}?"}]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": f"{word} is lovely."}],
        "rejected": [{"role": "assistant", "content": f"{word} is awful."}],
    }


def labelled_line(word: str, good: bool) -> dict[str, Any]:
    pair = pair_line(word)
    return {"messages": pair["prompt"] + pair["chosen" if good else "rejected"], "label": good}


@pytest.fixture
def pairs_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "pairs", [pair_line(w) for w in TRAIN_WORDS],
                         [pair_line(w) for w in HELD_OUT])  # fmt: skip


@pytest.mark.slow
def test_dpo_margin_rises_on_held_out_pairs(tiny_llama_dir: Path, pairs_dataset: Path, tmp_path):
    cb = Recorder()
    spec = make_spec(
        tiny_llama_dir, pairs_dataset, tmp_path, objective="dpo", beta=0.1, iterations=12,
        eval_every=1, learning_rate=2e-3,
    )  # fmt: skip
    result = run_training(spec, cb)
    evals = [m["valRewardMargin"] for m in cb.metrics if "valRewardMargin" in m]
    assert len(evals) == 12 and evals[-1] > evals[0] + 0.05, evals
    assert evals[-1] > 0
    first = cb.metrics[0]
    # Step 1 starts from a fresh adapter (B = 0): the policy is the reference, margin 0,
    # loss log 2, so the reference is the base model and nothing else.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["rewardMargin"] == pytest.approx(0.0, abs=1e-4)
    for m in cb.metrics:
        assert {"rewardsChosen", "rewardsRejected", "rewardAccuracy", "logpsChosen",
                "logpsRejected"} <= set(m)  # fmt: skip
    assert cb.metrics[-1]["rewardMargin"] > 0
    assert result.best_iteration is not None and (spec.output_dir / "adapter_config.json").is_file()


@pytest.mark.slow
def test_kto_separates_desirable_from_undesirable(tiny_llama_dir: Path, tmp_path: Path):
    rows = [labelled_line(w, good) for w in TRAIN_WORDS for good in (True, False)]
    held = [labelled_line(w, good) for w in HELD_OUT for good in (True, False)]
    data = write_dataset(tmp_path / "labelled", rows, held)
    cb = Recorder()
    spec = make_spec(
        tiny_llama_dir, data, tmp_path / "out", objective="kto", beta=0.5, iterations=10,
        eval_every=5, learning_rate=2e-2, desirable_weight=1.0, undesirable_weight=1.0,
    )  # fmt: skip
    run_training(spec, cb)
    assert all("klEstimate" in m and m["klEstimate"] >= 0 for m in cb.metrics)
    evals = [m["valRewardMargin"] for m in cb.metrics if "valRewardMargin" in m]
    assert evals[-1] > evals[0], evals
    assert cb.metrics[-1]["loss"] < cb.metrics[0]["loss"]


@pytest.mark.slow
def test_dpo_cancel_and_resume_continue_exactly(
    tiny_llama_dir: Path, pairs_dataset: Path, tmp_path: Path
) -> None:
    kw = {"objective": "dpo", "iterations": 4, "checkpoint_every": 2, "eval_every": 100}
    full = Recorder()
    run_training(make_spec(tiny_llama_dir, pairs_dataset, tmp_path / "a", **kw), full)
    cut = Recorder(stop_after=2)
    spec = make_spec(tiny_llama_dir, pairs_dataset, tmp_path / "b", **kw)
    with pytest.raises(TrainingCancelled):
        run_training(spec, cut)
    resumed = Recorder()
    again = make_spec(
        tiny_llama_dir, pairs_dataset, tmp_path / "c", resume_from=spec.checkpoint_dir / "2", **kw
    )
    run_training(again, resumed)
    assert [m["loss"] for m in resumed.metrics] == pytest.approx(
        [m["loss"] for m in full.metrics[2:]], rel=1e-4
    )
