"""PostgresSource against a real server: ordering rules, odd rows, failures, masking."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import psycopg
import pytest

from milady_lab.demo import COLUMNS
from milady_lab.trajectories import SourceUnavailable, open_source
from milady_lab.trajectories.postgres import PostgresSource, mask_url
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import pg_database, raw_rows


def row(tid: str, start: int | None, steps: str = "[]", **extra: object) -> tuple[object, ...]:
    values = dict.fromkeys(COLUMNS)
    values.update(
        id=tid, trajectory_id=tid, agent_id="a", source="chat", status="completed",
        start_time=start, step_count=0, llm_call_count=0, provider_access_count=0,
        total_prompt_tokens=0, total_completion_tokens=0, total_reward=0.25,
        steps_json=steps, metadata="{}", created_at="x", updated_at="x",
    )  # fmt: skip
    values.update(extra)
    return tuple(values[c] for c in COLUMNS)


def test_order_is_bytewise_ids_and_matches_sqlite(postgres_url: str, tmp_path: Path) -> None:
    # Locale collations would put "a-b" next to "ab" and "B" next to "b"; byte order not.
    ids = ["b", "B", "a-b", "ab", "a_b", "Z", "ä", "a b", "1"]
    rows = [row(tid, 1000) for tid in ids] + [row("later", 2000), row("earlier", 10)]
    source = PostgresSource(pg_database(postgres_url, rows))
    got = source.summaries_frame().collect()
    assert got["id"].to_list() == ["later", *sorted(ids), "earlier"]
    for limit, offset in ((3, 0), (4, 2), (5, 9)):
        assert source.summaries(limit, offset).equals(got.slice(offset, limit))


def test_float4_reward_reads_like_sqlite(postgres_url: str) -> None:
    url = pg_database(postgres_url, [])
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE trajectories ALTER COLUMN total_reward TYPE real")
        conn.execute(
            "INSERT INTO trajectories (id, agent_id, start_time, created_at, updated_at, "
            "total_reward) VALUES ('r', 'a', 1, 'x', 'x', 0.734)"
        )
    assert PostgresSource(url).summaries(1, 0)["totalReward"][0] == 0.734


def test_jsonb_steps_and_null_start_times(postgres_url: str) -> None:
    steps = json.dumps([{"stepId": "s", "llmCalls": [{"userPrompt": "u", "response": "r"}]}])
    url = pg_database(postgres_url, [row("x", 5, steps), row("y", 6)])
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE trajectories ALTER COLUMN steps_json DROP DEFAULT")
        conn.execute(
            "ALTER TABLE trajectories ALTER COLUMN steps_json TYPE jsonb USING steps_json::jsonb"
        )
        conn.execute("ALTER TABLE trajectories ALTER COLUMN start_time DROP NOT NULL")
        conn.execute(
            "INSERT INTO trajectories (id, agent_id, steps_json, created_at, updated_at) "
            "VALUES ('nul', 'a', '[]', 'x', 'x')"
        )
    source = PostgresSource(url)
    assert source.summaries(10, 0)["id"].to_list() == ["y", "x", "nul"]
    calls = source.llm_calls_frame().collect()
    assert calls.select("trajectoryId", "stepId", "userPrompt").rows() == [("x", "s", "u")]
    assert source.detail("x")["llmCalls"][0]["response"] == "r"


def test_iter_steps_batches(postgres_url: str, demo_db: Path) -> None:
    source = PostgresSource(pg_database(postgres_url, raw_rows(demo_db)))
    batches = list(source.iter_steps(batch_rows=128))
    assert [b.height for b in batches] == [128, 128, 128, 16]
    expected = pl.concat(list(SQLiteSource(demo_db).iter_steps()))
    assert pl.concat(batches).equals(expected)


def test_odd_ids_are_not_found(postgres_url: str) -> None:
    source = PostgresSource(pg_database(postgres_url, [row("ok", 1)]))
    assert source.detail("ok") is not None
    for odd in ("\x00", "nul\x00id", "\ud800", "x" * 5000, "' OR 1=1 --", "", None):
        assert source.detail(odd) is None  # type: ignore[arg-type]
    assert source.detail("ok") is not None  # the connection survived


def test_missing_table_and_unreachable_server(postgres_url: str) -> None:
    no_table = PostgresSource(pg_database(postgres_url, [], table=False))
    assert "no trajectories table" in (no_table.unavailable_reason() or "")
    for read in (no_table.count, lambda: no_table.summaries(5, 0),
                 lambda: list(no_table.iter_steps())):  # fmt: skip
        with pytest.raises(SourceUnavailable, match="trajectories"):
            read()
    down = open_source("postgresql://milady:hunter2@127.0.0.1:1/x?connect_timeout=2")
    reason = down.unavailable_reason() or ""
    assert reason.startswith("cannot connect to postgresql://milady:***@127.0.0.1:1/x")
    assert "hunter2" not in reason and "hunter2" not in down.description
    # A refused connection is an error naming the server, never an empty listing.
    reads = (
        down.count, lambda: down.summaries(10, 0), lambda: down.detail("x"),
        lambda: list(down.iter_steps()), lambda: down.summaries_frame().collect(),
    )  # fmt: skip
    for read in reads:
        with pytest.raises(SourceUnavailable, match=r"127\.0\.0\.1:1") as caught:
            read()
        assert "hunter2" not in str(caught.value)


def test_source_is_read_only(postgres_url: str) -> None:
    url = pg_database(postgres_url, [row("a", 1)])
    source = PostgresSource(url)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn = source._connection()
        with conn.transaction():
            conn.execute("DELETE FROM trajectories")
    assert source.count() == 1


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgresql://h/db?password=pw&sslmode=require",
         "postgresql://h/db?password=%2A%2A%2A&sslmode=require"),
        ("postgresql://u:p%40ss@[::1]:5/db", "postgresql://u:***@[::1]:5/db"),
    ],
)  # fmt: skip
def test_description_masks_passwords(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert open_source(url).description == shown
