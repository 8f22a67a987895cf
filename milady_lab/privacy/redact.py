"""The redaction pass: every rule over whole Polars columns, in Rust, counted per kind.

Rust's fast regex engines (the DFAs) cannot follow a Unicode word boundary (``\\b``)
once a text holds a non-ASCII character, and agent prose nearly always does (emoji,
curly quotes, accents): the rules' exact patterns then fall back to an engine that
runs at a few MB/s. So each pattern runs first in its *gate form* (``gate_form``), which
the DFA keeps (hundreds of MB/s) and which matches wherever the exact one does: each
``\\b`` an ASCII boundary where a word character of the hit stands beside it, dropped
elsewhere. Dropping every ``\\b`` would do too, but then the hex runs of the UUIDs agents
write into their prompts read as phone numbers ("…f0756-1309-4835…"), and every such
prompt went through the exact rules for nothing. Seed phrases are looked up word by
word (``seed``).

Each distinct text of the columns is read once (system prompts and templates repeat
across most calls): one pass of every rule's gate form as alternatives, one of the
seed-phrase candidate. The boundaries keep that one pattern small. Without them, as
before, every hex character of a UUID (elizaOS writes entity and message ids into its
prompts) could start a counted run of every rule at once (``[0-9a-fA-F]{64}``, base58
``{86,90}``, the generic token's ``{30,}`` …), which overflowed the lazy DFA's cache: one
pattern of all rules took 3.2 s on the agent-shaped demo data, and even split in two (the
key-alphabet rules apart) the passes took 0.15 CPU-s per 40 MB batch. As one pattern with
boundaries: 0.09 s, the DFA's ~450 MB/s; 0.11 s against 0.19 s on messy agent prose.
The candidate stays a pattern of its own: merged in, it overflows the cache again.
The few texts they flag go through the rules in order:
each rule whose loose pattern hits them counts its exact hits, then replaces them.
Counts are multiplied by how often each text occurs, and the texts are swapped in
place, so the frame keeps its order and every other column.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache

import polars as pl

from . import seed
from .rules import Rule, rules

#: Polars' in-memory engine: on these passes (one batch of texts in memory, a few small
#: frames) it ran 10-40 % faster than the streaming one, Polars 2's default.
_ENGINE = "in-memory"


def _edges(pattern: str, edge: str) -> str:
    return re.sub(r"\\(.)", lambda m: edge if m.group(1) == "b" else m.group(0), pattern)


def loose(pattern: str) -> str:
    """``pattern`` without its word boundaries: it matches wherever ``pattern`` does."""
    return _edges(pattern, "")


#: The word characters beyond ASCII that a rule's hit can hold: other scripts' digits
#: (``\\d``) and, under ``(?i)``, the Kelvin sign and the long s (``k`` and ``s`` fold to
#: them). A text with none of them beside a ``\\b`` sees an ASCII boundary wherever it
#: sees a Unicode one; a text holding one anywhere passes the gate.
_WORD_BEYOND_ASCII = r"[[\d\x{17F}\x{212A}]&&[^0-9]]"


def gate_form(rule: Rule) -> str:
    """``rule.pattern`` as the gate runs it, which the DFA keeps: each ``\\b`` an ASCII
    boundary where ``rule.word_edges`` holds (a word character of the hit beside it:
    if that one is ASCII, a Unicode boundary there is an ASCII one; if not, it is one of
    ``_WORD_BEYOND_ASCII``, which the gate passes on its own), else dropped (``loose``)."""
    return _edges(rule.pattern, r"(?-u:\b)") if rule.word_edges else loose(rule.pattern)


@cache
def gate_pattern() -> str:
    """Any rule's hit but a seed phrase's, in gate form, and ``_WORD_BEYOND_ASCII``: one
    pattern of alternatives (see the module docstring)."""
    forms = [gate_form(r) for r in rules() if not r.by_words]
    return "|".join(f"(?:{p})" for p in (*forms, _WORD_BEYOND_ASCII))


def _probe(rule: Rule) -> str:
    """What every text with a hit of ``rule`` matches, in a DFA's time."""
    return seed.candidate() if rule.by_words else loose(rule.pattern)


