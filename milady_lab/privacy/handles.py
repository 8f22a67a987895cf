"""Handle pseudonyms: the people an agent talks to become ``user_<8 hex>``.

Handles are found the way elizaOS writes conversations into prompts: a speaker at the
start of a line (``kai: gm``, ``[12:01] kai: gm``) and mentions (``@kai``). Every
whole-word occurrence of a found handle, in every column, then becomes its pseudonym:
an HMAC of the lowercased handle under a key, so it is the same in every dataset built
with that key (consistent, not reversible without it) and differs under another key.
The agent's own name (``You are <Name>`` in the system prompts) and prompt headings
(``Time:``, ``Task:``) are never handles.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

import polars as pl

#: A speaker at the start of a line, after an optional "[time]" or "(just now)".
_SPEAKER = (
    r"(?m)^[ \t]*(?:\[[^\]\n]{0,40}\][ \t]*|\([^)\n]{0,40}\)[ \t]*)*"
    r"@?[A-Za-z][A-Za-z0-9_-]{0,30}[A-Za-z0-9_]:[ \t]"
)
_SPEAKER_NAME = r"([A-Za-z][A-Za-z0-9_-]{0,30}[A-Za-z0-9_]):[ \t]$"
#: ``@name`` after a space, a bracket or punctuation (not ``user@host``, not a URL's
#: ``…>@host`` once its password is redacted), and not followed by a dot (a domain).
_MENTION = r"(?:^|[\s(\[,;:!?\"'])@[A-Za-z0-9_]{2,32}(?:$|[^A-Za-z0-9_.@]|\.(?:$|\s))"
_MENTION_NAME = r"@([A-Za-z0-9_]+)"
_AGENT = r"\bYou are ([A-Z][A-Za-z0-9_-]{1,31})"
#: Line labels of prompts and replies that are not people.
NOT_HANDLES = frozenset(
    (
        "time",
        "date",
        "task",
        "note",
        "notes",
        "format",
        "answer",
        "question",
        "context",
        "thought",
        "thoughts",
        "text",
        "response",
        "responses",
        "action",
        "actions",
        "user",
        "users",
        "assistant",
        "system",
        "human",
        "ai",
        "bot",
        "agent",
        "example",
        "examples",
        "output",
        "input",
        "instructions",
        "rules",
        "goal",
        "goals",
        "status",
        "result",
        "results",
        "error",
        "warning",
        "info",
        "tip",
        "summary",
        "id",
        "url",
        "http",
        "https",
        "ftp",
        "mailto",
        "file",
        "data",
        "name",
        "message",
        "messages",
        "reply",
        "replies",
        "step",
        "steps",
        "provider",
        "providers",
        "query",
        "purpose",
        "model",
        "topic",
        "title",
        "description",
        "bio",
        "lore",
        "style",
        "about",
        "knowledge",
        "facts",
        "posts",
        "post",
        "recent",
        "exchange",
        "conversation",
        "available",
        "sources",
        "source",
        "warning",
        "todo",
        "fixme",
        "important",
        "reason",
        "plan",
        "here",
        "everyone",
        "channel",
        "room",
        "server",
    )
)
_SENTINEL_OPEN, _SENTINEL_CLOSE = "\x02", "\x03"


def _names(df: pl.DataFrame, column: str, whole: str, name: str) -> set[str]:
    found = (
        df.select(pl.col(column).str.extract_all(whole).alias("m"))
        .explode("m")
        .select(pl.col("m").str.extract(name, 1))
        .drop_nulls()
        .unique()
    )
    return set(found.to_series().to_list())


class Pseudonyms:
    """One dataset's handle → pseudonym map, grown batch by batch."""

    def __init__(self, key: bytes, agent_names: Sequence[str] = ("Milady",)) -> None:
        self._key = key
        self.agents = {n.lower() for n in agent_names}
        self.mapping: dict[str, str] = {}  # lowercased handle → pseudonym
        self._taken: set[str] = set()

    def pseudonym(self, handle: str) -> str:
        digest = hmac.new(self._key, handle.lower().encode(), hashlib.sha256).hexdigest()
        for width in (8, 12, 16, 64):  # longer on the (rare) clash within a dataset
            name = f"user_{digest[:width]}"
            if name not in self._taken:
                return name
        raise AssertionError("unreachable: 64 hex digits clash")

    def discover(self, df: pl.DataFrame, conversation: str, system: str | None) -> None:
        """Add the handles (and agent names) this batch shows to the map. Handles are
        looked for in the ``conversation`` column (the user prompts, where elizaOS puts
        the recent messages); replies and system prompts only get them replaced."""
        if system is not None:
            self.agents |= {n.lower() for n in _names(df, system, _AGENT, r"You are (\S+)")}
        found = _names(df, conversation, _SPEAKER, _SPEAKER_NAME)
        found |= _names(df, conversation, _MENTION, _MENTION_NAME)
        for handle in sorted(found):
            key = handle.lower()
            if key in self.mapping or key in self.agents or key in NOT_HANDLES:
                continue
            if key.startswith("user_") or key.isdigit():
                continue
            name = self.pseudonym(key)
            self.mapping[key] = name
            self._taken.add(name)

    def apply(self, df: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
        """Every whole-word occurrence of a known handle replaced, two passes per column:
        mark the hits (one regex), then swap the marked words (one Aho-Corasick pass)."""
        if not self.mapping:
            return df
        handles = sorted(self.mapping, key=len, reverse=True)
        pattern = r"(?i)\b(" + "|".join(re.escape(h) for h in handles) + r")\b"
        marks = [f"{_SENTINEL_OPEN}{h}{_SENTINEL_CLOSE}" for h in handles]
        names = [self.mapping[h] for h in handles]
        return df.with_columns(
            pl.col(c)
            .str.replace_all(pattern, f"{_SENTINEL_OPEN}${{1}}{_SENTINEL_CLOSE}")
            .str.replace_many(marks, names, ascii_case_insensitive=True)
            for c in columns
        )
