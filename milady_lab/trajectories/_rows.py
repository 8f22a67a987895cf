"""What the SQL sources share: the column mapping, frames from rows, detail bodies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import polars as pl

from .base import STEPS_SCHEMA, SUMMARY_SCHEMA, DetailRow, SummaryRow
from .parse import CALL_ROWS_SCHEMA, accesses_of_steps, calls_of_steps, llm_calls_from_steps

#: Milady column → summary field, with the SQL type every value is cast to, so one odd
#: value (a text id, a float count) never breaks building a frame. The agent added
#: columns over time (``OPTIONAL_COLUMNS``): a table without one reads it as null.
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
    ("ai_judge_reward", "aiJudgeReward", "real"),
    ("scenario_id", "scenarioId", "text"),
    ("batch_id", "batchId", "text"),
    ("archetype", "archetype", "text"),
    ("episode_length", "episodeLength", "int"),
)
OPTIONAL_COLUMNS = frozenset(
    {"ai_judge_reward", "scenario_id", "batch_id", "archetype", "episode_length"}
)
#: The summary field no table holds: whether the row came from the agent's archive.
ARCHIVED = "archived"
SUMMARY_FIELDS = (*(field for _, field, _ in SUMMARY_COLUMNS), ARCHIVED)
_SQLITE_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL"}
_PG_TYPES = {"text": "text", "int": "bigint", "real": "double precision"}


Columns = set[str] | frozenset[str] | None


def sqlite_select(columns: Columns = None, *, archived: bool = False) -> str:
    """The summary SELECT list for a table with ``columns`` (None: all of them)."""
    parts = [
        f"CAST({c} AS {_SQLITE_TYPES[k]})" if _has(columns, c) else "NULL"
        for c, _, k in SUMMARY_COLUMNS
    ]
    return ", ".join([*parts, "1" if archived else "0"])


def pg_select(columns: Columns = None) -> str:
    """Casts for PostgreSQL. A REAL (float4) column goes through its shortest text form,
    so 0.734 reads as 0.734 (as in SQLite), not 0.73400002717…"""
    parts = []
    for col, _, kind in SUMMARY_COLUMNS:
        if not _has(columns, col):
            parts.append(f"CAST(NULL AS {_PG_TYPES[kind]})")
            continue
        expr = f"CAST({col} AS text)" if kind == "real" else col
        parts.append(f"CAST({expr} AS {_PG_TYPES[kind]})")
    return ", ".join([*parts, "false"])


def _has(columns: Columns, column: str) -> bool:
    return columns is None or column not in OPTIONAL_COLUMNS or column in columns


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


def summary_dicts(rows: Sequence[Sequence[Any]]) -> list[SummaryRow]:
    """Summary dicts from rows in SUMMARY_COLUMNS order, the REST page's shape.

    Equal to ``summaries_from_rows(rows).to_dicts()`` for SQLite rows (the SELECT casts
    every value to its column's type) at a third of the cost: a page is 100 rows."""
    out = cast(list[SummaryRow], [dict(zip(SUMMARY_FIELDS, row, strict=True)) for row in rows])
    for item in out:  # SQLite has no boolean: its 0/1 becomes one here
        item[ARCHIVED] = bool(item[ARCHIVED])
    return out


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


def detail_body(summary_row: Sequence[Any], steps_text: Any) -> DetailRow:
    """Summary fields + ``llmCalls`` + ``providerAccesses`` for one trajectory."""
    summary = cast(SummaryRow, summaries_from_rows([summary_row]).row(0, named=True))
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
