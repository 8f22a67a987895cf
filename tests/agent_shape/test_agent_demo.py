"""Agent-shaped demo data: read through the project's readers, purposes in realistic
proportions, replies in the format the templates ask for (mistakes at their small
rate), answers that follow from the prompt, long prompts, rewarded rollouts, same bytes
per seed."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from milady_lab.cli import main
from milady_lab.config import Settings
from milady_lab.demo import write_demo_db
from milady_lab.service import TrainingService
from milady_lab.trajectories.sqlite import SQLiteSource

COUNT = 400
HANDLER_KEYS = ("thought", "actions", "providers", "text", "simple")
PLACEHOLDERS = ("Your message here", "Your thought here", "Your reasoning here")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?:(?: (.*))?")
_ENTRY = re.compile(r"  - name: ([A-Z_]+)")
_NESTED = re.compile(r"    params:|      [A-Za-z_]+: .*")


def raw_rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM trajectories ORDER BY rowid").fetchall()


def toon(text: str) -> dict[str, Any] | None:
    """A TOON document as the agent reads it: top-level ``key: value`` lines and an
    ``actions[n]:`` list of ``- name:`` entries (with nested params); None otherwise."""
    out: dict[str, Any] = {}
    listing: list[str] | None = None
    for line in text.strip("\n").split("\n"):
        if listing is not None and (entry := _ENTRY.fullmatch(line)):
            listing.append(entry.group(1))
        elif listing is not None and listing and _NESTED.fullmatch(line):
            continue
        elif key := _KEY.fullmatch(line):
            listing = [] if key.group(2) is not None else None
            out[key.group(1)] = listing if listing is not None else (key.group(3) or "")
            if key.group(2) is not None:
                out[f"{key.group(1)}#"] = int(key.group(2))
        else:
            return None
    return out if out else None


def handler_actions(reply: str) -> list[str] | None:
    """The actions of a well-formed message-handler reply; None when it is not one."""
    doc = toon(reply)
    if doc is None or any(k not in doc for k in HANDLER_KEYS):
        return None
    if doc["actions#"] != len(doc["actions"]) or not doc["actions"]:
        return None
    if any(doc[k] in PLACEHOLDERS for k in ("thought", "text")):
        return None
    return doc["actions"]


def offered(prompt: str) -> set[str]:
    line = re.search(r"^Possible response actions: (.*)$", prompt, re.M)
    assert line, "the message handler's prompt lists its actions"
    return set(line.group(1).split(", "))


def received(prompt: str) -> str:
    found = re.search(r"^# Received Message\n[^:\n]+: (.*)$", prompt, re.M)
    assert found
    return found.group(1)


def expected_action(said: str) -> str:
    """What a reader of the last message would do: the rule a model has to learn."""
    rules = (
        (r"follow.up", "SCHEDULE_FOLLOW_UP"), (r"unfollow|stop following", "UNFOLLOW_ROOM"),
        (r"follow this|follow the", "FOLLOW_ROOM"), (r"\bmute\b", "MUTE_ROOM"),
        (r"\btell \w+ (in #\w+ )?that\b|\bmessage \w+", "SEND_MESSAGE"),
        (r"\bdraw\b|image of", "GENERATE_IMAGE"), (r"contacts? as|as a contact", "ADD_CONTACT"),
        (r"who do i know|find my contacts", "SEARCH_CONTACTS"), (r"\bbye\b|^night!", "IGNORE"),
    )  # fmt: skip
    return next((a for pattern, a in rules if re.search(pattern, said)), "REPLY")


def expected_decision(agent: str, said: str) -> str:
    if not re.match(rf"(hey )?@?{agent}\b", said):
        return "IGNORE"
    return "STOP" if re.search(r"stop replying|be quiet|stop\. ", said) else "RESPOND"


@pytest.fixture(scope="module")
def agent_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_db(tmp_path_factory.mktemp("agent") / "t.sqlite", COUNT, 5, shape="agent")


@pytest.fixture(scope="module")
def calls(agent_db: Path) -> pl.DataFrame:
    return SQLiteSource(agent_db).llm_calls_frame().collect()


def test_service_reads_it_and_builds_examples_per_purpose_in_proportion(
    tmp_path: Path, agent_db: Path
) -> None:
    settings = Settings.from_env(home=tmp_path / "h", trajectories=agent_db, cache=tmp_path / "c")
    svc = TrainingService(settings, reconcile=False)
    assert svc.list_trajectories()["total"] == COUNT
    ds = svc.build_dataset({}).dataset
    folder = Path(ds.path or "")
    files = ("train.jsonl", "valid.jsonl")
    lines = [json.loads(x) for f in files for x in (folder / f).read_text().splitlines()]
    assert len(lines) == ds.example_count > COUNT
    share = {p: n / len(lines) for p, n in Counter(x["metadata"]["purpose"] for x in lines).items()}
    assert max(share, key=share.__getitem__) == "response"
    assert share["response"] + share["reply"] > 0.4
    assert 0.12 < share["should_respond"] < 0.35
    for purpose in ("reflection", "multi_step_decision", "post_creation"):
        assert 0.03 < share[purpose] < 0.2, (purpose, share)
    assert 0 < share["image_description"] < 0.05
    assert svc.preview_dataset({"purpose": "should_respond"}).example_count == round(
        share["should_respond"] * len(lines)
    )


def test_message_handler_replies_are_toon_naming_offered_actions(calls: pl.DataFrame) -> None:
    handler = calls.filter(
        (pl.col("purpose") == "response")
        & (pl.col("response") != "")
        & (pl.col("userPrompt").str.strip_chars() != "")  # the demo's blank prompts
    )
    good, bad, named = 0, 0, Counter[str]()
    for prompt, reply in handler.select("userPrompt", "response").iter_rows():
        assert "Return exactly one TOON document" in prompt and "{{" not in prompt
        actions = handler_actions(reply)
        if actions is None or not set(actions) <= offered(prompt):
            bad += 1
            continue
        good += 1
        named[actions[0]] += 1
    assert 0.03 < bad / (good + bad) < 0.2  # the planted mistakes, at a small rate
    assert 0.3 < named["REPLY"] / good <= 0.55  # the majority is not overwhelming
    assert len(named) >= 7


def test_the_right_answer_follows_from_the_last_message(calls: pl.DataFrame) -> None:
    """A rule reading only the last message beats the majority answer by far: a model
    fine-tuned on these records has something to learn."""
    prompted = calls.filter(pl.col("userPrompt").str.strip_chars() != "")
    handler = prompted.filter(pl.col("purpose") == "response")
    hits = total = 0
    for prompt, reply in handler.select("userPrompt", "response").iter_rows():
        if (actions := handler_actions(reply)) and set(actions) <= offered(prompt):
            total += 1
            hits += actions[0] == expected_action(received(prompt))
    assert hits / total > 0.85
    decisions: Counter[str] = Counter()
    hits = total = 0
    for prompt, reply in (
        prompted.filter(pl.col("purpose") == "should_respond")
        .select("userPrompt", "response")
        .iter_rows()
    ):
        doc = toon(reply)
        if doc is None or doc.get("action") not in ("RESPOND", "IGNORE", "STOP"):
            continue
        agent = re.search(r"Decide whether (\S+) should respond", prompt)
        assert agent
        total += 1
        decisions[doc["action"]] += 1
        hits += doc["action"] == expected_decision(agent.group(1), received(prompt))
    assert hits / total > 0.85
    assert max(decisions.values()) / total < 0.6 and min(decisions.values()) / total > 0.05


def test_prompts_are_long_with_a_long_tail(calls: pl.DataFrame) -> None:
    lengths = calls.filter(pl.col("userPrompt").str.strip_chars() != "")["userPrompt"]
    chars = lengths.str.len_chars()
    p50, p90 = chars.quantile(0.5), chars.quantile(0.9)
    assert p50 is not None and p90 is not None
    assert p50 > 4000 and p90 > 1.5 * p50 and chars.max() > 20_000  # type: ignore[operator]
    speakers = calls.filter(pl.col("purpose") == "response")["userPrompt"].str.count_matches(
        r"(?m)^\d\d:\d\d \([^)]*\) \[[0-9a-f-]{36}\] [^:\n]+: "
    )
    assert speakers.median() > 8  # type: ignore[operator]
    system = calls["systemPrompt"].drop_nulls().unique()
    assert system.len() == 4  # four characters


def test_rollouts_of_a_scenario_carry_rewards_to_pair(tmp_path: Path, agent_db: Path) -> None:
    rows = SQLiteSource(agent_db).summaries_frame().collect()
    grouped = rows.filter(pl.col("scenarioId").is_not_null())
    groups = grouped.group_by("scenarioId").agg(
        pl.len(), pl.col("batchId").n_unique().alias("batches"),
        (pl.col("totalReward").max() - pl.col("totalReward").min()).alias("spread"),
    )  # fmt: skip
    # Several rollouts each (the last scenario may be cut by the count), one batch each.
    assert groups.height > 20 and (groups["len"] < 2).sum() <= 1 and (groups["batches"] == 1).all()
    assert (groups["spread"] > 0.2).mean() > 0.5  # some rollouts better, some worse
    assert (grouped["totalReward"] == grouped["aiJudgeReward"]).all()
    settings = Settings.from_env(home=tmp_path / "h", trajectories=agent_db, cache=tmp_path / "c")
    pairs = TrainingService(settings, reconcile=False).preview_dataset({"kind": "pairs"})
    assert (pairs.pair_count or 0) > 10


def test_same_seed_same_bytes_and_the_demo_mess(tmp_path: Path) -> None:
    a = write_demo_db(tmp_path / "a.sqlite", count=1500, seed=3, shape="agent")
    b = write_demo_db(tmp_path / "b.sqlite", count=1500, seed=3, shape="agent")
    assert a.read_bytes() == b.read_bytes()
    c = write_demo_db(tmp_path / "c.sqlite", count=30, seed=4, shape="agent")
    assert raw_rows(c) != raw_rows(a)[:30]
    steps = pl.Series([r[14] for r in raw_rows(a)])  # steps_json
    assert 0.04 < steps.str.contains('"llm_calls"', literal=True).mean() < 0.11  # type: ignore[operator]
    assert 0.02 < steps.str.starts_with('{"steps"').mean() < 0.07  # type: ignore[operator]
    assert 0.003 < (~steps.str.contains(r'^(\[\{"|\[\]$|\{"steps")')).mean() < 0.03  # type: ignore[operator]
    calls = SQLiteSource(a).llm_calls_frame().collect()
    assert 0.05 < calls["promptTokens"].is_null().mean() < 0.16  # type: ignore[operator]
    assert 0.005 < (calls["userPrompt"].str.strip_chars() == "").mean() < 0.05  # type: ignore[operator]
    assert 0.005 < calls["model"].is_null().mean() < 0.05  # type: ignore[operator]
    assert set(calls["actionType"].drop_nulls()) == {"runtime.useModel"}


def test_cli_selects_the_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.sqlite"
    argv = ["demo-data", "--db", str(db), "--count", "12", "--seed", "2", "--shape", "agent"]
    assert main([*argv, "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said == {"path": str(db), "count": 12, "seed": 2, "shape": "agent"}
    purposes = set(SQLiteSource(db).llm_calls_frame().collect()["purpose"].drop_nulls())
    assert purposes & {"should_respond", "response", "post_creation"}
    assert raw_rows(db) == raw_rows(write_demo_db(tmp_path / "e.sqlite", 12, 2, shape="agent"))
    assert main(argv) == 0 and "wrote 12 agent-shaped trajectories" in capsys.readouterr().out
    with pytest.raises(ValueError, match="shape must be one of regular, agent"):
        write_demo_db(tmp_path / "f.sqlite", 3, shape="real")  # type: ignore[arg-type]
