"""A build says when its examples are too long for training (issue 26): the estimated
token lengths on the record, a warning when most exceed maxSeqLength, and an epoch's
time at the speed this home's jobs measured."""

from __future__ import annotations

import polars as pl
from test_datasets import Lab, call

from milady_lab.datasets import lengths
from milady_lab.training.defaults import DEFAULT_MAX_SEQ_LENGTH

LONG = "agent42 " * 1250  # 10,000 characters: ~3,030 tokens at 3.3 a token
SHORT = "hi there"


def _rows(n_long: int, n_short: int) -> list[tuple]:
    texts = [LONG] * n_long + [SHORT] * n_short
    return [
        (f"t{i}", 1_000 + i, [call(f"{text} {i}", f"reply {i}")]) for i, text in enumerate(texts)
    ]


def test_the_estimate_of_each_example() -> None:
    est = lengths.estimate(pl.Series([330, 3300, 33_000]), 2048, tokens_per_second=100.0)
    assert est is not None
    assert (est.tokens_p50, est.tokens_max) == (1000, 10_000)
    assert est.over_max_seq_length == round(1 / 3, 4)
    # one epoch trains each example cut to the length: 100 + 1000 + 2048 tokens
    assert est.train_tokens == 3148 and est.epoch_seconds == 32
    assert lengths.warnings(est) == []  # a third too long: no warning
    assert lengths.estimate(pl.Series([], dtype=pl.Int64), 2048, None) is None


def test_a_build_of_mostly_long_examples_warns_and_estimates_the_time(tmp_path) -> None:
    lab = Lab(tmp_path, _rows(n_long=30, n_short=10))
    rec = lab.build()
    est = rec["lengths"]
    assert est["maxSeqLength"] == DEFAULT_MAX_SEQ_LENGTH
    assert 0.5 < est["overMaxSeqLength"] <= 1 and est["tokensP90"] > DEFAULT_MAX_SEQ_LENGTH
    assert est.tokens_per_second is None and est.epoch_seconds is None  # never trained here
    (warning,) = rec["warnings"]
    assert (
        f"of the training examples are longer than maxSeqLength {DEFAULT_MAX_SEQ_LENGTH} tokens"
        in warning
    )
    assert lab.store.get_dataset(rec["id"])["warnings"] == rec["warnings"]  # kept
    # A job measured this home's speed: the next build says how long an epoch takes.
    lab.store.insert_job(
        {"id": "job-1", "status": "completed", "backend": "cpu", "model": "m", "createdAt": 1,
         "totalIterations": 1, "tokensPerSecond": 150.0}
    )  # fmt: skip
    again = lab.build()
    assert again["lengths"]["tokensPerSecond"] == 150.0
    assert again["lengths"]["epochSeconds"] == -(-again["lengths"]["trainTokens"] // 150)
    assert "at the 150 tokens/s this home's recent jobs measured" in again["warnings"][0]


def test_short_examples_build_without_a_warning(tmp_path) -> None:
    rec = Lab(tmp_path, _rows(n_long=1, n_short=20)).build()
    assert rec["lengths"]["overMaxSeqLength"] < 0.5 and "warnings" not in rec.to_dict()
