"""Demo data: Milady's exact table, deterministic per seed, realistic and messy, atomic.

The content tests read the ``regular`` shape (the suite's ``demo_db``); the agent shape,
the default, has its own in ``tests/agent_shape``. The CLI tests exercise the default.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from milady_lab.cli import main
from milady_lab.demo import COLUMNS, write_demo_db
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import raw_rows

SPEC_COLUMNS = [
    ("id", "TEXT", 0, None, 1), ("trajectory_id", "TEXT", 0, None, 0),
    ("agent_id", "TEXT", 1, None, 0), ("source", "TEXT", 1, "'runtime'", 0),
    ("status", "TEXT", 1, "'completed'", 0), ("start_time", "INTEGER", 1, None, 0),
    ("end_time", "INTEGER", 0, None, 0), ("duration_ms", "INTEGER", 0, None, 0),
    ("step_count", "INTEGER", 1, "0", 0), ("llm_call_count", "INTEGER", 1, "0", 0),
    ("provider_access_count", "INTEGER", 1, "0", 0),
    ("total_prompt_tokens", "INTEGER", 1, "0", 0),
    ("total_completion_tokens", "INTEGER", 1, "0", 0), ("total_reward", "REAL", 1, "0", 0),
    ("steps_json", "TEXT", 1, "'[]'", 0), ("metadata", "TEXT", 1, "'{}'", 0),
    ("created_at", "TEXT", 1, None, 0), ("updated_at", "TEXT", 1, None, 0),
    ("episode_length", "INTEGER", 0, None, 0), ("ai_judge_reward", "REAL", 0, None, 0),
    ("ai_judge_reasoning", "TEXT", 0, None, 0), ("archetype", "TEXT", 0, None, 0),
    # Added by @elizaos/agent 2.x's writer (ALTER TABLE … ADD COLUMN, so they sit last).
    ("scenario_id", "TEXT", 0, None, 0), ("batch_id", "TEXT", 0, None, 0),
]  # fmt: skip
REPLY = re.compile(
    r"<response><thought>[^<]+</thought><actions>[A-Z_]+</actions><text>[^<]+</text></response>"
)


def table(db: Path) -> pl.DataFrame:
    return pl.DataFrame(raw_rows(db), schema=list(COLUMNS), orient="row", infer_schema_length=None)


def test_exact_milady_schema_and_listing_index(demo_db: Path) -> None:
    conn = sqlite3.connect(demo_db)
    info = [r[1:] for r in conn.execute("PRAGMA table_info(trajectories)")]
    index = conn.execute("PRAGMA index_xinfo(trajectories_listing)").fetchall()
    conn.close()
    assert info == SPEC_COLUMNS
    assert [(r[2], r[3]) for r in index if r[5]] == [("start_time", 1), ("id", 0)]


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    a = write_demo_db(tmp_path / "a.sqlite", count=120, seed=11, shape="regular")
    b = write_demo_db(tmp_path / "b.sqlite", count=120, seed=11, shape="regular")
    c = write_demo_db(tmp_path / "c.sqlite", count=120, seed=12, shape="regular")
    assert raw_rows(a) == raw_rows(b)
    assert raw_rows(a) != raw_rows(c)


def test_realistic_mix(demo_db: Path) -> None:
    t = table(demo_db)
    assert set(t["source"]) == {"chat", "autonomy", "telegram", "discord", "api", "runtime"}
    assert set(t["status"]) == {"completed", "error", "timeout", "active"}
    assert (t["status"] == "completed").mean() > 0.75
    active = t.filter(pl.col("status") == "active")
    assert active["end_time"].is_null().all() and active["duration_ms"].is_null().all()
    done = t.filter(pl.col("status") != "active")
    assert (done["end_time"] - done["start_time"]).equals(done["duration_ms"], check_names=False)
    assert t["provider_access_count"].sum() > 0 and t["total_prompt_tokens"].sum() > 0
    assert 3.5 < t["llm_call_count"].mean() < 6.5
    assert t["id"].n_unique() == 400 and (t["id"] == t["trajectory_id"]).all()


def test_stored_counts_match_the_steps_of_json_rows(demo_db: Path) -> None:
    t = table(demo_db)
    calls = SQLiteSource(demo_db).llm_calls_frame().collect()
    parsed = dict(calls.group_by("trajectoryId").len().rows())
    readable = t.filter(pl.col("steps_json").str.contains(r"^[\[{]\"|^\[\]$"))
    mismatched = [
        r["id"] for r in readable.iter_rows(named=True)
        if parsed.get(r["id"], 0) != r["llm_call_count"]
    ]  # fmt: skip
    assert mismatched == []


def test_each_kind_of_mess_in_realistic_proportions(tmp_path: Path) -> None:
    db = write_demo_db(tmp_path / "m.sqlite", count=2000, seed=3, shape="regular")
    steps = table(db)["steps_json"]
    share = {
        "snake": steps.str.contains('"llm_calls"', literal=True).mean(),
        "object": steps.str.starts_with('{"steps"').mean(),
        "not_json": (~steps.str.contains(r'^(\[\{"|\[\]$|\{"steps")')).mean(),
    }
    assert 0.04 < share["snake"] < 0.11, share
    assert 0.02 < share["object"] < 0.07, share
    assert 0.003 < share["not_json"] < 0.03, share
    calls = SQLiteSource(db).llm_calls_frame().collect()
    assert 0.05 < calls["promptTokens"].is_null().mean() < 0.16
    assert 0.005 < (calls["userPrompt"].str.strip_chars() == "").mean() < 0.05
    assert 0.01 < (calls["response"] == "").mean() < 0.08
    assert 0.005 < calls["model"].is_null().mean() < 0.05


def test_replies_are_short_consistent_markup(demo_db: Path) -> None:
    calls = SQLiteSource(demo_db).llm_calls_frame().collect()
    replies = calls.filter(pl.col("response") != "")["response"]
    assert replies.map_elements(lambda r: bool(REPLY.fullmatch(r)), return_dtype=pl.Boolean).all()
    tokens = replies.str.len_chars() / 4  # ~4 characters a token
    assert 25 < tokens.median() < 120 and tokens.max() < 160
    system = calls["systemPrompt"].drop_nulls()
    assert system.str.contains("Milady").all() and 200 < system.str.len_chars().median() < 900
    users = calls.filter(pl.col("purpose") == "response")["userPrompt"]
    assert users.str.contains("# Available actions").mean() > 0.9


def test_interrupted_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = write_demo_db(tmp_path / "t.sqlite", count=10, seed=1)
    before = raw_rows(target)

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_demo_db(target, count=50, seed=2, progress=boom, batch=10)
    with pytest.raises(KeyboardInterrupt):
        write_demo_db(tmp_path / "new.sqlite", count=50, progress=boom, batch=10)
    assert raw_rows(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.sqlite"]


def test_cli_demo_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "sub" / "d.sqlite"
    assert main(["demo-data", "--db", str(db), "--count", "25", "--seed", "4", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said == {"path": str(db), "count": 25, "seed": 4, "shape": "agent"}
    assert SQLiteSource(db).count() == 25
    assert main(["--trajectories", str(db), "demo-data", "--count", "5"]) == 0
    assert "wrote 5 agent-shaped trajectories" in capsys.readouterr().out
    argv = ["--db", str(db), "--count", "5", "--shape", "regular"]
    assert main(["demo-data", *argv]) == 0
    assert "wrote 5 regular trajectories" in capsys.readouterr().out
    for argv in (
        ["--db", str(db), "--count", "0"],
        ["--db", str(db), "--count", "many"],
        ["--db", str(db), "--seed", "-1"],
        ["--db", "postgresql://x/y"],
        ["--db", str(db), "--shape", "real"],
    ):
        assert main(["demo-data", *argv]) == 2
        assert capsys.readouterr().err.startswith("milady-lab: ")
    assert SQLiteSource(db).count() == 5


def test_cli_demo_data_if_missing_writes_only_where_the_lab_reads_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make lab``'s step: demo data in the home when no agent was found, never over an
    agent's source or an earlier demo set; the home and the source printed either way."""
    for key in ("MILADY_LAB_TRAJECTORIES", "MILADY_LAB_HOME", "MILADY_LAB_AGENT_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    home = tmp_path / "lab"
    common = ["--home", str(home), "--agent-config", str(tmp_path / "none" / "milady.json")]
    argv = [*common, "demo-data", "--if-missing", "--count", "7", "--seed", "1"]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "no agent found: wrote 7 agent-shaped demo trajectories" in said
    assert f"home:         {home}" in said
    assert f"trajectories: {home / 'trajectories.sqlite'}" in said
    assert SQLiteSource(home / "trajectories.sqlite").count() == 7
    assert main([*argv, "--json"]) == 0  # already there: left alone
    body = json.loads(capsys.readouterr().out)
    assert body["wroteDemoData"] is False and body["home"] == str(home)
    agents = write_demo_db(tmp_path / "agent.sqlite", count=3, seed=2, shape="regular")
    other = tmp_path / "other"
    assert main(["--trajectories", str(agents), "--home", str(other), *argv[4:]]) == 0
    said = capsys.readouterr().out
    assert "wrote" not in said and f"trajectories: {agents}" in said
    assert not (other / "trajectories.sqlite").exists()


def test_lean_rows_are_regular_ones(tmp_path: Path) -> None:
    """``lean`` (one short call a row, for the million-row listing benchmark) shapes the
    regular generator's rows; with the agent shape, the default, it is refused."""
    lean = write_demo_db(tmp_path / "lean.sqlite", count=20, seed=1, lean=True, shape="regular")
    assert (table(lean)["llm_call_count"] <= 1).all()
    with pytest.raises(ValueError, match='shape="regular"'):
        write_demo_db(tmp_path / "agent.sqlite", count=20, seed=1, lean=True)
    assert not (tmp_path / "agent.sqlite").exists()
