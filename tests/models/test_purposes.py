"""Per-purpose scores on hand-made agent replies: TOON and XML read as the agent reads
them, placeholders copied from the template refused, actions checked against the prompt's
offer, and every accuracy beside what always answering the majority would score."""

from __future__ import annotations

import msgspec
import pytest

from milady_lab.api.schema import BenchmarkAnswer
from milady_lab.models.evaluation import benchmark, purposes, scores

# How the runtime lists actions in a prompt (core's actions provider).
PROMPT = """task: Generate dialog and actions for Ana.

context:
Possible response actions: SEND_MESSAGE, REPLY, FOLLOW_ROOM, IGNORE

# Available Actions
- SEND_MESSAGE: Send a message to a room or user
  params[2]: target:string - where; text:string - what
- REPLY: Reply to the conversation
- FOLLOW_ROOM: Follow the room

# Conversation
user: hi Ana
"""

TOON_REPLY = """thought: Greet back.
actions[1]:
  - name: REPLY
providers:
text: hi! how are you?
simple: true"""

TOON_SEND = """thought: Pass it on.
actions[1]:
  - name: SEND_MESSAGE
    params:
      target: room-7
      text: see you at 5
providers:
text:"""

XML_SEND = (
    "<response><thought>Pass it on.</thought><actions><action><name>SEND_MESSAGE</name>"
    "<params><target>room-7</target><text>see you at 5</text></params></action></actions>"
    "<text></text></response>"
)

# The message_handler template's own example, and the 1.x XML one.
TEMPLATE_ECHO = """thought: Reply briefly. No extra providers needed.
actions[1]:
  - name: REPLY
providers:
text: Your message here
simple: true"""
XML_ECHO = (
    "<response><thought>Your thought here</thought><actions>ACTION1,ACTION2</actions>"
    "<providers>PROVIDER1,PROVIDER2</providers><text>Your message here</text></response>"
)


def test_toon_reply_is_read_and_scored() -> None:
    row = purposes.score_example(TOON_REPLY, TOON_REPLY, PROMPT, "response")
    assert (row.kind, row.format_valid, row.actions, row.action_match) == (
        "reply", True, ("REPLY",), True,
    )  # fmt: skip
    assert scores.format_valid("thought: only a thought", TOON_REPLY) is False  # text missing
    assert scores.format_valid("hi! how are you?", TOON_REPLY) is False  # prose, not TOON


def test_params_read_from_toon_and_nested_xml_alike() -> None:
    assert scores.action_params(scores.read_reply(TOON_SEND)) == {
        "SEND_MESSAGE": {"target": "room-7", "text": "see you at 5"}
    }
    xml_for_toon = purposes.score_example(XML_SEND, TOON_SEND, PROMPT, "response")
    assert (xml_for_toon.action_match, xml_for_toon.params_match) == (True, True)
    wrong_target = TOON_SEND.replace("room-7", "room-8")
    assert purposes.score_example(wrong_target, TOON_SEND, PROMPT, "response").params_match is False


def test_a_reply_the_agent_accepts_is_valid_raw_lt_and_amp() -> None:
    ref = "<response><thought>t</thought><actions>REPLY</actions><text>x</text></response>"
    reply = (
        "Sure:\n<response><thought>3 < 4 & 5 > 2</thought><actions>REPLY</actions>"
        "<text>if a<b then</text></response>"
    )
    assert scores.read_reply(reply)["thought"] == "3 < 4 & 5 > 2"
    assert scores.format_valid(reply, ref) is True
    assert scores.action_match(reply, ref, PROMPT) is True


@pytest.mark.parametrize("echo", [TEMPLATE_ECHO, XML_ECHO])
def test_a_reply_echoing_the_template_placeholders_is_invalid(echo: str) -> None:
    reference = TOON_REPLY if echo is TEMPLATE_ECHO else XML_SEND
    row = purposes.score_example(echo, reference, PROMPT, "response")
    assert row.format_valid is False
    assert row.placeholders
    summary = purposes.summarize_purposes([row])["response"]
    assert (summary["formatValid"], summary["placeholderEchoes"]) == (0.0, 1)


def test_unfilled_template_variable_is_an_echo() -> None:
    reply = TOON_REPLY.replace("hi! how are you?", "I am {{agentName}}")
    assert scores.format_valid(reply, TOON_REPLY) is False
    # A placeholder the reference itself holds is not held against the reply.
    assert scores.format_valid(XML_ECHO, XML_ECHO) is True


def test_offered_actions_parsed_from_the_prompt() -> None:
    assert scores.offered_actions(PROMPT) == {"SEND_MESSAGE", "REPLY", "FOLLOW_ROOM", "IGNORE"}
    assert scores.offered_actions("no actions listed here") is None
    only_section = "# Available Actions\n- MUTE_ROOM: quiet\n  example: x\n\n# Next\n- NOT: this"
    assert scores.offered_actions(only_section) == {"MUTE_ROOM"}


