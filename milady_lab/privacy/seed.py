"""Seed phrases found by word lookup, not by a 2048-word regex.

A seed phrase is 12–24 BIP-39 words in a row (``rules._mnemonic_pattern`` is the
reference: this module finds exactly what it matches, ``tests/privacy/test_seed.py``
holds it to that). As a regex it is an alternation of 2048 words with Unicode word
boundaries, which Rust's fast engines give up on as soon as a text holds one
non-ASCII character (an emoji, a curly quote): on agent prose it ran at well under
1 MB/s, and its old pre-check ("12+ short lowercase words") let nearly every text
through, since ordinary English has such runs. Here instead, all in Polars:

1. ``candidate()`` (one DFA pass, beside the redaction gate's): 12+ words in a row,
   each of 4–8 lowercase letters or one of the 103 three-letter list words. English
   nearly never passes: its runs break at "a", "is", "I", capitals and full stops,
   and hold "the", "and", "for", "was". Its word boundaries are ASCII ones, which
   the DFA keeps: next to an ASCII letter or digit, ASCII sees a boundary wherever
   Unicode does, so no seed phrase is missed.
2. ``_spans``, on the texts that pass: every word (a maximal ``\\w+``, as ``\\b``
   sees words) is looked up in the set of 2048 words, the gap before it checked
   against the separator (spaces, a comma, one line break, "3." numbering), runs
   cut in 24-word matches as the regex's ``{11,23}`` does (a last piece under 12
   words is no match); a match keeps the "1." number in front of it, if any.
"""

from __future__ import annotations

from functools import cache

import polars as pl

from .rules import WORD_SEP, bip39_words

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


@cache
def candidate() -> str:
    """What every text with a seed phrase matches (see the module's docstring, 1.)."""
    short = "|".join(w for w in bip39_words() if len(w) == 3)
    word = rf"(?:{short}|[a-z]{{4,8}})"
    edge = r"(?-u:\b)"
    return rf"{edge}(?:\d{{1,2}}[.):][ \t]*)?{word}(?:{edge}{WORD_SEP}{word}){{11,}}{edge}"


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
            pl.col("word").is_in(_words().implode()).alias("hit"),
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


def replace(texts: pl.Series, placeholder: str) -> tuple[pl.Series, pl.Series]:
    """``texts`` with every seed phrase replaced by ``placeholder``, and how many each
    held (the regex's ``replace_all`` and ``count_matches``)."""
    rows = texts.str.contains(candidate()).fill_null(False).arg_true()
    frame = pl.DataFrame({"row": rows, "text": texts.gather(rows)})
    spans = _spans(frame)
    counts = pl.repeat(0, texts.len(), dtype=pl.UInt32, eager=True)
    if spans.height == 0:
        return texts, counts
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
            pl.len().alias("n"),
        )
        .select("row", pl.concat_str("text", "tail").alias("text"), "n")
    )
    return texts.clone().scatter(kept["row"], kept["text"]), counts.scatter(kept["row"], kept["n"])
