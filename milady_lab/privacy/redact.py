"""The redaction pass: every rule over whole Polars columns, in Rust, counted per kind.

One combined pattern (every rule's, as alternatives) first marks the rows that hold
anything at all; in real and demo data that is a small share, and only those rows go
through the rules one by one (count the hits, then replace them). The rows come back
in place by index, so the frame keeps its order and every other column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cache

import polars as pl

from .rules import MNEMONIC_CANDIDATE, Rule, rules


@cache
def gate_pattern() -> str:
    """Any rule's hit but a seed phrase's: one pass over each distinct text."""
    return "|".join(f"(?:{r.pattern})" for r in rules() if r.kind != "mnemonic")


@cache
def _mnemonic() -> tuple[str, str]:
    """(a cheap pattern every seed phrase matches, the exact one). The exact pattern
    (2048 words, 12–24 times) is ~25× slower than all other rules together, so it only
    runs on texts with a run of 12+ short lowercase words."""
    exact = next(r.pattern for r in rules() if r.kind == "mnemonic")
    return MNEMONIC_CANDIDATE, exact


def _hits(texts: pl.Series) -> pl.Series:
    """Which of ``texts`` hold something to redact. Each distinct text is checked once:
    system prompts repeat across most calls, so this halves the scanning."""
    distinct = texts.drop_nulls().unique()
    candidate, exact = _mnemonic()
    flagged = distinct.filter(distinct.str.contains(gate_pattern()))
    maybe = distinct.filter(distinct.str.contains(candidate))
    if maybe.len():  # the exact pattern costs ~0.1 s to compile: only when needed
        flagged = pl.concat([flagged, maybe.filter(maybe.str.contains(exact))])
    if not flagged.len():
        return pl.repeat(False, texts.len(), eager=True)
    return texts.is_in(flagged).fill_null(False)


def hit_mask(df: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """Rows in which any of ``columns`` holds something a rule redacts."""
    mask = pl.repeat(False, df.height, eager=True)
    for col in columns:
        mask = mask | _hits(df[col])
    return mask


def _apply_rules(
    part: pl.DataFrame, columns: Sequence[str], chosen: Sequence[Rule]
) -> tuple[pl.DataFrame, Counter[str]]:
    """Each rule in turn over ``part``: count its hits, then replace them."""
    lf = part.lazy()
    count_cols: dict[str, list[str]] = {}
    for i, rule in enumerate(chosen):
        names = [f"__n{i}_{j}" for j in range(len(columns))]
        count_cols[rule.kind] = count_cols.get(rule.kind, []) + names
        lf = lf.with_columns(
            pl.col(c).str.count_matches(rule.pattern).fill_null(0).alias(n)
            for c, n in zip(columns, names, strict=True)
        ).with_columns(pl.col(c).str.replace_all(rule.pattern, rule.replacement) for c in columns)
    out = lf.collect()
    counts: Counter[str] = Counter()
    for kind, names in count_cols.items():
        total = int(out.select(pl.sum_horizontal(pl.col(names).sum())).item())
        if total:
            counts[kind] += total
    return out.select(columns), counts


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
