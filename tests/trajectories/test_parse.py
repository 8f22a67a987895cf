"""Messy ``steps_json`` → LLM-call rows: each kind of mess, and the fast path agreeing
with the reference rules row for row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from milady_lab.trajectories.base import LLM_CALL_SCHEMA
from milady_lab.trajectories.parse import (
    ACCESS_ROWS_SCHEMA,
    CALL_ROWS_SCHEMA,
    accesses_of_steps,
    calls_of_steps,
    llm_calls_from_steps,
    load_steps,
    provider_accesses_from_steps,
    reference_llm_calls,
)
from milady_lab.trajectories.sqlite import SQLiteSource

CLEAN_CALL = {
    "callId": "call-001",
    "timestamp": 1718000001000,
    "model": "claude-opus-4-5",
    "systemPrompt": "You are Milady...",
    "userPrompt": "What should I post today?",
    "response": "Here are some ideas...",
    "temperature": 0.7,
    "maxTokens": 1024,
    "purpose": "action_selection",
    "actionType": "autonomy",
    "latencyMs": 1200,
    "promptTokens": 800,
    "completionTokens": 340,
}
CLEAN_STEP = {
    "stepId": "step-0",
    "stepNumber": 0,
    "timestamp": 1718000000000,
    "llmCalls": [CLEAN_CALL],
    "providerAccesses": [
        {"providerId": "p-1", "providerName": "twitter", "timestamp": 1718000000500,
         "data": {}, "query": {}, "purpose": "context_retrieval"}
    ],
}  # fmt: skip
SNAKE_CALL = {
    "call_id": "c2", "model": "gpt-4o-mini", "system_prompt": "sys", "user_prompt": "hi",
    "response": "<response><text>hey</text></response>", "prompt_tokens": 12,
    "completion_tokens": 5, "latency_ms": 300, "timestamp": 5, "purpose": "response",
}  # fmt: skip


def frame(*texts: Any) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [f"t{i}" for i in range(len(texts))], "steps": list(texts)},
        schema={"id": pl.String, "steps": pl.String},
    )


def both(*texts: Any) -> pl.DataFrame:
    """The fast path's rows, after checking the reference rules give the same."""
    f = frame(*texts)
    fast = llm_calls_from_steps(f)
    assert fast.schema == pl.Schema(CALL_ROWS_SCHEMA)
    assert fast.equals(reference_llm_calls(f))
    return fast


def test_schema_is_llm_call_schema_plus_call_index() -> None:
    assert list(CALL_ROWS_SCHEMA) == [*LLM_CALL_SCHEMA, "callIndex"]


def test_clean_spec_example() -> None:
    rows = both(json.dumps([CLEAN_STEP])).to_dicts()
    assert rows == [
        {
            "trajectoryId": "t0", "stepId": "step-0", "model": "claude-opus-4-5",
            "purpose": "action_selection", "actionType": "autonomy",
            "systemPrompt": "You are Milady...",
            "userPrompt": "What should I post today?", "response": "Here are some ideas...",
            "promptTokens": 800, "completionTokens": 340, "latencyMs": 1200,
            "timestamp": 1718000001000,
            "toolCalls": None, "toolResults": None, "tools": None, "callIndex": 0,
        }
    ]  # fmt: skip


def test_snake_case_keys() -> None:
    row = both(json.dumps([{"step_id": "s9", "llm_calls": [SNAKE_CALL]}])).row(0, named=True)
    assert row["stepId"] == "s9"
    assert (row["systemPrompt"], row["userPrompt"]) == ("sys", "hi")
    assert (row["promptTokens"], row["completionTokens"], row["latencyMs"]) == (12, 5, 300)


def test_mixed_camel_and_snake_within_a_row() -> None:
    step = {"stepId": "a", "llm_calls": [{"userPrompt": "u", "system_prompt": "s"}]}
    row = both(json.dumps([step])).row(0, named=True)
    assert (row["stepId"], row["userPrompt"], row["systemPrompt"]) == ("a", "u", "s")


def test_steps_object_and_lone_step() -> None:
    wrapped = json.dumps({"steps": [CLEAN_STEP, {"stepId": "s1", "llmCalls": [SNAKE_CALL]}]})
    lone = json.dumps({"stepId": "x", "llmCalls": [CLEAN_CALL]})
    got = both(wrapped, lone)
    assert got["trajectoryId"].to_list() == ["t0", "t0", "t1"]
    assert got["stepId"].to_list() == ["step-0", "s1", "x"]
    assert got["callIndex"].to_list() == [0, 1, 0]


def test_missing_tokens_and_nulls() -> None:
    call = {k: v for k, v in CLEAN_CALL.items() if "Tokens" not in k}
    nulls = dict.fromkeys(CLEAN_CALL)
    got = both(json.dumps([{"llmCalls": [call, nulls, None, {}]}]))
    assert got.height == 3  # a null call is not a call; {} is an (empty) one
    assert got["promptTokens"].to_list() == [None, None, None]
    assert got["userPrompt"].to_list() == ["What should I post today?", None, None]


