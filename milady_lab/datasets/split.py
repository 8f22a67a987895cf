"""The time-based held-out split (issue 26): train on older trajectories, validate on the
newest, so the validation loss says how a model does on what the agent sees next rather
than on near-copies of its training examples.

A time split holds out every example of the trajectories that started at or after a
cutoff, chosen over the build's examples once they are all known (a trajectory's count
of examples is only known after de-duplication, which streams): the cutoff whose share of
held-out examples is closest to the wanted share, never the oldest start time, so both
files get examples. The builder writes all lines to one file first and ``split_lines``
then deals them out. With fewer than two distinct start times there is nothing to split
by, and the builder falls back to the content hash.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

#: ``split`` values: ``time`` (the default) and ``hash`` (the content hash, as before).
SPLITS = ("time", "hash")
#: Lines of a time-split build before they are dealt out (inside the build's temp folder).
ALL_LINES = "examples.part.jsonl"


def held_out_from(examples: pl.LazyFrame, percent: float) -> int | None:
    """The start time (ms) from which examples are held out, or None when the examples'
    trajectories have fewer than two distinct start times.

    ``examples``: one row per example with its trajectory's ``started`` (null: unknown;
    such examples train). The cutoff is the start time whose examples at or after it
    come closest to ``percent`` of all examples (ties: the newer one), and never the
    oldest start time, so a trajectory never straddles the split and train keeps some.
    """
    per_start = (
        examples.select(pl.col("started").cast(pl.Int64), pl.len().alias("total"))
        .drop_nulls("started")
        .group_by("started")
        .agg(pl.len().alias("n"), pl.col("total").first())
        .sort("started", descending=True)
        .with_columns(pl.col("n").cum_sum().alias("held"))
        .filter(pl.col("started") > pl.col("started").min())
        .with_columns((pl.col("held") - pl.col("total") * (percent / 100)).abs().alias("miss"))
        .sort(["miss", "started"], descending=[False, True])
        .select("started")
        .head(1)
        .collect()
    )
    return int(per_start.item()) if per_start.height else None


def split_lines(part: Path, train: Path, valid: Path, held_out: pl.Series) -> None:
    """Deal the lines of ``part`` into ``train`` and ``valid`` (``held_out``: one flag a
    line, in order), then remove ``part``. Lines are copied as bytes, never parsed."""
    with part.open("rb") as src, train.open("wb") as train_fh, valid.open("wb") as valid_fh:
        for line, held in zip(src, held_out.to_list(), strict=True):
            (valid_fh if held else train_fh).write(line)
    part.unlink()