def _flagged(texts: pl.LazyFrame) -> pl.LazyFrame:
    """The distinct texts of column ``t`` that hold something to redact, and the few
    that pass the gate or the seed-phrase candidate with nothing to redact (the exact
    rules and the word lookup then find nothing): two DFA passes, side by side."""
    return (
        texts.select(pl.col("t").drop_nulls().unique())
        .with_columns(
            pl.col("t").str.contains(gate_pattern()).alias("gate"),
            pl.col("t").str.contains(seed.candidate()).alias("seed"),
        )
        .filter(pl.col("gate") | pl.col("seed"))
        .select("t")
    )


def flagged_texts(texts: pl.Series) -> pl.Series:
    """``_flagged`` of a series: the distinct ``texts`` the rules run on."""
    return _flagged(texts.rename("t").to_frame().lazy()).collect(engine=_ENGINE).to_series()


#: What could let a pattern's hit hold a line break (a conservative reading of its text):
#: whitespace, non-word, non-digit, hex, octal and Unicode-property classes, a negated
#: class that does not name ``\n``, POSIX classes, the ``s`` flag (``.`` matching ``\n``),
#: line and text anchors, a line break in the pattern itself.
_MAY_CROSS_LINES = re.compile(
    r"\\[sWDnvxuUpP0]|\[\^(?![^\]]*\\n)|\[:|\(\?[a-z]*s|(?<![\[\\])\^|(?<!\\)\$|\\[Az]|\n"
)


def line_local(rule: Rule) -> bool:
    """Whether every hit of ``rule`` lies within one line, so it can run line by line.

    Why: the exact patterns run where the DFA cannot (a Unicode ``\\b`` beside a
    non-ASCII character), an engine whose cost grows with the haystack; on the lines of
    the few flagged agent prompts (~9 KB each) it runs ~8× faster than on the whole
    prompts. A line's ends are word boundaries as the ``\\n`` beside them is, so a
    line-local rule finds the same hits either way."""
    return not rule.by_words and not _MAY_CROSS_LINES.search(rule.pattern)


def _chain(texts: pl.Series, chosen: Sequence[Rule]) -> tuple[pl.Series, pl.DataFrame]:
    """Each of ``chosen`` in turn over all ``texts``: count its hits, then replace
    them. Consecutive line-local rules run over the texts' lines (``line_local``), the
    others over whole texts; the seed-phrase lookup over the texts as they stand.
    One query, collected once (and once more before a seed-phrase lookup)."""
    frame = texts.rename("t").to_frame().lazy()
    for local, group in itertools.groupby(chosen, key=line_local):
        run = list(group)
        if local:
            frame = _by_lines(frame, run)
            continue
        for rule in run:
            if rule.by_words:
                done = frame.collect(engine=_ENGINE)
                new, found = seed.replace(done["t"], rule.replacement)
                frame = done.with_columns(new, found.alias(rule.kind)).lazy()
            else:
                frame = frame.pipe(_count_and_replace, rule)
    out = frame.collect(engine=_ENGINE)
    return out["t"], out.drop("t")


def _count_and_replace(frame: pl.LazyFrame, rule: Rule) -> pl.LazyFrame:
    """``rule``'s hits in column ``t`` counted (a column named by its kind), then replaced."""
    count = pl.col("t").str.count_matches(rule.pattern).fill_null(0).alias(rule.kind)
    return frame.with_columns(count).with_columns(
        pl.col("t").str.replace_all(rule.pattern, rule.replacement)
    )


def _by_lines(frame: pl.LazyFrame, run: Sequence[Rule]) -> pl.LazyFrame:
    """``_count_and_replace`` of each of ``run`` over the lines of ``frame``'s texts,
    the lines joined back and the counts summed per text."""
    lines = frame.with_row_index("_text").with_columns(pl.col("t").str.split("\n"))
    lines = lines.explode("t")
    for rule in run:
        lines = lines.pipe(_count_and_replace, rule)
    kinds = [r.kind for r in run]
    joined = lines.group_by("_text", maintain_order=True).agg(
        pl.col("t").str.join("\n"), pl.exclude("t", *kinds).first(), pl.col(kinds).sum()
    )
    return joined.drop("_text")


