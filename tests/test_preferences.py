"""Preference datasets (issue 27): ``kind: "pairs"`` (DPO) and ``kind: "labelled"`` (KTO)
from scenario groups, rewards and the agent's own failures, on SQLite and PostgreSQL;
counts are computed here from the rows' description, not by the builder's code."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_datasets import Lab
from trajectories.kit import pg_database, raw_rows

from milady_lab.datasets import build as ds
from milady_lab.demo import COLUMNS, INSERT_SQL, TABLE_DDL
from milady_lab.errors import InputError
from milady_lab.trajectories import open_source

FORMAT = (
    "Answer only with <response><thought>why</thought><actions>ACTION</actions>"
    "<text>what you say</text></response>."
)
SYSTEM = f"You are Milady.\n# Format\n{FORMAT}"
OFFER = "\n# Available actions\nREPLY, IGNORE, NONE\n# Task\nReply."


#: User prompts whose system prompt shows no format (so no format check applies to them).
BRIEF = ("fmt2?", "err?", "no format here")


def system_of(user: str) -> str:
    return "Be brief." if user in BRIEF or "TOON only" in user else SYSTEM


#: elizaOS 2.x prompts: the actions offered, then the TOON the reply must be, by example.
TOON_OFFER = "Possible response actions: REPLY, IGNORE\n"
TOON_ASK = (
    "\n\noutput:\nTOON only. Return exactly one TOON document.\n\nExample:\n"
    "thought: Your thought here\nactions[1]:\n  - name: REPLY\ntext: Your message here"
)


def toon(action: str, text: str) -> str:
    return f"thought: t\nactions[1]:\n  - name: {action}\ntext: {text}"


def xml(action: str, text: str) -> str:
    body = f"<thought>t</thought><actions>{action}</actions><text>{text}</text>"
    return f"<response>{body}</response>"


BAD_FORMAT = "formatRejected"


def traj(tid: str, reward: float, calls: list[tuple[str, str, str]], **more: Any) -> dict:
    """A trajectory: calls are (user prompt, reply, expected label rule with no reward)."""
    return {"id": tid, "reward": reward, "calls": calls, "status": "completed", **more}


#: Rollouts of scenario s1 in batch b1 (two turns each), a tied batch b2, three
#: trajectories without a scenario sharing one prompt, and signals of every kind.
TRAJECTORIES = [
    *(
        traj(
            f"r{i}",
            reward,
            [
                (f"s1 turn one, rollout {i}{OFFER}", xml("REPLY", f"one-{i}"), "checksPassed"),
                (f"s1 turn two, rollout {i}{OFFER}", xml("REPLY", f"two-{i}"), "checksPassed"),
            ],
            scenario="s1",
            batch="b1",
        )
        for i, reward in enumerate((1.0, 0.5, 0.5, 0.0))
    ),
    *(
        traj(
            f"tie{i}",
            0.3,
            [(f"s1 again {i}{OFFER}", xml("NONE", f"tie-{i}"), "checksPassed")],
            scenario="s1",
            batch="b2",
        )
        for i in range(2)
    ),
    *(
        traj(f"p{i}", reward, [("same prompt?" + OFFER, xml("REPLY", f"same-{i}"), "checksPassed")])
        for i, reward in enumerate((0.8, 0.2, 0.2))
    ),
    traj("bad-format", 0.9, [("fmt?" + OFFER, "<response><thought>oops</response>", BAD_FORMAT)]),
    traj(
        "no-text-tag", 0.9, [("fmt2?", xml("REPLY", "x").replace("<text>x</text>", ""), BAD_FORMAT)]
    ),
    traj("bad-action", 0.9, [("act?" + OFFER, xml("DANCE", "no"), "actionNotOffered")]),
    traj("errored", 0.9, [("err?", "plain words", "statusFailed")], status="error"),
    traj(
        "timed-out",
        0.9,
        [("slow?" + OFFER, xml("REPLY", "late"), "statusFailed")],
        status="timeout",
    ),
    traj("plain", 0.7, [("no format here", "just text", None)]),
    # TOON: prose instead of the document; an action not offered; a good reply in a
    # trajectory whose totalReward is the agent's default 0 (not a rating: no scenario).
    traj("toon-prose", 0.9, [(f"{TOON_OFFER}t1?{TOON_ASK}", "Sure, I can help!", BAD_FORMAT)]),
    traj(
        "toon-dance", 0.9, [(f"{TOON_OFFER}t2?{TOON_ASK}", toon("DANCE", "x"), "actionNotOffered")]
    ),
    traj("toon-ok", 0.0, [(f"{TOON_OFFER}t3?{TOON_ASK}", toon("REPLY", "hi"), "checksPassed")]),
]


def write_db(path: Path, rewards: bool = True) -> Path:
    """The trajectories in Milady's table (scenario and batch columns included)."""
    conn = sqlite3.connect(path)
    conn.execute(TABLE_DDL)
    for k, t in enumerate(TRAJECTORIES):
        start = 1_000_000 - k  # listed in this order (newest first)
        steps = [
            {"stepId": f"{t['id']}-s{i}", "stepNumber": i, "timestamp": start + i,
             "llmCalls": [{"callId": f"{t['id']}-c{i}", "model": "m", "purpose": "response",
                           "systemPrompt": system_of(user),
                           "userPrompt": user, "response": reply}],
             "providerAccesses": []}
            for i, (user, reply, _) in enumerate(t["calls"])
        ]  # fmt: skip
        row = {
            "id": t["id"], "trajectory_id": t["id"], "agent_id": "a", "source": "chat",
            "status": t["status"], "start_time": start, "step_count": len(steps),
            "llm_call_count": len(steps), "total_reward": t["reward"] if rewards else 0.0,
            "steps_json": json.dumps(steps), "metadata": "{}", "created_at": "x",
            "updated_at": "x", "scenario_id": t.get("scenario"), "batch_id": t.get("batch"),
            "provider_access_count": 0, "total_prompt_tokens": 0, "total_completion_tokens": 0,
        }  # fmt: skip
        conn.execute(INSERT_SQL, [row.get(c) for c in COLUMNS])
    conn.commit()
    conn.close()
    return path


