"""Seed phrases found by word lookup, not by a 2048-word regex.

A seed phrase is 12–24 BIP-39 words in a row (``rules._mnemonic_pattern`` is the
reference: this module finds exactly what it matches, ``tests/privacy/test_seed.py``
holds it to that). As a regex it is an alternation of 2048 words with Unicode word
boundaries, which Rust's fast engines give up on as soon as a text holds one
non-ASCII character (an emoji, a curly quote): on agent prose it ran at well under
1 MB/s on nearly every text, since ordinary English has runs of 12 short lowercase
words too. Here instead, all in Polars:

1. ``maybe``: the runs of 12+ short lowercase words (the candidate pattern with ASCII
   word boundaries, which the DFA keeps: a superset of the Unicode ones next to an
   ASCII letter) are cut out, de-duplicated, and looked up word by word in the set of
   2048 words: a text is kept if one of its runs has 12 listed words in a row.
2. ``replace``: on the texts kept, every word (a maximal ``\\w+``, as ``\\b`` sees
   words) is looked up, the gaps between listed words checked against the separator
   (spaces, a comma, one line break, "3." numbering), runs cut in 24-word matches as
   the regex's ``{11,23}`` does (a last piece under 12 words is no match), and each
   match (with its "1." number in front, if any) becomes the placeholder.
"""

from __future__ import annotations

from functools import cache

import polars as pl

from .rules import MNEMONIC_CANDIDATE, WORD_SEP, bip39_words

#: The pre-check with ASCII ``\b``: where Unicode sees a boundary next to an ASCII
#: letter or digit, ASCII sees one too, so every seed phrase still matches.
CANDIDATE = MNEMONIC_CANDIDATE.replace(r"\b", r"(?-u:\b)")
#: A word with what stands before it: other characters and a "12." number, if any
#: (so a number that a separator allows is part of the gap, not a word).
_PIECE = r"\W*(?:\d{1,2}[.):]\W*)?\w+"
_GAP_OK = rf"^{WORD_SEP}$"
#: The number a match starts with ("3. " before its first word), after a boundary.
_NUMBER = r"(?:^|\W)(\d{1,2}[.):][ \t]*)$"
MIN_WORDS, MAX_WORDS = 12, 24


@cache
def _words() -> pl.Series:
    return pl.Series("w", bip39_words(), dtype=pl.String)


def _pieces(texts: pl.DataFrame) -> pl.LazyFrame:
    """One row per word of each text (``row``, ``text``): the word, whether the gap
    before it lets a phrase go on, and its character offsets in the text."""
    return (
        texts.lazy()
        .select("row", pl.col("text").str.extract_all(_PIECE).alias("piece"))
        .explode("piece")
        .drop_nulls("piece")
        .with_columns(pl.col("piece").str.extract(r"(\w+)$", 1).alias("word"))
        .with_columns(
            pl.col("piece").str.len_chars().cum_sum().over("row").alias("end"),
            pl.col("word").str.len_chars().alias("n"),
        )
        .with_columns(
            (pl.col("end") - pl.col("n")).alias("start"),
            pl.col("word").is_in(_words()).alias("hit"),
            pl.col("piece")
            .str.head(pl.col("piece").str.len_chars() - pl.col("n"))
            .str.contains(_GAP_OK)
            .alias("gap_ok"),
        )
    )


def _spans(texts: pl.DataFrame) -> pl.DataFrame:
    """Each match of the reference pattern in ``texts`` (``row``, ``text``): its
    ``row`` and its ``[start, end)`` character offsets, in text order."""
    linked = pl.col("hit") & pl.col("hit").shift(1).over("row").fill_null(False)
    runs = (
        _pieces(texts)
        .with_columns((pl.col("hit") & ~(linked & pl.col("gap_ok"))).cum_sum().alias("run"))
        .filter("hit")
        .with_columns((pl.int_range(pl.len()).over("run") // MAX_WORDS).alias("chunk"))
        .group_by("run", "chunk")
        .agg(pl.col("row").first(), pl.col("start").first(), pl.col("end").last(), pl.len())
        .filter(pl.col("len") >= MIN_WORDS)
    )
    number = (
        pl.col("text")
        .str.head(pl.col("start"))
        .str.extract(_NUMBER, 1)
        .str.len_chars()
        .fill_null(0)
    )
    return (
        runs.join(texts.lazy(), on="row")
        .select("row", (pl.col("start") - number).alias("start"), "end")
        .sort("row", "start")
        .collect()
    )


def maybe(texts: pl.Series) -> pl.Series:
    """Which ``texts`` may hold a seed phrase: every one that does, and rarely one that
    does not (a run cut out of its text may lose a word character at its edge)."""
    regions = pl.DataFrame({"text": texts}).with_row_index("row")
    regions = regions.select("row", pl.col("text").str.extract_all(CANDIDATE)).explode("text")
    distinct = regions.select(pl.col("text").drop_nulls().unique()).with_row_index("row")
    if distinct.height == 0:
        return pl.repeat(False, texts.len(), eager=True)
    found = distinct.filter(pl.col("row").is_in(_spans(distinct)["row"].unique()))["text"]
    flagged = regions.filter(pl.col("text").is_in(found))["row"].unique()
    return pl.int_range(texts.len(), eager=True).is_in(flagged)


def replace(texts: pl.Series, placeholder: str) -> tuple[pl.Series, int]:
    """``texts`` with every seed phrase replaced by ``placeholder``, and how many."""
    rows = texts.str.contains(CANDIDATE).fill_null(False).arg_true()
    frame = pl.DataFrame({"row": rows, "text": texts.gather(rows)})
    spans = _spans(frame)
    if spans.height == 0:
        return texts, 0
    kept = (
        spans.join(frame, on="row")
        .with_columns(pl.col("end").shift(1).over("row").fill_null(0).alias("prev"))
        .group_by("row", maintain_order=True)
        .agg(
            (
                pl.col("text").str.slice(pl.col("prev"), pl.col("start") - pl.col("prev"))
                + pl.lit(placeholder)
            ).str.join(""),
            pl.col("text").first().str.slice(pl.col("end").last()).alias("tail"),
        )
        .select("row", pl.concat_str("text", "tail").alias("text"))
    )
    return texts.clone().scatter(kept["row"], kept["text"]), spans.height
