"""The explorer's groupings: tokens over time are bucketed by the user's local days."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from milady_lab.widgets._groups import tokens_over_time


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def _day_ms(text: str) -> int:
    """A wall-clock midnight, as the buckets hold it (that clock read as UTC)."""
    return _ms(text + "T00:00:00")


ROWS = pl.DataFrame(
    {
        "group": ["chat"] * 3,
        "startTime": [
            _ms("2026-05-01T23:30:00"),
            _ms("2026-05-02T01:00:00"),
            _ms("2026-05-20T12:00:00"),
        ],
        "tokens": [10.0, 5.0, 1.0],
    }
)


def test_day_buckets_follow_the_time_zone() -> None:
    utc, bucket = tokens_over_time(ROWS)
    assert bucket == 86_400_000
    starts, tokens = utc["chat"]
    assert dict(zip(starts, tokens, strict=True))[_day_ms("2026-05-01")] == 10.0
    # In Tokyo (UTC+9) both early calls fall on May 2; New York (UTC-4) puts both on May 1.
    tokyo, _ = tokens_over_time(ROWS, "Asia/Tokyo")
    assert dict(zip(*tokyo["chat"], strict=True)) == {
        _day_ms("2026-05-02"): 15.0,
        _day_ms("2026-05-20"): 1.0,
    }
    new_york, _ = tokens_over_time(ROWS, "America/New_York")
    assert dict(zip(*new_york["chat"], strict=True)) == {
        _day_ms("2026-05-01"): 15.0,
        _day_ms("2026-05-20"): 1.0,
    }
