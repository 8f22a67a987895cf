"""``SQLiteSource.page_now``: the page a server answers on its event loop.

It must equal the ordinary ``summaries`` + ``count`` answer whenever it answers, and
decline (None) whenever answering would need slow work: caches cold, data changed
since they were built, another thread inside the source.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from milady_lab.trajectories import sqlite as sqlite_mod
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import null_some_start_times

INSERT = (
    "INSERT INTO trajectories (id, trajectory_id, agent_id, start_time, llm_call_count, "
    "steps_json, created_at, updated_at) VALUES (?, ?, 'a', ?, ?, ?, 'x', 'x')"
)


@pytest.fixture
def db_copy(demo_db: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(demo_db, tmp_path / "copy.sqlite"))


def slow_answer(source: SQLiteSource, limit: int, offset: int) -> tuple[list, int]:
    return source.summaries(limit, offset).to_dicts(), source.count()


def test_page_now_equals_the_ordinary_page_once_warm(
    demo_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 16)
    source = SQLiteSource(demo_db)
    assert source.page_now(10, 200) is None  # cold: nothing counted, no anchors
    slow_answer(source, 10, 200)  # what the thread path does first
    answered = 0
    for limit in (1, 7, 100):
        for offset in range(0, 420, 13):
            quick = source.page_now(limit, offset)
            assert quick is not None, (limit, offset)
            assert quick == slow_answer(source, limit, offset), (limit, offset)
            answered += 1
    assert answered > 90
    assert source.page_now(0, 0) is None and source.page_now(5, -1) is None


def test_page_now_declines_after_a_change_until_rewarmed(
    db_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 16)
    source = SQLiteSource(db_copy)
    slow_answer(source, 10, 200)
    assert source.page_now(10, 200)[1] == 400
    conn = sqlite3.connect(db_copy)  # the agent commits a new trajectory
    conn.execute(INSERT, ("zz-new", "zz-new", 9_999_999_999_999, 1, "[]"))
    conn.commit()
    conn.close()
    assert source.page_now(10, 200) is None  # the cached count is stale: not used
    assert slow_answer(source, 1, 0)[1] == 401
    rows, total = source.page_now(1, 0)
    assert total == 401 and rows[0]["id"] == "zz-new"
    assert source.page_now(10, 201) is None  # the anchors are still those of before
    expected = slow_answer(source, 10, 201)  # (shifted by the thread path)
    assert source.page_now(10, 201) == expected


def test_page_now_never_waits_for_a_busy_source(demo_db: Path) -> None:
    source = SQLiteSource(demo_db)
    slow_answer(source, 10, 0)
    assert source.page_now(10, 0) is not None
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with source._lock:  # a long read (a dataset build's scan) in another thread
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        t = time.perf_counter()
        assert source.page_now(10, 0) is None
        assert time.perf_counter() - t < 0.5
    finally:
        release.set()
        thread.join()
    assert source.page_now(10, 0) is not None


def test_page_now_declines_deep_pages_without_anchors(
    db_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NULL start times page by LIMIT/OFFSET (a scan at depth): that stays off the loop."""
    monkeypatch.setattr(sqlite_mod, "ANCHOR_EVERY", 8)
    null_some_start_times(db_copy)
    source = SQLiteSource(db_copy)
    slow_answer(source, 10, 100)
    assert source.page_now(10, 100) is None
    assert source.page_now(5, 3) == slow_answer(source, 5, 3)  # above the first anchor
