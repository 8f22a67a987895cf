"""Calls that recorded tool calls or function results become dataset lines in the chat
form Hugging Face templates and mlx-lm read (issue 15), on SQLite and PostgreSQL alike:
the tool turns before the reply, the schemas offered, a reply made only of tool calls
kept, secrets in tool results redacted without breaking the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_datasets import Lab, call
from trajectories.kit import pg_database, raw_rows

from milady_lab.datasets import build as ds
from milady_lab.datasets.files import examples_frame, line_messages
from milady_lab.trajectories import open_source

SCHEMA = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
ASKED = call(
    "Weather in Paris?",
    "",
    toolCalls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
    tools=[SCHEMA],
)
ANSWERED = call(
    "Weather in Paris?",
    "It is 21 degrees.",
    tool_results=[
        {
            "tool_call_id": "call_1",
            "name": "get_weather",
            "arguments": {"city": "Paris"},
            "content": "21C; reported by ops@example.com",
        }
    ],
)
PLAIN = call("Hello?", "Hi there.")
WEATHER_CALL = {
    "type": "function",
    "id": "call_1",
    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
}


class ToolLab(Lab):
    def __init__(self, tmp: Path, kind: str, postgres_url: str | None) -> None:
        super().__init__(tmp, [("t1", 2, [ASKED, ANSWERED]), ("t0", 1, [PLAIN])])
        if kind == "postgres":
            db = tmp / "traj.sqlite"
            self.source = open_source(pg_database(postgres_url or "", raw_rows(db)), self.settings)

    def by_reply(self, rec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The built lines, keyed by their last message's content."""
        return {ex["messages"][-1]["content"]: ex for ex in self.examples(rec)}


@pytest.fixture(params=["sqlite", "postgres"])
def tools_lab(request: pytest.FixtureRequest, tmp_path: Path) -> ToolLab:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return ToolLab(tmp_path, request.param, url)


def test_tool_turns_are_written_as_chat_templates_read_them(tools_lab: ToolLab) -> None:
    rec = tools_lab.build(privacy={"redact": False})
    assert rec["exampleCount"] == 3  # the tool-only reply is usable
    lines = tools_lab.by_reply(rec)
    asked = lines[""]
    assert asked["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
    ]
    assert asked["tools"] == [SCHEMA]
    answered = lines["It is 21 degrees."]
    assert [m["role"] for m in answered["messages"]] == [
        "system", "user", "assistant", "tool", "assistant",
    ]  # fmt: skip
    assert answered["messages"][2]["tool_calls"] == [WEATHER_CALL]
    assert answered["messages"][3]["tool_call_id"] == "call_1"
    assert "tools" not in answered
    # A call without tools is written exactly as before.
    plain = lines["Hi there."]
    assert plain == {
        "messages": [
            {"role": "system", "content": "You are Milady."},
            {"role": "user", "content": "Hello?"},
            {"role": "assistant", "content": "Hi there."},
        ],
        "metadata": plain["metadata"],
    }


def test_training_reads_the_tool_keys_and_the_frame_the_prompt(tools_lab: ToolLab) -> None:
    rec = tools_lab.build(privacy={"redact": False})
    msgs = line_messages(tools_lab.by_reply(rec)["It is 21 degrees."])
    assert msgs is not None and msgs[2]["tool_calls"] == [WEATHER_CALL]
    assert msgs[3] == {
        "role": "tool",
        "content": "21C; reported by ops@example.com",
        "name": "get_weather",
        "tool_call_id": "call_1",
    }
    frame = examples_frame(rec["path"], "all")
    assert set(frame["user"]) == {"Weather in Paris?", "Hello?"}
    assert set(frame["system"]) == {"You are Milady."}


def test_secrets_in_tool_results_are_redacted_and_the_json_holds(tools_lab: ToolLab) -> None:
    rec = tools_lab.build()  # redaction is on by default
    assert rec["redactions"].get("email") == 1
    tool = tools_lab.by_reply(rec)["It is 21 degrees."]["messages"][3]
    assert "ops@example.com" not in tool["content"]
    assert tool["content"].startswith("21C; reported by ")
    assert tool["name"] == "get_weather"  # a label, never rewritten
    counts = ds.preview(tools_lab.source, ds.BuildOptions.from_body({}))
    assert counts["redactions"] == rec["redactions"]
