"""SQLiteSource on real files: order, paging (plain and anchored), odd files and rows."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from milady_lab.demo import write_demo_db
from milady_lab.trajectories import SourceUnavailable, open_source
from milady_lab.trajectories import sqlite as sqlite_mod
from milady_lab.trajectories.base import STEPS_SCHEMA, SUMMARY_SCHEMA
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import null_some_start_times

INSERT = (
    "INSERT INTO trajectories (id, trajectory_id, agent_id, start_time, llm_call_count, "
    "steps_json, created_at, updated_at) VALUES (?, ?, 'a', ?, ?, ?, 'x', 'x')"
)


def expected_order(db: Path) -> pl.DataFrame:
    """The listing order computed independently: Polars sort of every row."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, start_time FROM trajectories").fetchall()
    conn.close()
    return pl.DataFrame(rows, schema={"id": pl.String, "startTime": pl.Int64}, orient="row").sort(
        ["startTime", "id"], descending=[True, False]
    )


@pytest.fixture
def db_copy(demo_db: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(demo_db, tmp_path / "copy.sqlite"))


def test_listing_order_newest_first_ties_by_id(demo_db: Path) -> None:
    source = SQLiteSource(demo_db)
    frame = source.summaries_frame().collect()
    assert frame.schema == pl.Schema(SUMMARY_SCHEMA)
    assert frame.select("id", "startTime").equals(expected_order(demo_db))
    assert frame["startTime"].is_duplicated().any()  # the demo has ties to order


def test_llm_call_count_is_the_stored_column(demo_db: Path) -> None:
    conn = sqlite3.connect(demo_db)
    stored = dict(conn.execute("SELECT id, llm_call_count FROM trajectories").fetchall())
    conn.close()
    page = SQLiteSource(demo_db).summaries(500, 0)
    assert {r["id"]: r["llmCallCount"] for r in page.to_dicts()} == stored
    # non-JSON rows still list with their stored count
    calls = SQLiteSource(demo_db).llm_calls_frame().collect()
    parsed = dict(calls.group_by("trajectoryId").len().rows())
    assert any(n > 0 and parsed.get(t, 0) == 0 for t, n in stored.items())


@pytest.mark.parametrize("anchor_every", [1024, 16, 7])
def test_pages_at_every_offset_match_the_full_order(
    demo_db: Path, anchor_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", anchor_every)
    source = SQLiteSource(demo_db)
    full = source.summaries_frame().collect()
    for limit in (1, 5, 16, 100):
        for offset in range(0, 410, 3):
            page = source.summaries(limit, offset)
            assert page.equals(full.slice(offset, limit)), (limit, offset)


def test_anchored_paging_with_long_tie_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 4)
    db = write_demo_db(tmp_path / "t.sqlite", count=1, shape="regular")
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM trajectories")
    rows = [(f"id{i:03d}{'aBc'[i % 3]}", 1000 + i // 9, "[]") for i in range(60)]
    conn.executemany(INSERT, [(i, i, t, 0, s) for i, t, s in rows])
    conn.commit()
    conn.close()
    source = SQLiteSource(db)
    full = expected_order(db)
    for offset in range(62):
        for limit in (1, 3, 10):
            assert (
                source.summaries(limit, offset)
                .select("id", "startTime")
                .equals(full.slice(offset, limit))
            )


def test_database_without_the_listing_index_is_still_correct(
    db_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 10)
    conn = sqlite3.connect(db_copy)
    conn.execute("DROP INDEX trajectories_listing")
    conn.commit()
    conn.close()
    source = SQLiteSource(db_copy)
    full = expected_order(db_copy)
    for offset in (0, 9, 10, 11, 250, 399):
        assert source.summaries(20, offset).select("id", "startTime").equals(full.slice(offset, 20))


def test_null_start_times_list_last(db_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 8)
    null_some_start_times(db_copy)  # a table from another writer, no NOT NULL
    source = SQLiteSource(db_copy)
    full = source.summaries_frame().collect()
    assert full["startTime"].tail(8).is_null().all()
    assert full["startTime"].head(392).is_not_null().all()
    for offset in (0, 100, 390, 395):
        assert source.summaries(10, offset).equals(full.slice(offset, 10))


def test_changes_by_the_agent_are_seen(db_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 16)
    source = SQLiteSource(db_copy)
    assert source.count() == 400
    before = source.summaries(10, 200)
    conn = sqlite3.connect(db_copy)  # the agent writes a newer trajectory
    conn.execute(INSERT, ("zz-new", "zz-new", 9_999_999_999_999, 1, "[]"))
    conn.commit()
    conn.close()
    assert source.count() == 401
    assert source.summaries(1, 0)["id"][0] == "zz-new"
    assert source.summaries(10, 201).equals(before)  # anchors rebuilt, not stale


def test_anchors_follow_inserts_on_top_and_rebuild_for_other_changes(
    db_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 8)
    source = SQLiteSource(db_copy)

    def check() -> None:
        full = expected_order(db_copy)
        for offset in range(0, full.height + 2, 5):
            page = source.summaries(7, offset).select("id", "startTime")
            assert page.equals(full.slice(offset, 7)), offset

    check()
    built = source._anchor_state["keys"]
    conn = sqlite3.connect(db_copy)
    for n in range(3):  # the agent adds newer trajectories: anchors kept, shifted
        conn.executemany(
            INSERT, [(f"top{n}{i}", "x", 9 * 10**12 + n, 0, "[]") for i in range(n + 1)]
        )
        conn.commit()
        check()
        assert source._anchor_state["keys"] is built
    assert source._anchor_state["shift"] == 6
    middle = source.summaries(1, 200)["startTime"][0]
    conn.execute(INSERT, ("mid", "mid", middle, 0, "[]"))  # written late, started earlier
    conn.commit()
    check()
    assert source._anchor_state["keys"] is not built
    built = source._anchor_state["keys"]
    conn.execute("DELETE FROM trajectories WHERE id IN (SELECT id FROM trajectories LIMIT 3)")
    conn.commit()
    check()
    assert source._anchor_state["keys"] is not built
    conn.close()


def test_file_replaced_while_open_is_reopened(tmp_path: Path) -> None:
    db = write_demo_db(tmp_path / "t.sqlite", count=30, seed=1, shape="regular")
    source = open_source(str(db))
    first = source.summaries(5, 0)
    write_demo_db(db, count=12, seed=2, shape="regular")  # atomic replace, as demo-data does
    assert source.count() == 12
    assert not source.summaries(5, 0).equals(first)


def test_source_is_read_only(db_copy: Path) -> None:
    before = (db_copy.stat().st_mtime_ns, db_copy.stat().st_size)
    source = SQLiteSource(db_copy)
    source.count()
    source.summaries(10, 300)
    list(source.iter_steps())
    with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
        source._connection().execute("DELETE FROM trajectories")
    assert source.count() == 400
    assert (db_copy.stat().st_mtime_ns, db_copy.stat().st_size) == before


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: None, "no trajectory database at"),
        (lambda p: p.write_text("this is not sqlite" * 100), "cannot"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE other (x)").connection.commit(),
         "has no trajectories table"),
    ],
)  # fmt: skip
def test_unreadable_files_fail_with_the_reason(tmp_path: Path, setup, reason: str) -> None:
    path = tmp_path / "t.sqlite"
    setup(path)
    source = open_source(str(path))
    assert reason in (source.unavailable_reason() or "")
    # Every read fails with the cause: an unreadable source never lists as empty.
    reads = (
        source.count, lambda: source.summaries(100, 0), lambda: source.detail("x"),
        lambda: list(source.iter_steps()), lambda: source.summaries_frame().collect(),
        lambda: source.llm_calls_frame().collect(),
    )  # fmt: skip
    for read in reads:
        with pytest.raises(SourceUnavailable, match=reason):
            read()


