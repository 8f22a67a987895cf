"""What counts as a secret or a contact, as Rust-regex patterns Polars runs over columns.

Each ``Rule`` is one kind: a pattern, the placeholder its hits become, and the capture
group a replacement keeps (a URL's scheme and user, the word ``password=``), so the
text around a secret still reads. Rules run in ``RULES`` order: the specific ones
(PEM blocks, URL credentials, provider keys) before the generic ones (assignments,
long hex, emails), so each secret is counted once, under its most precise kind.

Provider key shapes come from ``detect-secrets``' plugins where theirs compile in
Rust's regex engine (no look-arounds; ``DETECT_SECRETS``); the BIP-39 list comes from
``mnemonic``. Seed phrases are the one kind not found by running its pattern: ``seed``
looks the words up (same hits, a fraction of the time).
Public wallet addresses (``0x`` + 40 hex, base58 addresses of 25–44 characters,
bech32) match no rule: they are not secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Rule:
    """One kind of secret: ``pattern`` hits become ``placeholder`` (after ``keep``)."""

    kind: str
    group: str  # credentials | wallets | contacts
    pattern: str
    placeholder: str
    #: The hit starts with capture group 1, which the replacement keeps (e.g. "password=").
    keeps_prefix: bool = False
    #: Text the hit ends with that the replacement puts back (the "@" of a URL).
    suffix: str = ""
    #: Found by word lookup (``seed``), not by running ``pattern``: the pattern is the
    #: reference the lookup is tested against, too slow to run on every text.
    by_words: bool = False
    #: Every ``\b`` of ``pattern`` has a word character of the hit beside it (a letter or
    #: digit), so the redaction gate may read it as an ASCII boundary (``redact.gate_form``).
    #: Not so where the hit may begin or end with a "." or "-" (an email's first character).
    word_edges: bool = True

    @property
    def replacement(self) -> str:
        return ("${1}" if self.keeps_prefix else "") + self.placeholder + self.suffix


def _secret(
    kind: str,
    pattern: str,
    group: str = "credentials",
    keep: bool = False,
    suffix: str = "",
    word_edges: bool = True,
) -> Rule:
    return Rule(kind, group, pattern, f"<SECRET:{kind}>", keep, suffix, word_edges=word_edges)


#: The patterns of three ``detect-secrets`` 1.5 plugins (``plugins.aws.AWSKeyDetector``,
#: ``plugins.github_token.GitHubTokenDetector``, ``plugins.sendgrid.SendGridDetector``),
#: copied: importing that package costs each process that redacts 0.06-0.1 s, a tenth of
#: what redaction adds to a build of 20k agent-shaped trajectories. ``detect-secrets`` is
#: a test dependency; ``tests/privacy/test_rules.py`` holds the copy to its plugins.
DETECT_SECRETS: dict[str, tuple[str, ...]] = {
    "AWSKeyDetector": (
        "(?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16}",
        r"""aws.{0,20}?(?:key|pwd|pw|password|pass|token).{0,20}?[\'\"]([0-9a-zA-Z/+]{40})[\'\"]""",
    ),
    "GitHubTokenDetector": ("(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9_]{36}",),
    "SendGridDetector": (r"SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}",),
}


def _any(patterns: Sequence[str]) -> str:
    return "(?:" + "|".join(f"(?:{p})" for p in patterns) + ")"


#: Characters of a password-like value: stops at quotes, brackets and separators, so
#: code such as ``password = os.environ["PW"]`` or ``secret=get_secret()`` stays.
_VALUE = r"[^\s\"'`<>,;(){}\[\]]"
#: A value worth redacting after ``password=``: 6+ characters with a digit, or 12+
#: characters of a key alphabet (no dots or underscores: not an attribute or identifier).
_SECRET_VALUE = (
    "(?:"
    + "|".join(f"{_VALUE}{{{i}}}\\d{_VALUE}{{{max(5 - i, 0)},}}" for i in range(6))
    + f"|{_VALUE}{{6,}}\\d{_VALUE}*|[A-Za-z0-9+/=!@#$%^&*~-]{{12,}})"
)
_SECRET_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|client[_-]?secret|secret[_-]?key|api[_-]?key|apikey"
    r"|access[_-]?token|auth[_-]?token|api[_-]?token|refresh[_-]?token|private[_-]?key"
)
B58 = "[1-9A-HJ-NP-Za-km-z]"
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
#: First octet of an address outside loopback (127.x) and "this network" (0.x).
_FIRST_OCTET = r"(?:25[0-5]|2[0-4]\d|1(?:[01]\d|2[0-689]|[3-9]\d)|[1-9]\d?)"
_H4 = "[0-9a-fA-F]{1,4}"


@cache
def bip39_words() -> tuple[str, ...]:
    """The 2048 English BIP-39 words, from the ``mnemonic`` package."""
    from mnemonic import Mnemonic

    return tuple(Mnemonic("english").wordlist)


#: Between the words of a seed phrase: spaces, a comma, one line break, "3." numbering.
WORD_SEP = r"(?:[ \t]*[,;]?[ \t]*\r?\n?[ \t]*(?:\d{1,2}[.):][ \t]*)?)"


def _mnemonic_pattern() -> str:
    """12–24 consecutive BIP-39 words, separated by spaces, commas or newlines, optionally
    numbered ("1. abandon 2. ability …" or "1) …")."""
    word = "(?:" + "|".join(sorted(bip39_words(), key=len, reverse=True)) + ")"
    sep = WORD_SEP
    # Lowercase only, as wallets print them: ``(?i)`` makes the automaton too big to build.
    return rf"\b(?:\d{{1,2}}[.):][ \t]*)?{word}(?:\b{sep}{word}){{11,23}}\b"


