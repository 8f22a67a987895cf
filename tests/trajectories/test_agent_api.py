"""AgentApiSource against a loopback HTTP server answering Milady's documented shapes:
token handling, incremental mirroring, the export fast path and its fallback, outages."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from milady_lab.config import Settings
from milady_lab.demo import write_demo_db
from milady_lab.trajectories import SourceUnavailable, open_source
from milady_lab.trajectories.agent_api import AgentApiSource
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import AgentStandIn
from .test_sources_equal import NOT_IN_API


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MILADY_LAB_AGENT_TOKEN", raising=False)


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More than two of the agent's 500-row pages."""
    return write_demo_db(
        tmp_path_factory.mktemp("agent") / "big.sqlite", count=1100, seed=5, shape="regular"
    )


def settings(tmp_path: Path, token: str | None = "s3cret") -> Settings:
    return Settings.from_env(home=tmp_path / "home", cache=tmp_path / "c", agent_token=token)


def source(agent: AgentStandIn, tmp_path: Path, token: str | None = "s3cret") -> AgentApiSource:
    src = open_source(agent.url, settings(tmp_path, token))
    assert isinstance(src, AgentApiSource)
    return src


def add_rows(db: Path, n: int, start: int = 9_000_000_000_000) -> list[str]:
    conn = sqlite3.connect(db)
    ids = [f"new-{i}" for i in range(n)]
    conn.executemany(
        "INSERT INTO trajectories (id, trajectory_id, agent_id, start_time, llm_call_count,"
        " steps_json, created_at, updated_at) VALUES (?, ?, 'a', ?, 1, ?, 'c', 'u')",
        [(t, t, start + i, '[{"stepId":"s","llmCalls":[{"userPrompt":"hi"}]}]')
         for i, t in enumerate(ids)],
    )  # fmt: skip
    conn.commit()
    conn.close()
    return ids


def test_mirror_reads_like_the_database(big_db: Path, tmp_path: Path) -> None:
    with AgentStandIn(big_db) as agent:
        src = source(agent, tmp_path)
        assert src.unavailable_reason() is None
        listed = [r for r in agent.requests if r.startswith("GET /api/trajectories?")]
        assert [r.split("offset=")[1] for r in listed] == ["0", "500", "1000"]
        assert all("limit=500" in r for r in listed)
        assert any(r.startswith("POST /api/trajectories/export") for r in agent.requests)
        assert not any(r.startswith("GET /api/trajectories/") for r in agent.requests)
        expected = SQLiteSource(big_db)
        assert src.count() == 1100
        got_frame = src.summaries_frame().collect().drop(NOT_IN_API)
        assert got_frame.equals(expected.summaries_frame().collect().drop(NOT_IN_API))
        assert src.llm_calls_frame().collect().equals(expected.llm_calls_frame().collect())
        page, want = src.summaries(100, 1050), expected.summaries(100, 1050)
        assert page.drop(NOT_IN_API).equals(want.drop(NOT_IN_API))


def test_sync_is_incremental(big_db: Path, tmp_path: Path) -> None:
    db = Path(shutil.copy(big_db, tmp_path / "agent.sqlite"))
    with AgentStandIn(db) as agent:
        src = source(agent, tmp_path)
        assert src.count() == 1100
        agent.requests.clear()
        assert src.count() == 1100  # within refresh_s: no request at all
        assert agent.requests == []
        new = add_rows(db, 3)
        assert src.sync(force=True) is None
        listed = [r for r in agent.requests if r.startswith("GET /api/trajectories?")]
        assert len(listed) == 1 and "offset=0" in listed[0]
        assert src.count() == 1103
        assert src.summaries(3, 0)["id"].to_list() == new[::-1]