def test_blank_prompts_and_responses_are_kept_as_recorded() -> None:
    call = {**CLEAN_CALL, "userPrompt": "   ", "response": ""}
    row = both(json.dumps([{"llmCalls": [call]}])).row(0, named=True)
    assert (row["userPrompt"], row["response"]) == ("   ", "")


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "not json: step log lost", "[object Object]", "undefined", "null",
     "{steps: []}", "42", '"text"', "[1, 2]", "{}", "[]", '{"steps": "nope"}',
     json.dumps([CLEAN_STEP])[:57], "[{\"llmCalls\": [{\"userPrompt\": \"x\"}]}] trailing"],
)  # fmt: skip
def test_unreadable_rows_have_no_calls_and_fail_nothing(text: Any) -> None:
    good = json.dumps([CLEAN_STEP])
    got = both(good, text, good)
    assert got["trajectoryId"].to_list() == ["t0", "t2"]


def test_wrong_types_are_coerced_by_the_reference_rules() -> None:
    call = {
        "model": 5, "purpose": True, "userPrompt": {"nested": 1}, "response": ["a"],
        "promptTokens": "12", "completionTokens": 3.9, "latencyMs": True,
        "timestamp": 2**70, "systemPrompt": 1.5,
    }  # fmt: skip
    steps = [{"stepId": 7, "llmCalls": [call, "junk", 3]}, "junk", {"llmCalls": "nope"}]
    row = both(json.dumps(steps)).row(0, named=True)
    assert row == {
        "trajectoryId": "t0", "stepId": "7", "model": "5", "purpose": "true", "actionType": None,
        "systemPrompt": "1.5", "userPrompt": None, "response": None, "promptTokens": 12,
        "completionTokens": 3, "latencyMs": 1, "timestamp": None,
        "toolCalls": None, "toolResults": None, "tools": None, "callIndex": 0,
    }  # fmt: skip


def test_steps_without_ids_get_positional_ids() -> None:
    steps = [{"llmCalls": [{"userPrompt": "a"}]}, None, {"llmCalls": [{"userPrompt": "b"}]}]
    assert both(json.dumps(steps))["stepId"].to_list() == ["step-0", "step-2"]


def test_odd_json_text() -> None:
    dup = '[{"llmCalls": [{"userPrompt": "first", "userPrompt": "last"}]}]'
    surrogate = '[{"llmCalls": [{"userPrompt": "a\\ud800b"}]}]'
    control = '[{"llmCalls": [{"userPrompt": "line\nbreak"}]}]'
    nan = '[{"llmCalls": [{"userPrompt": "n", "latencyMs": NaN}]}]'
    got = both(dup, surrogate, control, nan)
    assert got["userPrompt"].to_list() == ["last", "a?b", "line\nbreak", "n"]
    assert got["latencyMs"].to_list() == [None] * 4


def test_empty_and_renamed_columns() -> None:
    assert llm_calls_from_steps(frame()).schema == pl.Schema(CALL_ROWS_SCHEMA)
    f = pl.DataFrame({"tid": ["a"], "raw": [json.dumps([CLEAN_STEP])]})
    assert llm_calls_from_steps(f, id_col="tid", steps_col="raw")["trajectoryId"][0] == "a"


def test_provider_accesses() -> None:
    snake = {"step_id": "s", "provider_accesses": [{"provider_name": "time", "id": "p9"}]}
    f = frame(json.dumps([CLEAN_STEP]), json.dumps({"steps": [snake]}), "oops")
    got = provider_accesses_from_steps(f)
    assert got.schema == pl.Schema(ACCESS_ROWS_SCHEMA)
    assert got.select("trajectoryId", "stepId", "providerId", "providerName").rows() == [
        ("t0", "step-0", "p-1", "twitter"),
        ("t1", "s", "p9", "time"),
    ]
    assert accesses_of_steps("t", json.dumps([CLEAN_STEP]), detail=True)[0]["data"] == {}


def test_detail_rows_carry_the_extra_call_fields() -> None:
    (call,) = calls_of_steps("t", json.dumps([CLEAN_STEP]), detail=True)
    assert call["callId"] == "call-001"
    assert (call["temperature"], call["maxTokens"], call["actionType"]) == (0.7, 1024, "autonomy")
    assert [sid for sid, _ in load_steps(b'[{"stepId": "b"}]')] == ["b"]


def test_fast_path_equals_reference_on_the_whole_demo_db(demo_db: Path) -> None:
    steps = pl.concat(list(SQLiteSource(demo_db).iter_steps(batch_rows=100)))
    fast = llm_calls_from_steps(steps)
    assert fast.equals(reference_llm_calls(steps))
    # the messy kinds are all there and parsed
    texts = steps["steps"].to_list()
    assert any('"llm_calls"' in t for t in texts)
    assert any(t.startswith('{"steps"') for t in texts)
    assert fast["promptTokens"].null_count() > 0
    assert (fast["userPrompt"].str.strip_chars() == "").sum() > 0
