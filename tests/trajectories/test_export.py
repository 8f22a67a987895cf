"""ExportSource on real export files: every accepted shape, folders, bad files, reloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from milady_lab.demo import COLUMNS
from milady_lab.trajectories import SourceUnavailable, open_source
from milady_lab.trajectories.export import ExportSource, steps_from_api
from milady_lab.trajectories.sqlite import SQLiteSource

from .kit import AgentStandIn, raw_rows, write_api_export

STEPS = [{"stepId": "s0", "llmCalls": [{"userPrompt": "u", "response": "r", "model": "m"}]}]
ENTRY = {"id": "t1", "agentId": "a", "source": "chat", "status": "completed",
         "startTime": 100, "llmCallCount": 1}  # fmt: skip


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "entry",
    [
        {**ENTRY, "llmCalls": [{"stepId": "s0", "userPrompt": "u", "response": "r",
                                "model": "m"}], "providerAccesses": []},
        {"trajectory": ENTRY, "llmCalls": [{"stepId": "s0", "userPrompt": "u",
                                            "response": "r", "model": "m"}]},
        {"id": "t1", "agent_id": "a", "source": "chat", "status": "completed",
         "start_time": 100, "llm_call_count": 1, "steps_json": json.dumps(STEPS)},
        {**ENTRY, "steps": STEPS},
        {**ENTRY, "stepsJson": {"steps": STEPS}},
    ],
)  # fmt: skip
@pytest.mark.parametrize("wrap", [False, True])
def test_every_entry_shape(tmp_path: Path, entry: dict, wrap: bool) -> None:
    doc = {"trajectories": [entry]} if wrap else [entry]
    src = open_source(str(write(tmp_path / "e.json", doc)))
    assert isinstance(src, ExportSource)
    assert src.unavailable_reason() is None
    (row,) = src.summaries(10, 0).to_dicts()
    assert (row["id"], row["source"], row["startTime"], row["llmCallCount"]) == (
        "t1", "chat", 100, 1
    )  # fmt: skip
    calls = src.llm_calls_frame().collect()
    assert calls.select("trajectoryId", "stepId", "userPrompt", "response", "model").rows() == [
        ("t1", "s0", "u", "r", "m")
    ]


def test_folder_of_files_equals_the_database(demo_db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in raw_rows(demo_db)]
    write(folder / "a.json", rows[:150])
    write(folder / "b.JSON", {"trajectories": rows[150:]})
    (folder / "notes.txt").write_text("ignored")
    src = open_source(str(folder))
    expected = SQLiteSource(demo_db)
    assert src.summaries_frame().collect().equals(expected.summaries_frame().collect())
    assert src.llm_calls_frame().collect().equals(expected.llm_calls_frame().collect())


def test_api_shape_keeps_call_order_across_repeated_step_ids(demo_db: Path, tmp_path: Path) -> None:
    calls = [{"stepId": s, "userPrompt": str(i)} for i, s in enumerate("aaba")]
    steps = steps_from_api(calls, [{"stepId": "b", "providerName": "p"}, {"stepId": "z"}])
    assert [s["stepId"] for s in steps] == ["a", "b", "a", "z"]
    assert [c["userPrompt"] for s in steps for c in s["llmCalls"]] == ["0", "1", "2", "3"]
    assert steps[1]["providerAccesses"] == [{"providerName": "p"}]
    with AgentStandIn(demo_db) as agent:
        ids = SQLiteSource(demo_db).summaries(40, 0)["id"].to_list()
        path = write_api_export(agent, ids, tmp_path / "api.json", wrap=False)
    src = open_source(str(path))
    for tid in ids:
        got, expected = src.detail(tid), SQLiteSource(demo_db).detail(tid)
        assert got is not None and expected is not None
        for key in ("aiJudgeReward", "archetype", "episodeLength"):  # not in the API's shapes
            got.pop(key), expected.pop(key)
        assert got == expected


def test_files_are_reloaded_when_they_change(tmp_path: Path) -> None:
    path = write(tmp_path / "e.json", [{**ENTRY, "steps": STEPS}])
    src = open_source(str(path))
    assert src.count() == 1
    write(path, [{**ENTRY, "steps": STEPS}, {**ENTRY, "id": "t2", "startTime": 200}])
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    src._checked = float("-inf")  # skip the once-a-second throttle
    assert src.count() == 2
    assert src.summaries(1, 0)["id"][0] == "t2"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p / "missing.json", "no export at"),
        (lambda p: p, "no .json files in"),
        (lambda p: (p / "bad.json").write_text("{not json") and p / "bad.json",
         "is not a trajectories export"),
    ],
)  # fmt: skip
def test_unreadable_exports_fail_with_the_reason(tmp_path: Path, make, reason: str) -> None:
    src = open_source(str(make(tmp_path)))
    assert isinstance(src, ExportSource)
    assert reason in (src.unavailable_reason() or "")
    # Never an empty listing that looks like an agent with no trajectories (issue 23).
    for read in (src.count, lambda: src.summaries(10, 0), lambda: src.detail("x"),
                 lambda: src.llm_calls_frame().collect()):  # fmt: skip
        with pytest.raises(SourceUnavailable, match=reason):
            read()


def test_odd_entries_are_skipped_not_fatal(tmp_path: Path) -> None:
    doc = [
        None,
        5,
        "x",
        {},
        {"id": None},
        {**ENTRY, "steps_json": "not json"},
        {**ENTRY, "id": "t3", "startTime": "2026-01-01T00:00:00Z", "metadata": {"a": 1}},
    ]
    src = open_source(str(write(tmp_path / "odd.json", doc)))
    frame = src.summaries_frame().collect()
    assert frame["id"].to_list() == ["t3", "t1"]
    assert frame["startTime"][0] == 1767225600000
    assert src.detail("t1")["llmCalls"] == []
