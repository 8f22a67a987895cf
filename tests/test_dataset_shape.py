"""Datasets shaped like an agent's work (issue 15): calls by purpose (``purpose`` or
``actionType``) and model, trajectories by reward (``minReward``, ``topFraction`` on
``totalReward`` or ``aiJudgeReward``), on SQLite and PostgreSQL alike; a reward the
source never fills is a 400, not an empty dataset."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_datasets import Lab, call, make_db
from trajectories.kit import pg_database, raw_rows

from milady_lab.datasets import build as ds
from milady_lab.errors import InputError
from milady_lab.trajectories import open_source

#: id → (calls, totalReward, aiJudgeReward); newest first (start times 6 … 1).
TRAJECTORIES: dict[str, tuple[list[dict[str, Any]], float, float | None]] = {
    "t1": (
        [
            call("t1 respond?", "yes", purpose="should_respond"),
            call("t1 say", "hello", purpose="response", actionType="REPLY"),
        ],
        0.9,
        0.2,
    ),
    "t2": ([call("t2 plan", "post", purpose="action_planning", model="m-2")], 0.5, None),
    "t3": ([call("t3 say", "hi", purpose="response")], 0.1, 0.8),
    "t4": ([call("t4 respond?", "no", purpose="should_respond")], -0.3, None),
    "t5": ([call("t5 say", "hey", purpose="response", model="m-2")], 0.7, 0.4),
    "t6": ([call("t6 respond?", "maybe", purpose="other", actionType="should_respond")], 0.0, None),
}


def _db(path: Path, rewards: bool = True) -> Path:
    rows = [(tid, 7 - i, calls) for i, (tid, (calls, _, _)) in enumerate(TRAJECTORIES.items())]
    make_db(path, rows)
    if rewards:
        with sqlite3.connect(path) as conn:
            for tid, (_, total, judge) in TRAJECTORIES.items():
                conn.execute(
                    "UPDATE trajectories SET total_reward = ?, ai_judge_reward = ? WHERE id = ?",
                    (total, judge, tid),
                )
    return path


class ShapeLab(Lab):
    """A ``Lab`` over the test trajectories, read from SQLite or from PostgreSQL."""

    def __init__(self, tmp: Path, kind: str, postgres_url: str | None, rewards: bool) -> None:
        super().__init__(tmp, [])
        db = _db(tmp / "shaped.sqlite", rewards)
        target = str(db) if kind == "sqlite" else pg_database(postgres_url or "", raw_rows(db))
        self.source = open_source(target, self.settings)

    def chosen(self, **body: Any) -> dict[str, list[str]]:
        """trajectory id → the replies a build keeps of it; checks preview agrees."""
        rec = self.build(**body)
        out: dict[str, list[str]] = {}
        for ex in self.examples(rec):
            out.setdefault(ex["metadata"]["trajectoryId"], []).append(ex["messages"][-1]["content"])
        counts = ds.preview(self.source, ds.BuildOptions.from_body(body))
        assert (counts["trajectoryCount"], counts["exampleCount"]) == (
            rec["trajectoryCount"],
            rec["exampleCount"],
        )
        assert rec["trajectoryCount"] == len(out)
        return {k: sorted(v) for k, v in out.items()}


@pytest.fixture(params=["sqlite", "postgres"])
def shaped(request: pytest.FixtureRequest, tmp_path: Path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None

    def make(rewards: bool = True) -> ShapeLab:
        return ShapeLab(tmp_path, request.param, url, rewards)

    return make


def test_purpose_matches_purpose_or_action_type_and_model_the_caller(shaped) -> None:
    lab = shaped()
    assert lab.chosen(purpose="should_respond") == {"t1": ["yes"], "t4": ["no"], "t6": ["maybe"]}
    assert lab.chosen(purpose=["action_planning", "REPLY"]) == {"t1": ["hello"], "t2": ["post"]}
    assert lab.chosen(model="m-2") == {"t2": ["post"], "t5": ["hey"]}
    assert lab.chosen(purpose="response", model=["m-2"]) == {"t5": ["hey"]}
    # Trajectories qualify on the calls the filter keeps.
    assert lab.chosen(purpose=["should_respond", "response"], minLlmCallsPerTrajectory=2) == {
        "t1": ["hello", "yes"]
    }
    with pytest.raises(InputError, match=r"no trajectory qualifies.*purpose='nobody'"):
        lab.build(purpose="nobody")


def test_min_reward_and_top_fraction_select_trajectories_by_reward(shaped) -> None:
    lab = shaped()
    assert set(lab.chosen(minReward=0.5)) == {"t1", "t2", "t5"}
    assert set(lab.chosen(minReward=0.5, rewardField="aiJudgeReward")) == {"t3"}
    assert set(lab.chosen(minReward=-1)) == set(TRAJECTORIES)
    # The best half by reward (ceil(6 × 0.5) = 3), then within the other filters.
    assert set(lab.chosen(topFraction=0.5)) == {"t1", "t5", "t2"}
    assert set(lab.chosen(topFraction=0.5, purpose="response")) == {"t1", "t5"}
    assert set(lab.chosen(topFraction=0.01)) == {"t1"}  # at least one
    assert set(lab.chosen(topFraction=0.5, rewardField="aiJudgeReward")) == {"t3", "t5", "t1"}
    # limit caps what the fraction kept, newest first.
    assert set(lab.chosen(topFraction=0.5, limit=2)) == {"t1", "t2"}
    rec = lab.build(topFraction=0.5, purpose=["response"], minReward=0.0)
    assert rec["options"]["topFraction"] == 0.5 and rec["options"]["purpose"] == "response"
    assert rec["options"]["rewardField"] == "totalReward" and rec["options"]["minReward"] == 0.0


def test_a_reward_the_source_never_fills_is_an_input_error(shaped) -> None:
    lab = shaped(rewards=False)  # every totalReward 0, every aiJudgeReward null
    for body in (
        {"minReward": 0},
        {"topFraction": 0.5},
        {"minReward": 0.1, "rewardField": "aiJudgeReward"},
    ):
        field = body.get("rewardField", "totalReward")
        with pytest.raises(InputError, match=f"no trajectory in this source has a {field}"):
            lab.build(**body)
        with pytest.raises(InputError, match="zero or null"):
            ds.preview(lab.source, ds.BuildOptions.from_body(body))
    assert lab.entries() == []  # nothing written
    assert set(lab.chosen(purpose="should_respond")) == {"t1", "t4", "t6"}  # others still work


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rewardField": "totalReward"}, "rewardField applies to minReward or topFraction"),
        ({"rewardField": "score", "minReward": 1}, "rewardField must be one of"),
        ({"topFraction": 0}, "topFraction must be greater than 0"),
        ({"topFraction": 1.5}, "topFraction must be at most 1"),
        ({"minReward": "high"}, "minReward must be a number"),
        ({"purpose": []}, "purpose must name at least one value"),
        ({"model": [3]}, "model must be a string or a list of strings"),
    ],
)
def test_bad_shape_filters_are_input_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        ds.BuildOptions.from_body(body)


def test_cli_builds_by_purpose_and_reward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from milady_lab.cli import main

    db = _db(tmp_path / "cli.sqlite")
    base = ["--home", str(tmp_path / "home"), "--trajectories", str(db)]
    code = main([*base, "datasets", "preview", "--purpose", "should_respond", "--purpose",
                 "action_planning", "--json"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["trajectoryCount"] == 4  # t1 t2 t4 t6
    code = main([*base, "datasets", "build", "--top-fraction", "0.5", "--reward-field",
                 "aiJudgeReward", "--json"])  # fmt: skip
    assert code == 0
    rec = json.loads(capsys.readouterr().out)["dataset"]
    assert rec["trajectoryCount"] == 3 and rec["options"]["rewardField"] == "aiJudgeReward"
    empty = _db(tmp_path / "none.sqlite", rewards=False)
    code = main(["--home", str(tmp_path / "home"), "--trajectories", str(empty), "datasets",
                 "build", "--min-reward", "0.5"])  # fmt: skip
    assert code == 2 and "zero or null" in capsys.readouterr().err
