"""The explorer's groups (issue 15): trajectories by source, their LLM calls by purpose
(``purpose``, else ``actionType``), or trajectories by reward band, as Polars frames the
charts and the summary table read."""

from __future__ import annotations

import polars as pl

GROUPS = ("source", "purpose", "reward")
#: Bucket sizes for the tokens chart, smallest first: the first giving ≤ 40 bars wins.
BUCKETS_MS = (3_600_000, 6 * 3_600_000, 86_400_000, 7 * 86_400_000, 30 * 86_400_000)
NO_REWARD = "no reward"


def _tokens(prompt: str, completion: str) -> pl.Expr:
    return (pl.col(prompt).fill_null(0) + pl.col(completion).fill_null(0)).alias("tokens")


def reward_band() -> pl.Expr:
    """``no reward`` for 0 or null, else the reward rounded down to a tenth ("0.3–0.4")."""
    r = pl.col("totalReward")
    low = (r * 10).floor() / 10
    label = pl.format("{}–{}", low.round(1), (low + 0.1).round(1))
    return pl.when(r.is_null() | (r == 0)).then(pl.lit(NO_REWARD)).otherwise(label)


def grouped_rows(frame: pl.DataFrame, calls: pl.DataFrame | None, key: str) -> pl.DataFrame:
    """One row per trajectory (per call when ``key`` is purpose): ``id``, ``startTime``,
    ``group``, ``tokens``, ``calls``, ``reward``."""
    if key == "purpose":
        if calls is None or not calls.height:
            return pl.DataFrame(schema=_ROWS)
        return calls.join(
            frame.select("id", "startTime", "totalReward"), left_on="trajectoryId", right_on="id"
        ).select(
            pl.col("trajectoryId").alias("id"),
            "startTime",
            pl.coalesce("purpose", "actionType", pl.lit("?")).alias("group"),
            _tokens("promptTokens", "completionTokens"),
            pl.lit(1).alias("calls"),
            pl.col("totalReward").alias("reward"),
        )
    group = reward_band() if key == "reward" else pl.col("source").fill_null("?")
    return frame.select(
        "id",
        "startTime",
        group.alias("group"),
        _tokens("totalPromptTokens", "totalCompletionTokens"),
        pl.col("llmCallCount").fill_null(0).alias("calls"),
        pl.col("totalReward").alias("reward"),
    )


_ROWS = {
    "id": pl.String,
    "startTime": pl.Int64,
    "group": pl.String,
    "tokens": pl.Int64,
    "calls": pl.Int64,
    "reward": pl.Float64,
}


def group_summary(rows: pl.DataFrame) -> pl.DataFrame:
    """Per group: trajectories, LLM calls, tokens and the mean reward of its trajectories
    (a reward of 0 or null counts as none), most calls first."""
    per_trajectory = rows.group_by("group", "id").agg(pl.col("reward").first())
    rewards = per_trajectory.group_by("group").agg(
        pl.col("reward").filter(pl.col("reward").fill_null(0) != 0).mean().alias("meanReward")
    )
    return (
        rows.group_by("group")
        .agg(
            pl.col("id").n_unique().alias("trajectories"),
            pl.col("calls").sum(),
            pl.col("tokens").sum(),
        )
        .join(rewards, on="group", how="left")
        .sort(["calls", "group"], descending=[True, False])
    )


def wall_clock_ms(zone: str) -> pl.Expr:
    """``startTime`` as the wall-clock time in ``zone`` (ms, as if that clock were UTC):
    day buckets of it are the user's local days, DST included."""
    return (
        pl.from_epoch(pl.col("startTime"), "ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(zone)
        .dt.replace_time_zone(None)
        .dt.epoch("ms")
    )


def tokens_over_time(
    rows: pl.DataFrame, zone: str = "UTC"
) -> tuple[dict[str, tuple[list[int], list[float]]], int]:
    """Total tokens per group per time bucket of ``zone``'s wall clock (bucket starts as
    wall-clock ms, see ``wall_clock_ms``), and the bucket size in ms."""
    data = rows.filter(pl.col("startTime").is_not_null())
    if not data.height:
        return {}, BUCKETS_MS[2]
    times = data.get_column("startTime")
    span = int(times.max()) - int(times.min())  # type: ignore[arg-type]
    bucket = next((b for b in BUCKETS_MS if span / b <= 40), BUCKETS_MS[-1])
    grouped = (
        data.with_columns((wall_clock_ms(zone) // bucket * bucket).alias("bucket"))
        .group_by("group", "bucket")
        .agg(pl.col("tokens").sum())
        .sort("bucket")
    )
    out: dict[str, tuple[list[int], list[float]]] = {}
    for name, part in grouped.partition_by("group", as_dict=True).items():
        label = name[0] if isinstance(name, tuple) else name
        out[str(label)] = (part.get_column("bucket").to_list(), part.get_column("tokens").to_list())
    return out, bucket