def expected_pairs(min_gap: float = 0.0) -> dict[tuple[str, str], str]:
    """(chosen reply, rejected reply) → rule, by the rule as documented: per group the
    best (first listed on ties) against every call strictly lower by ≥ min_gap."""
    groups: dict[Any, list[tuple[float, str]]] = {}
    for t in TRAJECTORIES:
        for n, (user, reply, _) in enumerate(t["calls"]):
            if "scenario" in t:
                key: Any = ("scenario", t["scenario"], t["batch"], n)
            else:
                key = ("prompt", system_of(user), user)
            groups.setdefault(key, []).append((t["reward"], reply))
    out = {}
    for key, members in groups.items():
        best = max(members, key=lambda m: m[0])  # max() keeps the first of ties
        for reward, reply in members:
            if best[0] - reward > 0 and best[0] - reward >= min_gap:
                out[(best[1], reply)] = key[0]
    return out


class PrefLab(Lab):
    def __init__(self, tmp: Path, kind: str, postgres_url: str | None, rewards: bool) -> None:
        super().__init__(tmp, [])
        db = write_db(tmp / f"prefs-{rewards}.sqlite", rewards)
        target = str(db) if kind == "sqlite" else pg_database(postgres_url or "", raw_rows(db))
        self.source = open_source(target, self.settings)


@pytest.fixture(params=["sqlite", "postgres"])
def prefs(request: pytest.FixtureRequest, tmp_path: Path):
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None

    def make(rewards: bool = True) -> PrefLab:
        return PrefLab(tmp_path, request.param, url, rewards)

    return make


@pytest.mark.parametrize("gap", [None, 0.5])
def test_pairs_from_scenario_groups_and_identical_prompts(prefs, gap) -> None:
    lab = prefs()
    body: dict[str, Any] = {"kind": "pairs", **({"minRewardGap": gap} if gap else {})}
    rec = lab.build(**body)
    lines = lab.examples(rec)
    got = {(ln["chosen"][0]["content"], ln["rejected"][0]["content"]): ln for ln in lines}
    want = expected_pairs(gap or 0.0)
    assert set(got) == set(want) and len(lines) == len(want)
    assert {k: ln["metadata"]["rule"] for k, ln in got.items()} == want
    assert rec["kind"] == "pairs" and rec["pairCount"] == rec["exampleCount"] == len(want)
    assert rec["trainCount"] + rec["validCount"] == len(want)
    for ln in lines:
        meta = ln["metadata"]
        assert meta["chosenReward"] > meta["rejectedReward"]
        assert [m["role"] for m in ln["prompt"]] == ["system", "user"]
        assert ln["chosen"][0]["role"] == ln["rejected"][0]["role"] == "assistant"
        # The prompt is the chosen call's; identical prompts are said to be.
        assert meta["samePrompt"] == (meta["rule"] == "prompt")
    sides = ("chosenTrajectoryId", "rejectedTrajectoryId")
    ids = {ln["metadata"][k] for ln in lines for k in sides}
    assert rec["trajectoryCount"] == len(ids)
    preview = ds.preview(lab.source, ds.BuildOptions.from_body(body))
    assert preview["pairCount"] == len(want)
    assert lab.store.get_dataset(rec["id"])["pairCount"] == len(want)