def test_active_trajectories_are_refreshed(big_db: Path, tmp_path: Path) -> None:
    db = Path(shutil.copy(big_db, tmp_path / "agent.sqlite"))
    conn = sqlite3.connect(db)
    (active,) = conn.execute(
        "SELECT id FROM trajectories WHERE status = 'active' ORDER BY start_time LIMIT 1"
    ).fetchone()
    conn.close()
    with AgentStandIn(db) as agent:
        src = source(agent, tmp_path)
        assert src.detail(active)["status"] == "active"
        conn = sqlite3.connect(db)
        conn.execute(
            "UPDATE trajectories SET status = 'completed', updated_at = 'later' WHERE id = ?",
            (active,),
        )
        conn.commit()
        conn.close()
        src.sync(force=True)
        assert src.detail(active)["status"] == "completed"


def test_without_export_it_fetches_one_by_one(demo_db: Path, tmp_path: Path) -> None:
    with AgentStandIn(demo_db, export=False) as agent:
        src = source(agent, tmp_path)
        assert src.unavailable_reason() is None
        details = [r for r in agent.requests if r.startswith("GET /api/trajectories/")]
        assert len(details) == 400
        expected = SQLiteSource(demo_db)
        assert src.llm_calls_frame().collect().equals(expected.llm_calls_frame().collect())
        tid = expected.summaries(1, 5)["id"][0]
        got, want = src.detail(tid), expected.detail(tid)
        assert got is not None and want is not None
        assert {k: got[k] for k in want if k not in NOT_IN_API} == {
            k: want[k] for k in want if k not in NOT_IN_API
        }


def test_wrong_or_missing_token(demo_db: Path, tmp_path: Path) -> None:
    with AgentStandIn(demo_db, token="s3cret") as agent:
        for token in ("wrong", None):
            src = source(agent, tmp_path / str(token), token=token)
            reason = src.unavailable_reason() or ""
            assert "refused the token (401)" in reason
            for read in ("count", "summaries", "detail"):
                args = {"count": (), "summaries": (10, 0), "detail": ("x",)}[read]
                with pytest.raises(SourceUnavailable, match=r"refused the token \(401\)"):
                    getattr(src, read)(*args)
        src = source(agent, tmp_path / "ok")
        assert src.unavailable_reason() is None
        for shown in (src.description, src.base_url, str(src.path), src.unavailable_reason()):
            assert "s3cret" not in (shown or "")
        assert b"s3cret" not in src.path.read_bytes()


def test_token_in_the_url_is_used_and_hidden(demo_db: Path, tmp_path: Path) -> None:
    with AgentStandIn(demo_db, token="tok3n") as agent:
        url = agent.url.replace("://", "://:tok3n@")
        src = open_source(url, settings(tmp_path, token=None))
        assert src.unavailable_reason() is None
        assert "tok3n" not in src.description
        assert src.count() == 400


def test_unreachable_agent_and_outage_after_sync(demo_db: Path, tmp_path: Path) -> None:
    down = open_source("milady+http://127.0.0.1:1", settings(tmp_path / "down"))
    reason = down.unavailable_reason() or ""
    assert reason.startswith("cannot reach the agent at http://127.0.0.1:1")
    for read in (down.count, lambda: down.summaries(5, 0), lambda: list(down.iter_steps())):
        with pytest.raises(SourceUnavailable, match="cannot reach the agent"):
            read()
    with AgentStandIn(demo_db) as agent:
        src = source(agent, tmp_path / "up")
        assert src.count() == 400
    time.sleep(0.05)
    assert "cannot reach the agent" in (src.sync(force=True) or "")
    assert "cannot reach the agent" in (src.unavailable_reason() or "")
    # Issue 23: an agent that cannot be read is an error, not a silently stale listing.
    with pytest.raises(SourceUnavailable, match="cannot reach the agent"):
        src.count()


@pytest.mark.parametrize("spec", ["milady+http://", "milady+ftp://host:1", "milady+http://h:99999"])
def test_bad_agent_urls_never_crash(spec: str, tmp_path: Path) -> None:
    src = open_source(spec, settings(tmp_path))
    reason = src.unavailable_reason() or ""
    assert reason.startswith(("bad agent URL", "cannot reach", "unsupported trajectory source"))
    with pytest.raises(SourceUnavailable, match=r"bad agent URL|cannot reach|unsupported"):
        src.count()
