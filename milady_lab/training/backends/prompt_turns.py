"""Where the conversation and the output-format instructions sit inside an agent's prompt.

An elizaOS prompt is a template the runtime fills: a task line, the providers (the
character, facts, the recent conversation as ``Name: text`` or ``(time) [id] Name: text``
lines under a header such as ``# Conversation Messages``), rules, the actions, and last
the output format with an example. When an example is longer than ``maxSeqLength``, the
oldest conversation turns are what the model misses least and the format instructions
what it misses most: cut from the left, the fine-tuned model stopped following the
format. This module finds both in the prompt's text, without a tokenizer; ``data``
decides how many turns go and keeps the format. A prompt with no conversation it can
recognise has no turns, so nothing that is not a turn is ever dropped as one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The line that starts a turn, as elizaOS's ``formatMessages`` writes it (``14:05 (5
#: minutes ago) [entity id] Name: text``, or ``... [id] (Name's actions: REPLY)`` for a
#: message with actions only) or plainly ``Name: text``. A speaker is a name, not a TOON
#: key (``topics[0]``) nor a list item (``- name``); the lines that follow (the
#: message's next lines, its ``(Name's internal thought: ...)``) continue the turn.
_SPEAKER = re.compile(
    r"(?:\d{1,2}:\d{2}(?::\d{2})?[ \t]+)?"
    r"(?:\((?P<time>[^()\n]{1,40})\)[ \t]+)?(?:\[(?P<id>[^\[\]\n]{1,80})\][ \t]+)?"
    r"(?:(?P<name>\w[\w .'@()-]{0,39}?):[ \t]+\S|\((?P<actor>\w[\w .'@-]{0,39}?)'s actions: )"
)
#: A header that introduces a conversation (``# Conversation Messages``, ``recent
#: conversation:``, ``recent_messages:``, ``# Recent Interactions:``), not the
#: character's example conversations.
_CONVERSATION_HEADER = re.compile(
    r"[ \t]*(?:#+[ \t]*)?(?![^\n]*example)[\w ]{0,40}?"
    r"(?:conversation|messages|interactions|posts|chat|history|dialog)[\w ()-]{0,40}:?[ \t]*$",
    re.IGNORECASE,
)
#: A line that starts another section: a markdown header or a bare ``key:`` line.
_SECTION = re.compile(r"[ \t]*(?:#|[\w\[\]{}(),. -]{1,60}:[ \t]*$)")
#: A line that opens the output-format instructions, as the @elizaos/prompts templates
#: and the older XML ones write it (``output:``, ``Respond using TOON like this:``,
#: ``Response format should be ...``, ``# Instructions:``, ``fields[5]{...}:``, ...).
_FORMAT = re.compile(
    r"[ \t]*(?:#+[ \t]*(?:instructions?\b|response format)|output\b|response format"
    r"|respond(?:ing)? (?:using|in|with)\b|return (?:in|exactly|only)\b|keys:"
    r"|fields\[|formatting:|your (?:output|response) (?:should|must)\b"
    r"|use indexed toon|examples?:[ \t]*$|(?:toon|xml|json) only\b)",
    re.IGNORECASE,
)

#: A turn's [start, end) character span in the prompt, its line break included.
Span = tuple[int, int]


@dataclass(frozen=True)
class PromptLayout:
    """What ``prompt_layout`` found in one prompt."""

    #: The conversation turns, oldest first (a turn is its speaker line and the lines
    #: that continue its message).
    turns: tuple[Span, ...]
    #: Where the output-format instructions begin; None when none were recognised.
    format_start: int | None


@dataclass(frozen=True)
class _Run:
    """Consecutive speaker lines: each turn as [first line, end line)."""

    turns: list[tuple[int, int]]
    anchored: bool  # right after a conversation header
    prefixed: bool  # every turn written ``(time) [id] Name: text`` (elizaOS's form)
    repeated: bool  # a speaker speaks twice, and there are two speakers at least
    after_example: bool  # right after a line that mentions an example


def _turn_start(line: str) -> re.Match[str] | None:
    """The speaker of ``line`` when it starts a turn (an ``(Name's actions: ...)`` line
    without its time or id continues the turn above)."""
    m = _SPEAKER.match(line)
    return None if m is None or (m["actor"] and not (m["time"] or m["id"])) else m


def _continues(lines: list[str], k: int) -> bool:
    """Whether line ``k`` continues the message above it: text that is neither another
    turn nor a section, or blank lines that another turn follows."""
    if _turn_start(lines[k]):
        return False
    if lines[k].strip():
        return not _SECTION.match(lines[k])
    while k < len(lines) and not lines[k].strip():
        k += 1
    return k < len(lines) and bool(_turn_start(lines[k]))


def _runs(lines: list[str]) -> list[_Run]:
    """Every run of consecutive speaker lines (with their continuation lines)."""
    runs: list[_Run] = []
    i = 0
    while i < len(lines):
        if not _turn_start(lines[i]):
            i += 1
            continue
        b = i - 1
        while b >= 0 and not lines[b].strip():
            b -= 1
        before = lines[b] if b >= 0 else ""
        turns: list[tuple[int, int]] = []
        names: list[str] = []
        prefixed = True
        j = i
        while j < len(lines) and (m := _turn_start(lines[j])):
            names.append((m["name"] or m["actor"]).strip().lower())
            prefixed = prefixed and bool(m["time"] or m["id"])
            k = j + 1
            while k < len(lines) and _continues(lines, k):
                k += 1
            turns.append((j, k))
            j = k
        repeated = len(set(names)) < len(names) and len(set(names)) >= 2
        anchored = bool(_CONVERSATION_HEADER.match(before))
        runs.append(_Run(turns, anchored, prefixed, repeated, "example" in before.lower()))
        i = j
    return runs


def _conversation(runs: Sequence[_Run]) -> list[_Run]:
    """The runs that are a conversation (two turns at least): under a conversation
    header or in elizaOS's ``(time) [id] Name:`` form; failing those, runs where a
    speaker speaks twice (a TOON document never repeats a key), not in an example."""
    runs = [r for r in runs if len(r.turns) >= 2]
    strong = [r for r in runs if r.anchored or r.prefixed]
    return strong or [r for r in runs if r.repeated and not r.after_example]


def prompt_layout(text: str) -> PromptLayout:
    """The conversation turns and the start of the format instructions of ``text``.

    The format instructions start at the first format line after the last
    conversation, or at the first one at all when the conversation comes last (the
    older ``should_respond`` prompts put it after the format)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    blocks = _conversation(_runs(lines))
    turns = tuple((starts[a], starts[b]) for run in blocks for a, b in run.turns)
    markers = [starts[i] for i, line in enumerate(lines) if _FORMAT.match(line)]
    last_end = turns[-1][1] if turns else 0
    after = [m for m in markers if m >= last_end]
    format_start = after[0] if after else (markers[0] if markers else None)
    return PromptLayout(turns, format_start)


def without_turns(text: str, turns: Sequence[Span], k: int) -> str:
    """``text`` without its ``k`` oldest ``turns``."""
    pieces: list[str] = []
    at = 0
    for a, b in turns[:k]:
        pieces.append(text[at:a])
        at = b
    pieces.append(text[at:])
    return "".join(pieces)