def test_labelled_by_reward_threshold_and_signals(prefs) -> None:
    lab = prefs()
    rec = lab.build(kind="labelled", labelThreshold=0.5)
    want: dict[str, int] = {}
    for t in TRAJECTORIES:
        for _, _, signal in t["calls"]:
            # Per-call failures first, then the reward, then the trajectory's status.
            # A totalReward of exactly 0 outside a scenario is the agent's default: no rating.
            rated = t["reward"] != 0 or "scenario" in t
            if signal not in ("formatRejected", "actionNotOffered") and rated:
                signal = "rewardDesirable" if t["reward"] >= 0.5 else "rewardUndesirable"
            if signal is not None:
                want[signal] = want.get(signal, 0) + 1
    assert rec["labelCounts"] == want
    lines = lab.examples(rec)
    assert len(lines) == rec["exampleCount"] == sum(want.values())
    for ln in lines:
        assert ln["label"] is (ln["metadata"]["rule"] in ("rewardDesirable", "checksPassed"))
        assert ln["messages"][-1]["role"] == "assistant"


def test_labelled_without_rewards_uses_verifiable_signals_only(prefs) -> None:
    lab = prefs(rewards=False)
    rec = lab.build(kind="labelled")
    want: dict[str, int] = {}
    for t in TRAJECTORIES:
        for _, _, signal in t["calls"]:
            if signal is not None:
                want[signal] = want.get(signal, 0) + 1
    assert rec["labelCounts"] == want
    labels = [ln["label"] for ln in lab.examples(rec)]
    assert labels.count(True) == want["checksPassed"]
    assert labels.count(False) == sum(want.values()) - want["checksPassed"]
    with pytest.raises(InputError, match="no trajectory in this source has a totalReward"):
        lab.build(kind="pairs")
    with pytest.raises(InputError, match="labelThreshold labels by totalReward"):
        lab.build(kind="labelled", labelThreshold=0.5)
    assert lab.entries() == [rec["id"]]  # the refused builds wrote nothing


def test_no_pairs_is_an_input_error_saying_why(tmp_path: Path) -> None:
    from test_datasets import call

    one = Lab(tmp_path, [("a", 2, [call("hi", "hello")]), ("b", 1, [call("other", "reply")])])
    with sqlite3.connect(one.settings.trajectories) as conn:
        conn.execute("UPDATE trajectories SET total_reward = 0.5")
    with pytest.raises(InputError, match="share a prompt context"):
        one.build(kind="pairs")
    assert one.entries() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "dpo"}, "kind"),
        ({"kind": "labelled", "minRewardGap": 0.1}, "minRewardGap applies"),
        ({"kind": "pairs", "labelThreshold": 0.1}, "labelThreshold applies"),
        ({"kind": "pairs", "minRewardGap": -1}, "minRewardGap must be at least 0"),
    ],
)
def test_bad_preference_options(body, message) -> None:
    with pytest.raises(InputError, match=message):
        ds.BuildOptions.from_body(body)


def test_options_round_trip_and_reward_field_alone() -> None:
    body = {"kind": "pairs", "minRewardGap": 0.2, "rewardField": "aiJudgeReward"}
    opts = ds.BuildOptions.from_body(body)
    assert ds.BuildOptions.from_body(opts.as_body()) == opts
    assert opts.as_body()["kind"] == "pairs" and opts.shape.reward_field == "aiJudgeReward"
    assert "kind" not in ds.BuildOptions.from_body({}).as_body()  # SFT records stay as they were
