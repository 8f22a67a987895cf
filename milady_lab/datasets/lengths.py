"""How long a dataset's examples are, against the length training will give them.

Real agent prompts are thousands of tokens of templated text; at the default
``maxSeqLength`` most agent-shaped examples do not fit, and training at that length on
a laptop's CPU takes hours. A build says so when it happens, instead of leaving the
user to find out from a job that runs for an afternoon: the record carries the
examples' estimated token lengths, the share above ``maxSeqLength``, and, where this
home has trained before, how long one epoch would take at the speed it measured.

Tokens are estimated from characters (``CHARS_PER_TOKEN``), not counted: counting needs
the model's tokenizer, and a build neither knows the model nor should pay for loading
one. The ratio was measured with SmolLM2's tokenizer (2026-12-07): 3.29 characters a
token on agent-shaped examples (elizaOS templates, TOON), 3.64 on the regular demo's;
the lower one is used, so the estimate errs long.
"""

from __future__ import annotations

import math
import statistics

import polars as pl

from ..api.schema import LengthEstimate
from ..state import StateStore

CHARS_PER_TOKEN = 3.3
#: A build warns when more than this share of its examples exceed ``maxSeqLength``.
WARN_SHARE = 0.5
#: Recent completed jobs whose measured speed estimates an epoch's time.
SPEED_JOBS = 5


def chars(examples: pl.DataFrame) -> pl.Series | None:
    """Each example's characters (system, user and reply; a pair's both replies); None
    when the frame holds no chat text."""
    text = [c for c in ("system", "userPrompt", "response", "response_c") if c in examples]
    if "userPrompt" not in text:
        return None
    return examples.select(
        pl.sum_horizontal(pl.col(c).str.len_chars().fill_null(0) for c in text)
    ).to_series()


def measured_speed(store: StateStore) -> float | None:
    """Trained tokens a second, the median of this home's recent completed jobs."""
    done = [
        float(j["tokensPerSecond"])
        for j in store.list_jobs(("completed",))[-SPEED_JOBS:]
        if j.get("tokensPerSecond")
    ]
    return statistics.median(done) if done else None


def estimate(
    train_chars: pl.Series, max_seq_length: int, tokens_per_second: float | None
) -> LengthEstimate | None:
    """The estimate for the training examples' character counts; None when there are none."""
    if train_chars.len() == 0:
        return None
    tokens = (train_chars.cast(pl.Float64) / CHARS_PER_TOKEN).ceil()
    trained = float(tokens.clip(upper_bound=max_seq_length).sum())
    return LengthEstimate(
        tokens_p50=int(tokens.quantile(0.5) or 0),
        tokens_p90=int(tokens.quantile(0.9) or 0),
        tokens_max=int(tokens.max() or 0),  # type: ignore[arg-type]
        max_seq_length=max_seq_length,
        over_max_seq_length=round(float((tokens > max_seq_length).mean() or 0.0), 4),
        train_tokens=int(trained),
        tokens_per_second=None if tokens_per_second is None else round(tokens_per_second, 1),
        epoch_seconds=None if not tokens_per_second else math.ceil(trained / tokens_per_second),
        chars_per_token=CHARS_PER_TOKEN,
    )


def warnings(est: LengthEstimate | None) -> list[str]:
    """What a user should know before training on these examples."""
    if est is None or est.over_max_seq_length <= WARN_SHARE:
        return []
    when = (
        f"; at the {est.tokens_per_second:g} tokens/s this home's recent jobs measured, one "
        f"epoch takes about {_duration(est.epoch_seconds)}"
        if est.epoch_seconds is not None and est.tokens_per_second is not None
        else ""
    )
    return [
        f"{est.over_max_seq_length:.0%} of the training examples are longer than "
        f"maxSeqLength {est.max_seq_length} tokens (median ~{est.tokens_p50:,}, estimated at "
        f"{est.chars_per_token:g} characters a token): training shortens them (the oldest "
        f"conversation turns first) or drops those that cannot fit{when}. Filter by "
        "purpose, or give the job a maxSeqLength that fits them"
    ]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"
