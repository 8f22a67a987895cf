"""The score definitions (documented in the README) on hand-made replies."""

from __future__ import annotations

import math

import pytest

from milady_lab.models.evaluation import scores

AGENT = (
    "<response><thought>be kind</thought><actions>REPLY, FOLLOW_ROOM</actions>"
    "<text>hi ana~</text></response>"
)


def test_structure_elements() -> None:
    assert scores.structure(AGENT) == {
        "tag:response",
        "tag:thought",
        "tag:actions",
        "tag:text",
        "action:REPLY",
        "action:FOLLOW_ROOM",
    }
    assert scores.structure('{"action": "REPLY", "text": {"body": "x"}}') == {
        "key:action",
        "key:text",
        "key:body",
    }
    assert scores.structure("plain words, no markup: 3 < 4 > 2") == set()
    assert scores.structure('<Response attr="1"><br/></RESPONSE>') == {"tag:response", "tag:br"}


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        (AGENT, 1.0),
        ("", 0.0),
        ("<response><text>hi</text></response>", 2 / 6),
        ("<response><thought>x</thought><actions>REPLY</actions><text>y</text></response>", 5 / 6),
    ],
)
def test_consistency(generated: str, expected: float) -> None:
    assert scores.consistency(generated, AGENT) == pytest.approx(expected)


def test_consistency_both_unstructured_is_one() -> None:
    assert scores.consistency("hello", "goodbye") == 1.0


def test_rouge_l_on_content_only() -> None:
    assert scores.rouge_l(AGENT, AGENT) == 1.0
    # Tags removed: the same words in different markup score 1.
    assert scores.rouge_l("<text>be kind REPLY FOLLOW ROOM hi ana</text>", AGENT) == 1.0
    assert scores.rouge_l("", AGENT) == 0.0
    assert scores.rouge_l("<a></a>", "<b></b>") == 1.0
    # LCS "the cat on mat" = 4 of 6 and 5 tokens: F1 = 2PR/(P+R).
    p, r = 4 / 5, 4 / 6
    assert scores.rouge_l("the cat on the mat", "the cat sat on a mat") == pytest.approx(
        2 * p * r / (p + r)
    )


def test_tokenizer_keeps_non_ascii() -> None:
    assert scores.tokens("Ça va? おはよう") == ["ça", "va", "お", "は", "よ", "う"]
    assert scores.rouge_l("おはよう", "おはよう ございます") > 0.5


def test_coherence() -> None:
    assert scores.coherence(0.0, 10) == 1.0
    assert scores.coherence(10 * math.log(2), 10) == pytest.approx(0.5)
    assert scores.coherence(1.0, 0) == 0.0


# -- agent-shaped scores -------------------------------------------------------------------
ELIZA = "<response><thought>t</thought><actions>REPLY</actions><text>hello</text></response>"
SHOULD = "<response><name>Milady</name><reasoning>r</reasoning><action>RESPOND</action></response>"


@pytest.mark.parametrize(
    ("reply", "reference", "expected"),
    [
        (ELIZA, ELIZA, True),
        ("```xml\n" + ELIZA + "\n```", ELIZA, True),  # a fenced reply still parses
        ("<response><thought>a & b</thought><actions>REPLY</actions><text>x</text></response>",
         ELIZA, True),  # bare & tolerated, as the agent's lenient parser does
        ("<response><thought>t</thought><actions>REPLY</actions><text>hello</text>",
         ELIZA, False),  # not closed
        ("<response><thought>t</thought><text>hello</text></response>", ELIZA, False),  # no actions
        ("<response><thought>t</thought><actions>REPLY</text></response>", ELIZA, False),  # crossed
        ("hello there", ELIZA, False),
        # Another root: the agent reads the first element's children all the same.
        ("<reply><thought>t</thought><actions>REPLY</actions><text>x</text></reply>", ELIZA, True),
        ("<response><thought>if a < b</thought><actions>REPLY</actions><text>x</text></response>",
         ELIZA, True),  # a raw < in text: ElementTree refuses it, the agent does not
        ("<response><thought>Your thought here</thought><actions>REPLY</actions>"
         "<text>x</text></response>", ELIZA, False),  # the template's placeholder copied
        ("<response><name>M</name><reasoning>x</reasoning><action>IGNORE</action></response>",
         SHOULD, True),  # the reference's own tags are the required ones
        (ELIZA, SHOULD, False),
        ('{"text": "hi", "actions": ["REPLY"]}', '{"actions": ["REPLY"], "text": "yo"}', True),
        ('{"text": "hi", "actions": ["REPLY"], "extra": 1}', '{"actions": [], "text": "a"}', True),
        ('{"text": "hi"}', '{"actions": ["REPLY"], "text": "yo"}', False),  # a key missing
        ('{"text": "hi", }', '{"text": "yo"}', True),  # JSON5, as the agent reads JSON
        ('{"text": "hi" "x"}', '{"text": "yo"}', False),  # not JSON
        ('["text"]', '{"text": "yo"}', False),  # not an object
        ("anything at all", "plain text reference", None),  # left out
    ],
)  # fmt: skip
def test_format_valid(reply: str, reference: str, expected: bool | None) -> None:
    assert scores.format_valid(reply, reference) is expected