def _credentials() -> list[Rule]:
    # A block cut off before its END line (a truncated prompt) takes its base64 lines.
    pem = (
        r"-----BEGIN[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----"
        r"(?:(?s:.*?)-----END[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----|(?:\s*[A-Za-z0-9+/=]{16,})*)"
    )
    return [
        _secret("private_key_block", pem),
        _secret(
            "url_password",
            r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@\"'<>]*:)[^\s/?#@\"'<>]+@",
            keep=True,
            suffix="@",
        ),
        _secret("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        _secret("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
        _secret(
            "openai_key",
            r"\bsk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9]{32,}\b",
        ),
        _secret("groq_key", r"\bgsk_[A-Za-z0-9]{32,}\b"),
        _secret("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
        _secret("aws_access_key", rf"\b{_any(DETECT_SECRETS['AWSKeyDetector'][:1])}\b"),
        _secret(
            "aws_secret_key",
            r"(?i)(\baws[A-Za-z0-9_ .-]{0,30}?(?:secret|key)[A-Za-z_ ]{0,20}[\"']?\s*[:=]"
            r"\s*[\"']?)[A-Za-z0-9/+]{40}\b",
            keep=True,
            word_edges=False,  # the key may end with "/" or "+"
        ),
        _secret(
            "github_token",
            rf"\b{_any(DETECT_SECRETS['GitHubTokenDetector'])}\b"
            r"|\bgithub_pat_[A-Za-z0-9_]{22,}",
        ),
        _secret(
            "gitlab_token",
            r"\b(?:glpat|gldt|glft|glsoat|glrt|glcbt|glimt|glptt|glagent|gloas)-[A-Za-z0-9_-]{20,}",
        ),
        _secret(
            "slack_token",
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Za-z0-9-]{10,}"
            r"|https://hooks\.slack\.com/services/[A-Za-z0-9_/]+",
        ),
        _secret(
            "discord_token",
            r"\b[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27,38}\b",
            word_edges=False,  # it may end with "-"
        ),
        _secret("telegram_bot_token", r"\b\d{8,10}:AA[0-9A-Za-z_-]{33}"),
        _secret(
            "stripe_key", r"\b(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{16,}|\bwhsec_[A-Za-z0-9]{24,}"
        ),
        _secret("sendgrid_key", _any(DETECT_SECRETS["SendGridDetector"])),
        _secret(
            "bearer_token",
            r"(?i)(\b(?:bearer|token|basic)\s+)[A-Za-z0-9._~+/=-]{16,}",
            keep=True,
        ),
    ]


def _wallets() -> list[Rule]:
    return [
        _secret("eth_private_key", r"\b(?:0x)?[0-9a-fA-F]{64}\b", "wallets"),
        _secret(
            "btc_private_key",
            rf"\b(?:5[HJK]{B58}{{49}}|[KL]{B58}{{51}}|[xt]prv{B58}{{100,108}})\b",
            "wallets",
        ),
        _secret("solana_private_key", rf"\b{B58}{{86,90}}\b", "wallets"),
        Rule("mnemonic", "wallets", _mnemonic_pattern(), "<SECRET:mnemonic>", by_words=True),
    ]


def _generic() -> list[Rule]:
    """Secrets known only by the word before them; after the wallets, so a private key
    written as ``private_key = 0x…`` counts as a wallet key."""
    return [
        _secret(
            "password",
            rf"(?i)(\b(?:{_SECRET_WORDS})\b[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?){_SECRET_VALUE}",
            keep=True,
        ),
        _secret(
            "token",
            r"(?i)(\b(?:key|token|secret|credential)s?\b[^A-Za-z0-9\n]{1,6})"
            r"(?:[1-9A-Za-z+/_=-]|0[^xX])[A-Za-z0-9+/_=-]{30,}",
            keep=True,
        ),
    ]


def _contacts() -> list[Rule]:
    ipv4 = rf"\b{_FIRST_OCTET}(?:\.{_OCTET}){{3}}\b"
    ipv6 = (
        rf"\b{_H4}(?::{_H4}){{7}}\b"
        rf"|\b{_H4}(?::{_H4}){{1,6}}::(?:{_H4}(?::{_H4}){{0,5}})?"
        rf"|\b{_H4}::{_H4}(?::{_H4}){{1,5}}\b|\bfe80::[0-9a-fA-F:]*[0-9a-fA-F]"
    )
    phone = (
        r"\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){1,2}(?:[ .-]?\d{2,4}){2,4}\b"
        r"|(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b"
        r"|\b0[1-9]\d{1,3}[ -]\d{3,4}[ -]?\d{3,4}\b"
    )
    return [
        Rule(
            "email",
            "contacts",
            r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
            "<EMAIL>",
            word_edges=False,  # it may begin with "." or "-"
        ),
        Rule("ip_address", "contacts", f"{ipv4}|{ipv6}", "<IP>"),
        Rule("phone", "contacts", phone, "<PHONE>"),
    ]


@cache
def rules() -> tuple[Rule, ...]:
    """Every rule, in the order they run."""
    return (*_credentials(), *_wallets(), *_generic(), *_contacts())


def kinds() -> tuple[str, ...]:
    return tuple(r.kind for r in rules())