def _loose_hits(texts: pl.Series, chosen: Sequence[Rule]) -> list[bool]:
    """Whether each rule's loose pattern hits any of ``texts``: one pass each."""
    probes = (pl.col("t").str.contains(_probe(r)).any().alias(str(i)) for i, r in enumerate(chosen))
    return list(texts.rename("t").to_frame().lazy().select(probes).collect(engine=_ENGINE).row(0))


def _apply_rules(texts: pl.Series, chosen: Sequence[Rule]) -> tuple[pl.Series, pl.DataFrame]:
    """The rules in turn over ``texts``: (the texts redacted, hits per text and kind).

    Only the rules whose loose pattern hits the texts run (a few, usually). A rule
    that only hits once earlier rules replaced something would be missed: if any
    does, all rules run again, each over the texts as the ones before left them.
    """
    before = _loose_hits(texts, chosen)
    some = [r for r, hit in zip(chosen, before, strict=True) if hit]
    out, hits = _chain(texts, some)
    after = _loose_hits(out, chosen)
    if any(hit and r not in some for r, hit in zip(chosen, after, strict=True)):
        out, hits = _chain(texts, chosen)
    return out, hits


def redact_frame(
    df: pl.DataFrame, columns: Sequence[str], chosen: Sequence[Rule] | None = None
) -> tuple[pl.DataFrame, Counter[str]]:
    """``df`` with every secret and contact in ``columns`` replaced by its placeholder,
    and the number of hits per kind. Other columns and the row order are kept.

    Three steps, each as few trips into Polars as it takes: the build's reader thread
    holds the GIL most of the time, and each return from a Polars call that released
    it waits for the reader's switch interval (~5 ms). The old pass made ~50 such
    trips a batch, which tripled its time beside the reader."""
    if df.height == 0:
        return df, Counter()
    # Every text, column after column: row r of column k is text k * height + r.
    texts = pl.concat([df.lazy().select(pl.col(c).cast(pl.String).alias("t")) for c in columns])
    # 1. Each flagged text once, with where it occurs.
    occurs = texts.with_row_index("i").join(_flagged(texts), on="t", how="semi")
    seen = occurs.group_by("t", maintain_order=True).agg("i").collect(engine=_ENGINE)
    if seen.height == 0:
        return df, Counter()
    # 2. The rules over those texts.
    cleaned, hits = _apply_rules(seen["t"], chosen or rules())
    # 3. The hits counted per occurrence, and the changed texts put back in place.
    found = pl.DataFrame([*seen, cleaned.alias("new"), *hits]).lazy()
    counts = found.select((pl.col(k) * pl.col("i").list.len()).sum() for k in hits.columns)
    redacted = _put_back(df, columns, found.filter(pl.col("new") != pl.col("t")))
    totals, out = pl.collect_all([counts, redacted], engine=_ENGINE)
    hit = {k: n for k, n in (totals.row(0, named=True) if totals.width else {}).items() if n}
    return out, Counter(hit)  # a text the gate passes may hold no hit


def _put_back(df: pl.DataFrame, columns: Sequence[str], changed: pl.LazyFrame) -> pl.LazyFrame:
    """``df`` with each of ``changed``'s texts (``new``) at its places (``i``: a list of
    indices into ``columns``' texts, one column after another)."""
    at = changed.explode("i").select(
        (pl.col("i") // df.height).alias("_column"), (pl.col("i") % df.height).alias("_row"), "new"
    )
    out = df.lazy().with_row_index("_row")
    for k, col in enumerate(columns):
        if df.schema[col] == pl.Null:  # all null: nothing to put back, and it stays Null
            continue
        new = at.filter(pl.col("_column") == k).select("_row", pl.col("new").alias("_new"))
        out = (
            out.join(new, on="_row", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_new", pl.col(col).cast(pl.String)).alias(col))
            .drop("_new")
        )
    return out.drop("_row")


def redact_texts(texts: Sequence[str | None]) -> tuple[list[str | None], Counter[str]]:
    """The same pass over a list of strings (for one-off texts and tests)."""
    df = pl.DataFrame({"text": list(texts)}, schema={"text": pl.String})
    out, counts = redact_frame(df, ["text"])
    return out["text"].to_list(), counts
