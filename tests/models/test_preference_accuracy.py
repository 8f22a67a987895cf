"""``preferenceAccuracy`` (issue 27): on a model whose dataset has pairs, the share of
held-out pairs where the model gives the chosen reply the higher summed log-probability,
with a bootstrap interval, stored with the benchmark like the other scores."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.models.evaluation import benchmark as bench
from milady_lab.models.evaluation import scores
from milady_lab.state import StateStore

from .conftest import agent_reply, insert_model, make_examples, one_thread


def _pairs(n: int, seed: int) -> list[dict[str, Any]]:
    """Pair lines as a ``kind: "pairs"`` build writes them: the chosen reply is the
    tiny dataset's, the rejected one another agent reply."""
    rng = random.Random(seed)
    out = []
    for ex in make_examples(n, seed):
        *prompt, chosen = ex["messages"]
        out.append({
            "prompt": prompt, "chosen": [chosen],
            "rejected": [{"role": "assistant", "content": agent_reply(rng)}],
            "metadata": {"rule": "scenario", "purpose": "response"},
        })  # fmt: skip
    return out


@pytest.fixture(scope="module")
def pairs_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    for name, n, seed in (("train.jsonl", 8, 1), ("valid.jsonl", 6, 2)):
        lines = [json.dumps(p) for p in _pairs(n, seed)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_accuracy_interval_and_paired_difference() -> None:
    wins = [True, True, True, False]
    assert scores.preference_accuracy(wins) == 0.75
    assert scores.preference_accuracy([]) is None and scores.preference_interval([]) is None
    low, high = scores.preference_interval(wins, seed=1) or [0, 0]
    assert 0.0 <= low <= 0.75 <= high <= 1.0
    assert scores.preference_interval(wins, seed=1) == [low, high]  # seeded
    assert scores.preference_interval([True] * 5) == [1.0, 1.0]
    diff = scores.paired_preference(wins, [False, True, False, False], seed=1)
    assert diff is not None and diff["delta"] == 0.5 and diff["low"] <= 0.5 <= diff["high"]
    assert scores.paired_preference(wins, [True]) is None  # not the same pairs


def test_report_stores_it_beside_the_other_scores() -> None:
    per = scores.PerExample.from_replies(["<a/>"] * 4, ["<a/>"] * 4, [1.0] * 4, [2] * 4)
    variants = {"scores": per.as_dict(), "baseline": per.as_dict()}
    wins = {"scores": [True, True, True, False], "baseline": [False, True, False, False]}
    body = bench.report(variants, [""] * 4, 0, wins)
    assert body["scores"]["preferenceAccuracy"] == 0.75
    assert body["baseline"]["preferenceAccuracy"] == 0.25
    assert len(body["intervals"]["scores"]["preferenceAccuracy"]) == 2
    assert body["differences"]["baseline"]["preferenceAccuracy"]["delta"] == 0.5
    assert body["counts"]["preferenceAccuracy"] == 4
    plain = bench.report(variants, [""] * 4, 0)  # an sft dataset: nothing new
    assert "preferenceAccuracy" not in plain["scores"] | plain["counts"]


def test_load_pairs_keeps_prompt_and_both_replies(pairs_dataset: Path) -> None:
    pairs, purposes = bench.load_pairs(pairs_dataset / "valid.jsonl", 4, seed=3)
    assert len(pairs) == 4 and purposes == ["response"] * 4
    assert pairs == bench.load_pairs(pairs_dataset / "valid.jsonl", 4, seed=3)[0]
    for p in pairs:
        assert [m["role"] for m in p["prompt"]] == ["system", "user"]
        assert p["chosen"]["role"] == p["rejected"]["role"] == "assistant"


def test_pair_wins_compare_the_replies_summed_log_probs(tiny_base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    pairs = [{"prompt": p["prompt"], "chosen": p["chosen"][0], "rejected": p["rejected"][0]}
             for p in _pairs(4, 5)]  # fmt: skip
    with one_thread():
        wins = bench.pair_wins(model, tok, pairs)
        flipped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
        swapped = bench.pair_wins(model, tok, flipped)
        ties = bench.pair_wins(model, tok, [{**p, "rejected": p["chosen"]} for p in pairs])
        # The summed log-prob is the benchmark's own reply NLL, negated.
        ex = bench.encode(tok, [*pairs[0]["prompt"], pairs[0]["chosen"]], 0)
        with torch.inference_mode():
            nll, _, _ = bench.run_batch(model, [ex], tok.pad_token_id, set(), None)
            logp = bench.reply_logp(model, ex, "cpu")
    assert wins == [not w for w in swapped] and ties == [False] * 4
    assert logp == pytest.approx(-nll[0], rel=1e-4)


@pytest.mark.slow
def test_benchmark_of_a_pairs_dataset_model(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, pairs_dataset: Path
) -> None:
    model = insert_model(store, tiny_adapter, tiny_base, pairs_dataset)
    with store.transaction() as conn:
        conn.execute("UPDATE datasets SET kind = 'pairs' WHERE id = ?", (model["datasetId"],))
    body = bench.run_benchmark(settings, store, model, {"maxExamples": 4})
    assert body["examples"] == 4 and body["counts"]["preferenceAccuracy"] == 4
    for label in ("scores", "baseline"):
        value = body[label]["preferenceAccuracy"]
        assert value in (0.0, 0.25, 0.5, 0.75, 1.0)
        low, high = body["intervals"][label]["preferenceAccuracy"]
        assert low <= value <= high
    assert "preferenceAccuracy" in body["differences"]["baseline"]
    stored = store.get_model(model["id"])
    assert stored is not None and stored["benchmark"]["scores"] == body["scores"]