@pytest.mark.parametrize(
    ("reply", "reference", "expected"),
    [
        (AGENT, AGENT, True),
        ("<response><actions>follow_room, reply</actions></response>", AGENT, True),  # order, case
        # The agent reads nothing out of a bare <actions> element, nor splits on spaces.
        ("<actions>follow_room reply</actions>", AGENT, False),
        ("<response><actions>FOLLOW_ROOM REPLY</actions></response>", AGENT, False),
        ("<actions>REPLY</actions>", AGENT, False),  # a subset is wrong
        ("<actions>REPLY, FOLLOW_ROOM, MUTE_ROOM</actions>", AGENT, False),
        ("no actions at all", AGENT, False),
        ("<response><actions>REPLY</actions>", ELIZA, False),  # never closed: nothing read
        (
            "<response><actions><action><name>REPLY</name></action></actions></response>",
            ELIZA,
            True,
        ),
        ("thought: t\nactions[1]:\n  - name: REPLY\ntext: hi", ELIZA, True),  # TOON
        ('{"actions": ["REPLY"]}', '{"actions": "REPLY"}', True),
        ('{"actions": ["IGNORE"]}', '{"actions": ["REPLY"]}', False),
        (AGENT, "<response><text>no actions</text></response>", None),  # left out
        (AGENT, "<response><actions></actions></response>", None),
    ],
)
def test_action_match(reply: str, reference: str, expected: bool | None) -> None:
    assert scores.action_match(reply, reference) is expected


def _pe(format_valid: list, action: list, n: int | None = None) -> scores.PerExample:
    n = n or len(format_valid)
    return scores.PerExample(
        nll=[1.0] * n,
        tokens=[2] * n,
        consistency=[0.5] * n,
        helpfulness=[0.25] * n,
        format_valid=list(format_valid),
        action_match=list(action),
    )


def test_summary_leaves_out_and_counts() -> None:
    pe = _pe([True, False, None, True], [None, None, True, False])
    got = scores.summarize(pe)
    assert got["formatValid"] == round(2 / 3, 4) and got["actionAccuracy"] == 0.5
    assert got["coherence"] == round(math.exp(-0.5), 4)
    assert (got["consistency"], got["helpfulness"]) == (0.5, 0.25)
    assert scores.counts(pe) == {"formatValid": 3, "actionAccuracy": 2}
    none = scores.summarize(_pe([None, None], [None, None]))
    assert none["formatValid"] is None and none["actionAccuracy"] is None


def test_interval_on_a_known_case() -> None:
    """30 of 100 valid: the bootstrap interval is about 0.30 ± 1.96·sqrt(.3·.7/100) = ±0.09."""
    pe = _pe([i < 30 for i in range(100)], [True] * 100)
    iv = scores.interval(pe, seed=1)
    low, high = iv["formatValid"]
    assert 0.19 <= low <= 0.23 and 0.37 <= high <= 0.41
    assert iv["actionAccuracy"] == [1.0, 1.0]  # no spread, no width
    assert iv["consistency"] == [0.5, 0.5]
    assert scores.interval(pe, seed=1) == iv  # seeded: the same every run
    assert scores.interval(_pe([None] * 5, [None] * 5))["formatValid"] is None


def test_paired_interval_sees_a_real_drop_and_not_noise() -> None:
    base = _pe([True] * 40, [True] * 40)
    worse = _pe([i % 4 != 0 for i in range(40)], [True] * 40)  # 10 of 40 broken
    d = scores.paired_interval(worse, base, seed=0)["formatValid"]
    assert d["delta"] == -0.25 and d["high"] < 0 and d["low"] < d["delta"]
    one_off = _pe([i != 0 for i in range(40)], [True] * 40)  # one example: noise
    assert scores.paired_interval(one_off, base, seed=0)["formatValid"]["high"] >= 0
    same = scores.paired_interval(base, base)["actionAccuracy"]
    assert same == {"delta": 0.0, "low": 0.0, "high": 0.0}


def test_report_splits_by_purpose() -> None:
    from milady_lab.models.evaluation.benchmark import report

    tuned = _pe([True, True, False, None], [True, False, None, None])
    base = _pe([False, False, False, None], [False, False, None, None])
    purposes = ["response", "response", "action_selection", ""]
    body = report({"scores": tuned.as_dict(), "baseline": base.as_dict()}, purposes, 0)
    assert body["active"] is None and "active" not in body["differences"]
    assert body["counts"] == {
        "formatValid": 3,
        "actionAccuracy": 2,
        "cutByCap": {"baseline": 0, "scores": 0},  # _pe has no generation record
    }
    # macro: each purpose weighs the same (1.0 and 0.0; "unknown" counts none) vs pooled 2/3
    assert body["macro"]["scores"]["formatValid"] == 0.5
    assert body["scores"]["formatValid"] == round(2 / 3, 4)
    split = body["byPurpose"]
    assert set(split) == {"response", "action_selection", "unknown"}
    assert split["response"]["examples"] == 2
    assert split["response"]["scores"]["formatValid"] == 1.0
    assert split["response"]["baseline"]["formatValid"] == 0.0
    assert split["response"]["scores"]["actionAccuracy"] == 0.5
    assert split["action_selection"]["scores"]["formatValid"] == 0.0
    assert split["action_selection"]["scores"]["actionAccuracy"] is None
    assert split["unknown"]["counts"] == {"formatValid": 0, "actionAccuracy": 0}
    assert (
        body["intervals"]["scores"]["formatValid"][0]
        <= 2 / 3
        <= body["intervals"]["scores"]["formatValid"][1]
    )