def test_missing_file_appearing_later_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "later.sqlite"
    source = open_source(str(path))
    assert source.unavailable_reason() is not None
    write_demo_db(path, count=3, shape="regular")
    assert source.unavailable_reason() is None
    assert source.count() == 3


def test_detail_shape_and_odd_ids(demo_db: Path) -> None:
    source = SQLiteSource(demo_db)
    tid = source.summaries(1, 0)["id"][0]
    detail = source.detail(tid)
    assert detail is not None
    assert set(SUMMARY_SCHEMA) <= set(detail)
    assert detail["llmCalls"] and all(c["stepId"] for c in detail["llmCalls"])
    assert all(c["trajectoryId"] == tid for c in detail["llmCalls"])
    assert isinstance(detail["providerAccesses"], list)
    for odd in ("", "x" * 5000, "\x00", "\ud800", "' OR 1=1 --", "../../etc/passwd", None, 5):
        assert source.detail(odd) is None  # type: ignore[arg-type]


def test_messy_rows_in_detail(demo_db: Path) -> None:
    conn = sqlite3.connect(demo_db)
    rows = conn.execute("SELECT id, steps_json FROM trajectories").fetchall()
    conn.close()
    source = SQLiteSource(demo_db)
    not_json = [tid for tid, s in rows if not s.startswith(("[", "{")) or s == "[object Object]"]
    snake = [tid for tid, s in rows if '"llm_calls"' in s]
    assert not_json and snake
    assert source.detail(not_json[0])["llmCalls"] == []
    assert source.detail(snake[0])["llmCalls"][0]["systemPrompt"]


def test_invalid_utf8_in_a_row_does_not_fail_the_listing(db_copy: Path) -> None:
    conn = sqlite3.connect(db_copy)
    conn.execute(
        "INSERT INTO trajectories (id, trajectory_id, agent_id, source, start_time, steps_json,"
        " created_at, updated_at) VALUES ('bad-utf8', 'b', 'a', CAST(X'6368e1ff' AS TEXT),"
        " 9999999999999, CAST(X'5b7bff' AS TEXT), 'x', 'x')"
    )
    conn.commit()
    conn.close()
    source = SQLiteSource(db_copy)
    top = source.summaries(3, 0)
    assert top["id"][0] == "bad-utf8" and top["source"][0].startswith("ch")
    steps = pl.concat(list(source.iter_steps(batch_rows=50)))
    assert steps.height == 401 and steps["id"][0] == "bad-utf8"
    assert source.detail("bad-utf8")["llmCalls"] == []


def test_iter_steps_batches_in_listing_order(demo_db: Path) -> None:
    batches = list(SQLiteSource(demo_db).iter_steps(batch_rows=150))
    assert [b.height for b in batches] == [150, 150, 100]
    assert all(b.schema == pl.Schema(STEPS_SCHEMA) for b in batches)
    steps = pl.concat(batches)
    assert steps.select("id", "startTime").equals(expected_order(demo_db))
    assert isinstance(json.loads(steps["steps"][0]), list | dict)


def test_summaries_rejects_nothing_and_returns_empty_for_nonsense(demo_db: Path) -> None:
    source = SQLiteSource(demo_db)
    assert source.summaries(0, 0).height == 0
    assert source.summaries(10, -1).height == 0
    assert source.summaries(10, 10**12).height == 0