def test_an_action_the_prompt_did_not_offer_fails_and_is_counted() -> None:
    invented = TOON_SEND.replace("SEND_MESSAGE", "SEND_TOKEN")
    ref = invented  # even a reference naming it: the prompt did not offer it
    row = purposes.score_example(invented, ref, PROMPT, "response")
    assert (row.action_match, row.unoffered) == (False, ("SEND_TOKEN",))
    assert purposes.summarize_purposes([row])["response"]["unofferedActions"] == 1
    # Without an offer list in the prompt nothing is checked; control actions always pass.
    assert purposes.score_example(invented, ref, None, "response").action_match is True
    stop = "thought: done\nactions: STOP\ntext:"
    assert purposes.score_example(stop, stop, PROMPT, "response").action_match is True


def _should(action: str) -> str:
    return f"name: Ana\nreasoning: because\naction: {action}\nprimaryContext: general"


def test_should_respond_decision_accuracy_in_toon_and_xml() -> None:
    xml_ignore = (
        "<response><name>Ana</name><reasoning>r</reasoning><action>IGNORE</action>"
        "<primaryContext>general</primaryContext></response>"
    )
    rows = purposes.score_examples(
        [_should("RESPOND"), xml_ignore, _should("REPLY"), "I think I should respond"],
        [_should("RESPOND"), _should("IGNORE"), _should("RESPOND"), _should("STOP")],
        [None] * 4,
        ["should_respond"] * 4,
    )
    assert [r.decision_match for r in rows] == [True, True, True, False]
    summary = purposes.summarize_purposes(rows)["should_respond"]
    assert summary["kind"] == "decision"
    assert summary["decisionAccuracy"] == 0.75
    assert (summary["majority"], summary["decisionBaseline"]) == ("RESPOND", 0.5)
    assert summary["formatValid"] == 0.75


def test_always_reply_scores_no_better_than_the_majority_baseline() -> None:
    other = [TOON_SEND, TOON_SEND, "thought: t\nactions: FOLLOW_ROOM\ntext: ok"]
    references = [TOON_REPLY] * 7 + other
    replies = [TOON_REPLY] * len(references)  # the model that always answers REPLY
    rows = purposes.score_examples(
        replies, references, [PROMPT] * len(references), ["response"] * len(references)
    )
    summary = purposes.summarize_purposes(rows)["response"]
    assert summary["actionBaseline"] == 0.7
    assert summary["actionAccuracy"] <= summary["actionBaseline"]
    assert summary["majority"] == "REPLY"
    assert (summary["minorityActionAccuracy"], summary["minorityExamples"]) == (0.0, 3)
    # A model that gets the minority right beats the baseline and shows it apart.
    good = purposes.score_examples(
        references, references, [PROMPT] * len(references), ["response"] * len(references)
    )
    better = purposes.summarize_purposes(good)["response"]
    assert better["actionAccuracy"] == 1.0 > better["actionBaseline"]
    assert better["minorityActionAccuracy"] == 1.0
    assert better["paramsAccuracy"] == 1.0


def test_validity_purposes_and_grouping() -> None:
    reflection = "thought: fine\nfacts[0]{claim,type}: likes tea,preference\nrelationships:"
    rows = purposes.score_examples(
        [reflection, "no idea", TOON_REPLY],
        [reflection, reflection, TOON_REPLY],
        [None, None, PROMPT],
        ["reflection", "reflection", ""],
    )
    summary = purposes.summarize_purposes(rows)
    assert set(summary) == {"reflection", "unknown"}
    assert summary["reflection"] == {
        "kind": "validity", "examples": 2, "formatValid": 0.5, "placeholderEchoes": 0,
    }  # fmt: skip
    assert summary["unknown"]["kind"] == "validity"


def test_benchmark_report_shows_each_purpose_beside_its_baseline() -> None:
    refs = [TOON_REPLY] * 3 + [TOON_SEND] + [_should("IGNORE"), _should("RESPOND")]
    kinds = ["response"] * 4 + ["should_respond"] * 2
    asked = [PROMPT] * 4 + [None, None]

    def variant(replies: list[str]) -> dict:
        n = len(replies)
        per = scores.PerExample.from_replies(replies, refs, [1.0] * n, [1] * n, asked)
        rows = purposes.score_examples(replies, refs, asked, [""] * n)  # the worker's view
        return {**per.as_dict(), "agent": purposes.columns(rows)}

    always = [TOON_REPLY] * 4 + [_should("RESPOND")] * 2
    per_example = {"baseline": variant(always), "scores": variant(refs)}
    body = benchmark.report(per_example, kinds, seed=0)
    reply, decide = body["perPurpose"]["response"], body["perPurpose"]["should_respond"]
    assert reply["baseline"]["actionAccuracy"] == reply["baseline"]["actionBaseline"] == 0.75
    assert reply["baseline"]["minorityActionAccuracy"] == 0.0
    assert reply["scores"]["actionAccuracy"] == 1.0
    assert decide["baseline"]["decisionAccuracy"] == decide["baseline"]["decisionBaseline"] == 0.5
    assert decide["scores"]["decisionAccuracy"] == 1.0
    answer = msgspec.convert(
        {**body, "modelId": "m", "completedAt": 1}, BenchmarkAnswer, from_attributes=False
    )
    assert answer.per_purpose == body["perPurpose"]
    # A result stored before these columns reports without them.
    old = {k: {f: v for f, v in d.items() if f != "agent"} for k, d in per_example.items()}
    assert "perPurpose" not in benchmark.report(old, kinds, seed=0)
