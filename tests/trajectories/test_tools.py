"""Tool calls, function results and tool schemas as writers record them (issue 15): every
shape reads into one canonical form, both parse paths agree, and the API's detail gives
them back as objects."""

from __future__ import annotations

import json

import polars as pl
import pytest

from milady_lab.trajectories.parse import calls_of_steps, llm_calls_from_steps, reference_llm_calls
from milady_lab.trajectories.tools import chat_turns, tool_calls, tool_results, tool_schemas

WEATHER = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}


@pytest.mark.parametrize(
    "recorded",
    [
        # OpenAI chat completions: nested, arguments as JSON text.
        [{"id": "call_1", "type": "function",
          "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        # Vercel AI SDK / elizaOS: flat, toolName and args.
        [{"toolCallId": "call_1", "toolName": "get_weather", "args": {"city": "Paris"}}],
        # Anthropic tool_use: input.
        [{"id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
        # The whole list stored as JSON text, one lone object.
        json.dumps([{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]),
        {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
    ],
)  # fmt: skip
def test_every_recorded_shape_reads_as_one_call(recorded: object) -> None:
    assert json.loads(tool_calls(recorded) or "null") == [WEATHER]


def test_unreadable_items_are_left_out_and_nothing_raises() -> None:
    assert tool_calls([{"arguments": {}}, "x", 3, {"name": "  "}]) is None
    assert tool_calls("not json") is None
    assert tool_calls(7) is None
    # Arguments that are text but not an object stay text; missing ones are an object.
    assert json.loads(tool_calls([{"name": "f", "arguments": "raw"}, {"name": "g"}]) or "") == [
        {"name": "f", "arguments": "raw"},
        {"name": "g", "arguments": {}},
    ]


def test_results_keep_their_content_as_text() -> None:
    got = tool_results(
        [
            {"toolCallId": "call_1", "toolName": "get_weather", "result": {"temp": 21}},
            {"tool_call_id": "call_2", "content": "sunny"},
            {"name": "no_content"},
        ]
    )
    assert json.loads(got or "") == [
        {"content": '{"temp":21}', "name": "get_weather", "id": "call_1"},
        {"content": "sunny", "id": "call_2"},
    ]


def test_schemas_in_openai_form_from_every_shape() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    want = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": params},
        }
    ]
    assert json.loads(tool_schemas(want) or "") == want
    flat = [{"name": "get_weather", "description": "Weather", "input_schema": params}]
    assert json.loads(tool_schemas(flat) or "") == want
    by_name = {"get_weather": {"description": "Weather", "parameters": params}}
    assert json.loads(tool_schemas(by_name) or "") == want  # fmt: skip


def test_canonical_text_reads_back_to_itself() -> None:
    for convert, value in (
        (tool_calls, [{"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]),
        (tool_results, [{"name": "f", "result": [1, 2], "id": 3}]),
        (tool_schemas, {"f": {"parameters": {}}}),
    ):
        text = convert(value)
        assert text is not None and convert(text) == text


def _steps(*calls: dict) -> str:
    return json.dumps([{"stepId": "s0", "llmCalls": list(calls)}])


ASKED = {
    "userPrompt": "Weather in Paris?",
    "response": "",
    "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
}  # fmt: skip
ANSWERED = {
    "userPrompt": "Weather in Paris?",
    "response": "It is 21 degrees in Paris.",
    "toolResults": [{"toolCallId": "call_1", "toolName": "get_weather",
                     "args": {"city": "Paris"}, "result": "21C"}],
}  # fmt: skip


def test_both_parse_paths_give_the_tool_columns() -> None:
    # The second row has a token count as text: msgspec rejects it, the rules read it.
    odd = {**ANSWERED, "promptTokens": "12"}
    frame = pl.DataFrame({"id": ["t1", "t2"], "steps": [_steps(ASKED, ANSWERED), _steps(odd)]})
    fast = llm_calls_from_steps(frame)
    assert fast.equals(reference_llm_calls(frame))
    assert json.loads(fast["toolCalls"][0]) == [WEATHER]
    assert fast["toolResults"][0] is None and fast["toolCalls"][1] is None
    assert json.loads(fast["toolResults"][2])[0]["content"] == "21C"
    assert json.loads(fast["tools"][0])[0]["function"]["name"] == "get_weather"


def test_a_call_without_tools_has_null_tool_columns() -> None:
    frame = pl.DataFrame({"id": ["t"], "steps": [_steps({"userPrompt": "u", "response": "r"})]})
    row = llm_calls_from_steps(frame).row(0, named=True)
    assert (row["toolCalls"], row["toolResults"], row["tools"]) == (None, None, None)


def test_the_detail_gives_objects() -> None:
    (row,) = calls_of_steps("t", _steps(ASKED), detail=True)
    assert row["toolCalls"] == [WEATHER]
    assert row["tools"][0]["function"]["name"] == "get_weather"
    assert row["toolResults"] is None


def test_chat_turns_put_the_results_before_the_reply() -> None:
    frame = pl.DataFrame({"id": ["t"], "steps": [_steps(ANSWERED)]})
    row = llm_calls_from_steps(frame).row(0, named=True)
    turns = chat_turns(row["response"], row["toolCalls"], row["toolResults"])
    call = {"type": "function", "id": "call_1",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}  # fmt: skip
    assert turns == [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "21C", "name": "get_weather", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is 21 degrees in Paris."},
    ]


def test_the_agent_api_mirror_keeps_the_tool_fields() -> None:
    """Calls from the agent's REST API (or its exported files) go through
    ``steps_from_api`` on their way to the local cache: the tool fields survive."""
    from milady_lab.trajectories.export import steps_from_api

    api_calls = [{"id": "c1", "stepId": "s0", **ASKED}, {"id": "c2", "stepId": "s0", **ANSWERED}]
    steps = json.dumps(steps_from_api(api_calls, []))
    frame = llm_calls_from_steps(pl.DataFrame({"id": ["t"], "steps": [steps]}))
    assert json.loads(frame["toolCalls"][0]) == [WEATHER]
    assert json.loads(frame["toolResults"][1])[0]["name"] == "get_weather"
