"""The redaction pass: every rule over whole Polars columns, in Rust, counted per kind.

Rust's fast regex engines (the DFAs) cannot follow a Unicode word boundary (``\\b``)
once a text holds a non-ASCII character, and agent prose nearly always does (emoji,
curly quotes, accents): the rules' exact patterns then fall back to a slow engine.
So each pattern runs first *loose*, with its ``\\b`` dropped: a pattern without an
assertion matches wherever the exact one does, and the DFA keeps it, ~100× faster.

One combined loose pattern (every rule's, as alternatives) and the seed-phrase
lookup (``seed``) first mark the rows that may hold anything at all; in real and demo
data that is a small share. Only those rows go through the rules one by one, and
each rule's exact pattern only over the rows its own loose pattern hits (count the
hits, then replace them). The rows come back in place by index, so the frame keeps
its order and every other column.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cache

import polars as pl

from . import seed
from .rules import Rule, rules


def loose(pattern: str) -> str:
    """``pattern`` without its word boundaries: it matches wherever ``pattern`` does."""
    return re.sub(r"\\(.)", lambda m: "" if m.group(1) == "b" else m.group(0), pattern)


@cache
def gate_pattern() -> str:
    """Any rule's hit but a seed phrase's, loosely: one pass over each distinct text."""
    return "|".join(f"(?:{loose(r.pattern)})" for r in rules() if not r.by_words)


def _hits(texts: pl.Series) -> pl.Series:
    """Which of ``texts`` may hold something to redact. Each distinct text is checked
    once: system prompts repeat across most calls, so this halves the scanning."""
    distinct = texts.drop_nulls().unique()
    flagged = distinct.filter(distinct.str.contains(gate_pattern()) | seed.maybe(distinct))
    if not flagged.len():
        return pl.repeat(False, texts.len(), eager=True)
    return texts.is_in(flagged).fill_null(False)


def hit_mask(df: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """Rows in which any of ``columns`` may hold something a rule redacts."""
    mask = pl.repeat(False, df.height, eager=True)
    for col in columns:
        mask = mask | _hits(df[col])
    return mask


def _apply_rule(texts: pl.Series, rule: Rule) -> tuple[pl.Series, int]:
    """``texts`` with ``rule``'s hits replaced, and how many there were."""
    if rule.by_words:
        return seed.replace(texts, rule.replacement)
    rows = texts.str.contains(loose(rule.pattern)).fill_null(False).arg_true()
    if not rows.len():
        return texts, 0
    some = texts.gather(rows)
    found = int(some.str.count_matches(rule.pattern).sum() or 0)
    if not found:
        return texts, 0
    return texts.clone().scatter(rows, some.str.replace_all(rule.pattern, rule.replacement)), found


def _apply_rules(
    part: pl.DataFrame, columns: Sequence[str], chosen: Sequence[Rule]
) -> tuple[pl.DataFrame, Counter[str]]:
    """Each rule in turn over each column of ``part``: count its hits, replace them."""
    counts: Counter[str] = Counter()
    out = []
    for col in columns:
        texts = part[col]
        for rule in chosen:
            texts, found = _apply_rule(texts, rule)
            if found:
                counts[rule.kind] += found
        out.append(texts)
    return pl.DataFrame(out), counts


def redact_frame(
    df: pl.DataFrame, columns: Sequence[str], chosen: Sequence[Rule] | None = None
) -> tuple[pl.DataFrame, Counter[str]]:
    """``df`` with every secret and contact in ``columns`` replaced by its placeholder,
    and the number of hits per kind. Other columns and the row order are kept."""
    if df.height == 0:
        return df, Counter()
    mask = hit_mask(df, columns)
    if not mask.any():
        return df, Counter()
    idx = mask.arg_true()
    cleaned, counts = _apply_rules(df.filter(mask), columns, chosen or rules())
    replaced = [df[c].scatter(idx, cleaned[c]) for c in columns]
    return df.with_columns(replaced), counts


def redact_texts(texts: Sequence[str | None]) -> tuple[list[str | None], Counter[str]]:
    """The same pass over a list of strings (for one-off texts and tests)."""
    df = pl.DataFrame({"text": list(texts)}, schema={"text": pl.String})
    out, counts = redact_frame(df, ["text"])
    return out["text"].to_list(), counts
