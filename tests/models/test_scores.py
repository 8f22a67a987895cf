"""The score definitions (documented in the README) on hand-made replies."""

from __future__ import annotations

import math

import pytest

from milady_lab.models import scores

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
