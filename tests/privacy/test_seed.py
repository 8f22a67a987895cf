"""The seed-phrase word lookup finds exactly what the 2048-word regex finds: the same
matches (count and text), the same output once replaced, on edge cases (11/12/24/25
words, separators, numbering, case, words off the list, Unicode, line breaks), on
random texts built from those pieces and on agent-shaped prose; and its pre-check
never misses a text the regex matches."""

from __future__ import annotations

import random

import polars as pl
import pytest

from milady_lab.privacy import redact_texts, seed
from milady_lab.privacy.rules import bip39_words, rules

from .prose import LINES, user_prompt

PLACEHOLDER = "<SECRET:mnemonic>"


def _regex() -> str:
    return next(r.pattern for r in rules() if r.kind == "mnemonic")


def _w(n: int, at: int = 0, sep: str = " ") -> str:
    return sep.join(bip39_words()[at : at + n])


def _numbered(n: int, fmt: str = "{i}. {w}", sep: str = " ") -> str:
    return sep.join(fmt.format(i=i, w=w) for i, w in enumerate(bip39_words()[:n], 1))


EDGES = [
    _w(11),
    _w(12),
    _w(13),
    _w(23),
    _w(24),
    _w(25),
    _w(35),
    _w(36),
    _w(48),
    _w(60),
    f"my seed is {_w(12)}.",
    f"({_w(12)})",
    f'"{_w(24)}"',
    _w(12, sep=", "),
    _w(12, sep=","),
    _w(12, sep=";"),
    _w(12, sep=" ;\t"),
    _w(12, sep="\n"),
    _w(12, sep="\r\n"),
    _w(12, sep=" \n "),
    _w(12, sep="\n\n"),
    _w(12, sep=" - "),
    _w(12, sep="  "),
    _w(12, sep="\u00a0"),
    _w(12, sep=" 🔑 "),
    _numbered(12),
    _numbered(24, sep="\n"),
    _numbered(12, "{i}) {w}"),
    _numbered(12, "{i}:{w}"),
    _numbered(12, "{i}.\t{w}", sep=",\n"),
    _numbered(12, "0{i}. {w}"),
    _numbered(12, "1{i}. {w}"),
    "x1. " + _w(12),
    "1.2) " + _w(12),
    "a 7. " + _w(12),
    "123. " + _w(12),
    "١. " + _w(12),
    "1.\n" + _w(12),
    _numbered(30),
    _w(24) + " 25. " + _w(12, 24),
    _w(24) + "\n25) " + _w(11, 24),
    "Abandon " + _w(12, 1),
    _w(6) + " Ability " + _w(6, 6),
    _w(12).upper(),
    _w(6) + " milady " + _w(6, 6),
    _w(6) + " milady " + _w(12, 6),
    _w(6) + " a " + _w(6, 6),
    _w(12) + "é",
    "é" + _w(12),
    "ée " + _w(12) + " ée",
    _w(12) + "’s",
    _w(12) + "_x",
    _w(12) + "1",
    "abandonment " + _w(12, 1),
    _w(11) + " abandonment",
    _w(11) + " ábandon",
    _w(12) + " " + _w(12, 100) + " and " + _w(12, 200),
    "words:\n" + _w(18, sep="\n") + "\nend",
    "\n".join(["the quick brown fox jumps over the lazy dog while the cat sleeps in the sun"] * 3),
]


def _compare(texts: list[str]) -> None:
    series = pl.Series("t", texts, dtype=pl.String)
    expected = series.str.replace_all(_regex(), PLACEHOLDER)
    got, found = seed.replace(series, PLACEHOLDER)
    assert found.to_list() == series.str.count_matches(_regex()).to_list()
    diff = [(t, e, g) for t, e, g in zip(texts, expected, got, strict=True) if e != g]
    assert not diff, diff[:3]
    # The candidate pattern passes every text the regex matches.
    matched = series.str.contains(_regex())
    assert not (matched & ~series.str.contains(seed.candidate())).any()


def test_edge_cases_match_the_regex() -> None:
    _compare(EDGES)
    hits = pl.Series(EDGES).str.count_matches(_regex()).to_list()
    assert hits[:10] == [0, 1, 1, 1, 1, 1, 1, 2, 2, 3]  # 35 = 24 + 11: one; 36: two


@pytest.mark.parametrize("seed_", range(3))
def test_random_texts_match_the_regex(seed_: int) -> None:
    rng = random.Random(seed_)
    words = bip39_words()
    others = ["Abandon", "milady", "abandonment", "ábandon", "a", "I", "x1", "123", "zoo_", "é"]
    seps = [" ", " ", " ", ", ", ",", "\n", "\r\n", "\n\n", " - ", ". ", "\t", " 🙂 ", "’"]
    numbers = ["", "", "", "", "3. ", "12) ", "7:", "123. ", "1.2. "]

    def text() -> str:
        parts = []
        for _ in range(rng.randint(1, 60)):
            word = rng.choice(words) if rng.random() < 0.93 else rng.choice(others)
            parts += [rng.choice(numbers), word, rng.choice(seps) if rng.random() < 0.2 else " "]
        return "".join(parts)

    _compare([text() for _ in range(400)])


def test_agent_prose_matches_the_regex() -> None:
    rng = random.Random(5)
    texts = [user_prompt(rng, "Eliza", "message_handler", i) for i in range(40)]
    texts += [". ".join(LINES), " ".join(LINES), "\n".join(LINES)]
    texts += [f"{t}\nkai: backup {_w(12, 7 * i)} ok" for i, t in enumerate(texts[:5])]
    _compare(texts)


def test_nulls_and_empty_texts() -> None:
    series = pl.Series([None, "", _w(12), None], dtype=pl.String)
    out, found = seed.replace(series, PLACEHOLDER)
    assert out.to_list() == [None, "", PLACEHOLDER, None] and found.to_list() == [0, 0, 1, 0]
    out, found = seed.replace(pl.Series([], dtype=pl.String), PLACEHOLDER)
    assert out.len() == found.len() == 0


def test_the_pass_counts_seed_phrases_after_earlier_rules() -> None:
    """Rules run in order: a seed phrase beside an email is found, each counted once."""
    text = f"mail kai@example.com the words: {_numbered(24, sep=', ')} done"
    [out], counts = redact_texts([text])
    assert out == f"mail <EMAIL> the words: {PLACEHOLDER} done"
    assert counts == {"email": 1, "mnemonic": 1}
