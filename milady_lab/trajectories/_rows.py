"""What the SQL sources share: the column mapping, frames from rows, detail bodies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl

from .base import STEPS_SCHEMA, SUMMARY_SCHEMA
from .parse import CALL_ROWS_SCHEMA, accesses_of_steps, calls_of_steps, llm_calls_from_steps

#: Milady column → summary field, with the SQL type every value is cast to, so one odd
#: value (a text id, a float count) never breaks building a frame.
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "id", "text"),
    ("agent_id", "agentId", "text"),
    ("source", "source", "text"),
    ("status", "status", "text"),
    ("start_time", "startTime", "int"),
    ("end_time", "endTime", "int"),
    ("duration_ms", "durationMs", "int"),
    ("llm_call_count", "llmCallCount", "int"),
    ("provider_access_count", "providerAccessCount", "int"),
    ("total_prompt_tokens", "totalPromptTokens", "int"),
    ("total_completion_tokens", "totalCompletionTokens", "int"),
    ("total_reward", "totalReward", "real"),
)
SUMMARY_FIELDS = tuple(field for _, field, _ in SUMMARY_COLUMNS)
_SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL"}
_PG_TYPES = {"text": "text", "int": "bigint", "real": "double precision"}


def sqlite_select() -> str:
    return ", ".join(f"CAST({c} AS {_SQLITE_TYPES[k]})" for c, _, k in SUMMARY_COLUMNS)


def pg_select() -> str:
    """Casts for PostgreSQL. A REAL (float4) column goes through its shortest text form,
    so 0.734 reads as 0.734 (as in SQLite), not 0.73400002717…"""
    parts = []
    for col, _, kind in SUMMARY_COLUMNS:
        expr = f"CAST({col} AS text)" if kind == "real" else col
        parts.append(f"CAST({expr} AS {_PG_TYPES[kind]})")
    return ", ".join(parts)


def summaries_from_rows(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """SUMMARY_SCHEMA frame from rows in SUMMARY_COLUMNS order."""
    if not rows:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    columns = list(zip(*rows, strict=True))
    return pl.DataFrame(
        {
            name: pl.Series(name, col, dtype=dtype, strict=False)
            for (name, dtype), col in zip(SUMMARY_SCHEMA.items(), columns, strict=True)
        }
    )


#: ``iter_steps``'s columns, as SQL on the ``trajectories`` table (``{judge}``: the
#: ``ai_judge_reward`` column, or NULL where the table predates it).
STEPS_SELECT = (
    "CAST(id AS {text}), CAST(source AS {text}), CAST(status AS {text}), "
    "CAST(start_time AS {int}), CAST({reward} AS {real}), CAST({judge} AS {real}), "
    "{steps}"
)


def summary_dicts(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Summary dicts from rows in SUMMARY_COLUMNS order, the REST page's shape.

    Equal to ``summaries_from_rows(rows).to_dicts()`` for SQLite rows (the SELECT casts
    every value to its column's type) at a third of the cost: a page is 100 rows."""
    return [dict(zip(SUMMARY_FIELDS, row, strict=True)) for row in rows]


def steps_from_rows(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """STEPS_SCHEMA frame from rows in ``STEPS_SELECT`` order."""
    if not rows:
        return pl.DataFrame(schema=STEPS_SCHEMA)
    columns = list(zip(*rows, strict=True))
    *fields, steps = columns
    out = {
        name: pl.Series(name, col, dtype=STEPS_SCHEMA[name], strict=False)
        for name, col in zip(list(STEPS_SCHEMA)[:-1], fields, strict=True)
    }
    out["steps"] = pl.Series("steps", [_text(s) for s in steps], dtype=pl.String)
    return pl.DataFrame(out)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def detail_body(summary_row: Sequence[Any], steps_text: Any) -> dict[str, Any]:
    """Summary fields + ``llmCalls`` + ``providerAccesses`` for one trajectory."""
    summary = summaries_from_rows([summary_row]).row(0, named=True)
    tid = summary["id"]
    return {
        **summary,
        "llmCalls": calls_of_steps(tid, steps_text, detail=True),
        "providerAccesses": accesses_of_steps(tid, steps_text, detail=True),
    }


def deferred_summaries(load: Callable[[], pl.DataFrame]) -> pl.LazyFrame:
    return pl.defer(load, schema=SUMMARY_SCHEMA)


def deferred_calls(batches: Callable[[], Iterable[pl.DataFrame]]) -> pl.LazyFrame:
    """A lazy LLM-call frame: the steps are read and parsed only when it is collected."""

    def load() -> pl.DataFrame:
        parts = [llm_calls_from_steps(b) for b in batches()]
        parts = [p for p in parts if p.height]
        return pl.concat(parts) if parts else pl.DataFrame(schema=CALL_ROWS_SCHEMA)

    return pl.defer(load, schema=CALL_ROWS_SCHEMA)


def clean_id(value: Any) -> str | None:
    """An id worth looking up: a string that encodes as UTF-8 and is not absurdly long."""
    if not isinstance(value, str) or not value or len(value) > 1000:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value
