"""The redaction rules on their own: every kind in several forms is found and counted
once, under its own kind; ordinary text (words with "sk", colours, numbers, dates,
public addresses, code without secrets) comes out byte for byte."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from milady_lab.privacy import kinds, redact_frame, redact_texts, seed
from milady_lab.privacy.redact import flagged_texts, gate_form, line_local
from milady_lab.privacy.rules import DETECT_SECRETS, rules

from .corpus import CLEAN, PLANTS

FORMS = [(kind, text, secret) for kind, forms in PLANTS.items() for text, secret in forms]


def test_every_kind_of_the_issue_is_planted_in_several_forms() -> None:
    assert set(PLANTS) == set(kinds())
    thin = {k: len(v) for k, v in PLANTS.items() if len(v) < 2}
    # A few shapes have one documented form only (SendGrid: one key format).
    assert set(thin) <= {"sendgrid_key"}, thin


@pytest.mark.parametrize(("kind", "text", "secret"), FORMS, ids=[f[0] for f in FORMS])
def test_each_form_becomes_its_placeholder_and_counts_once(kind, text, secret) -> None:
    [out], counts = redact_texts([text])
    assert secret not in out
    assert counts == Counter({kind: 1})
    placeholder = {"email": "<EMAIL>", "phone": "<PHONE>", "ip_address": "<IP>"}
    assert placeholder.get(kind, f"<SECRET:{kind}>") in out


def test_text_around_a_secret_still_reads() -> None:
    [url, assign], _ = redact_texts(
        ["postgresql://milady:pw0rd1234@db.example.com:5432/agent", "password=hunter22 ok"]
    )
    assert url == "postgresql://milady:<SECRET:url_password>@db.example.com:5432/agent"
    assert assign == "password=<SECRET:password> ok"


def test_ordinary_text_is_left_alone() -> None:
    out, counts = redact_texts(CLEAN)
    assert out == CLEAN
    assert counts == Counter()


def test_all_kinds_at_once_in_a_long_text_count_per_kind() -> None:
    filler = "\nthe conversation went on about net art and lo-fi music. " * 20 + "\n"
    text = filler.join(t for _k, t, _s in FORMS) + filler
    [out], counts = redact_texts([text])
    assert counts == Counter(k for k, _t, _s in FORMS)
    assert not [s for _k, _t, s in FORMS if s in out]
    assert out.count("the conversation went on about net art") == 20 * len(FORMS)


def test_frame_keeps_order_nulls_and_other_columns() -> None:
    df = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "a": [None, "mail kai@example.com", "nothing here", "AKIAABCDEFGHIJKLMNOP x"],
            "b": ["ok", None, "gm", "fine"],
        }
    )
    out, counts = redact_frame(df, ["a", "b"])
    assert out["id"].to_list() == [1, 2, 3, 4]
    assert out["a"].to_list() == [None, "mail <EMAIL>", "nothing here", "<SECRET:aws_access_key> x"]
    assert out["b"].to_list() == ["ok", None, "gm", "fine"]
    assert counts == Counter({"email": 1, "aws_access_key": 1})


def test_seed_phrase_needs_twelve_list_words_in_a_row() -> None:
    from milady_lab.privacy.rules import bip39_words

    eleven = " ".join(bip39_words()[100:111])
    twelve_with_intruder = " ".join([*bip39_words()[100:106], "milady", *bip39_words()[106:112]])
    out, counts = redact_texts([eleven, twelve_with_intruder])
    assert out == [eleven, twelve_with_intruder] and not counts


def test_placeholders_are_stable_under_a_second_pass() -> None:
    once, _ = redact_texts([t for _k, t, _s in FORMS])
    twice, counts = redact_texts(once)
    assert twice == once and not counts


def test_an_all_null_column_stays_as_it_is() -> None:
    df = pl.DataFrame({"a": ["mail kai@example.com", None], "b": [None, None]})
    out, counts = redact_frame(df, ["a", "b"])
    assert out.schema == df.schema and out["b"].to_list() == [None, None]
    assert out["a"].to_list() == ["mail <EMAIL>", None] and counts == Counter({"email": 1})


def test_a_text_repeated_in_rows_and_columns_counts_each_time() -> None:
    df = pl.DataFrame({"a": ["ip 203.0.113.42", "ip 203.0.113.42"], "b": ["ip 203.0.113.42", "x"]})
    out, counts = redact_frame(df, ["a", "b"])
    assert out.rows() == [("ip <IP>", "ip <IP>"), ("ip <IP>", "x")]
    assert counts == Counter({"ip_address": 3})
    assert df["a"].to_list() == ["ip 203.0.113.42"] * 2  # the frame given is left as it was


def test_a_loose_hit_that_is_no_hit_is_not_counted() -> None:
    # "x203.0.113.42": the IPv4 pattern without its \b matches, the rule does not.
    out, counts = redact_texts(["host x203.0.113.42 and kai@example.com"])
    assert out == ["host x203.0.113.42 and <EMAIL>"] and dict(counts) == {"email": 1}


#: Beside a secret: word characters beyond ASCII (a letter, an Arabic-Indic and a
#: mathematical digit, the long s and the Kelvin sign, which ``(?i)`` folds s and k to),
#: ASCII ones, and characters that are no word's.
EDGES = ["é", "٣", "𝟙", "ſ", "\u212a", "x", "7", "_", "🙂", "’", ".", " "]
#: Inside one: its last ASCII digit as another script's, its s and k folded.
SWAPS = [("3", "٣"), ("s", "ſ"), ("k", "\u212a"), ("S", "ſ"), ("K", "\u212a")]


def _edge_cases() -> list[str]:
    out = []
    for _kind, text, secret in FORMS:
        out += [text.replace(secret, a + secret + b) for a in EDGES for b in EDGES[::5]]
        for old, new in SWAPS:
            at = text.rfind(old)
            out += [text[:at] + new + text[at + 1 :]] if at >= 0 else []
    return [*out, "write to é.%@example.com"]  # an email that starts with no word character


def test_the_gate_passes_every_text_a_rule_hits() -> None:
    # Its ASCII word boundaries are DFA work; a Unicode one the exact rule sees where
    # the ASCII one does not must still send the text to the rules.
    texts = pl.Series(_edge_cases())
    exact = [r for r in rules() if not r.by_words]
    frame = texts.to_frame("t")
    hit = frame.select(pl.any_horizontal(pl.col("t").str.contains(r.pattern) for r in exact))
    hit = hit.to_series()
    passed = texts.is_in(flagged_texts(texts).implode())
    assert not texts.filter(hit & ~passed).to_list()
    # Not vacuous: texts a rule hits where that rule's own gate form misses exist here.
    alone = frame.select(
        pl.any_horizontal(
            pl.col("t").str.contains(r.pattern) & ~pl.col("t").str.contains(gate_form(r))
            for r in exact
        )
    )
    assert alone.to_series().sum() > 0


def test_the_hex_runs_of_uuids_are_no_phone_numbers_to_the_gate() -> None:
    # Without word boundaries "0756-1309-4835" reads as a phone number: every agent prompt
    # with message ids went through the exact rules for nothing.
    line = "22:24 (7 minutes ago) [232f0756-1309-4835-9d0f-5b290d1507a8] wren: hi there"
    assert flagged_texts(pl.Series([line, "call 0756-1309-4835 now"])).to_list() == [
        "call 0756-1309-4835 now"
    ]


def test_the_provider_shapes_are_detect_secrets_own() -> None:
    from detect_secrets.plugins import aws, github_token, sendgrid

    plugins = (aws.AWSKeyDetector, github_token.GitHubTokenDetector, sendgrid.SendGridDetector)
    assert {p.__name__: tuple(r.pattern for r in p.denylist) for p in plugins} == DETECT_SECRETS


def test_only_rules_whose_hits_stay_on_one_line_run_line_by_line() -> None:
    local = {r.kind for r in rules() if line_local(r)}
    assert {"phone", "email", "ip_address", "eth_private_key", "jwt"} <= local
    # A PEM block spans lines; a password may follow its "=" on the next line; the token
    # rule's ``0[^xX]`` takes a "0" then a line break.
    assert not {"private_key_block", "password", "bearer_token", "token", "mnemonic"} & local


def _whole_text_reference(texts: list[str]) -> tuple[list[str], Counter[str]]:
    """Every rule in order over whole texts, the plain way."""
    s, counts = pl.Series(texts), Counter[str]()
    for rule in rules():
        if rule.by_words:
            s, found = seed.replace(s, rule.replacement)
        else:
            found = s.str.count_matches(rule.pattern)
            s = s.str.replace_all(rule.pattern, rule.replacement)
        counts[rule.kind] += int(found.sum())
    return s.to_list(), +counts


def test_line_by_line_finds_what_whole_texts_do() -> None:
    # Every form between non-ASCII lines (the exact patterns' slow case), all in one text.
    texts = [f"café ✨\n{text}\n— ok 👍" for _k, text, _s in FORMS]
    texts.append("\n🙂 ".join(text for _k, text, _s in FORMS))
    out, counts = redact_texts(texts)
    assert (out, counts) == _whole_text_reference(texts)
