"""Providers' text and template filling, the way elizaOS core composes a prompt.

Mirrors ``@elizaos/core`` 2.0.0-alpha.537: the CHARACTER provider (``# About``, the
adjective and topic sentences, ``# Message Directions``, ``# Example Conversations``,
the character's system text), RECENT_MESSAGES (``HH:MM (N minutes ago) [entityId] name:
text`` lines under ``# Conversation Messages``, then ``# Received Message`` and ``# Focus
your response``), ACTIONS (``Possible response actions:`` and ``# Available Actions`` with
descriptions and params) and TIME, joined with newlines into ``{{providers}}``; then
``composePromptFromState`` fills the template's ``{{variables}}`` (a missing one is empty).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .cast import ACTIONS

_VAR = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def fill(template: str, values: Mapping[str, str]) -> str:
    """``{{name}}`` → ``values[name]`` (empty when absent), as Handlebars renders it."""
    return _VAR.sub(lambda m: values.get(m.group(1), ""), template)


def header(title: str, body: str) -> str:
    """core's ``addHeader``: the title, the body and a newline; nothing for an empty body."""
    return f"{title}\n{body}\n" if body else ""


def _resolve(text: str, agent: str, names: Sequence[str] = ()) -> str:
    text = text.replace("{{agentName}}", agent).replace("{{name}}", agent)
    for slot, name in enumerate(names, 1):
        text = text.replace(f"{{{{name{slot}}}}}", name).replace(f"{{{{user{slot}}}}}", name)
    return text


def character_text(rng: random.Random, char: Mapping[str, Any], people: Sequence[str]) -> str:
    """The CHARACTER provider's text for ``char`` in a chat room."""
    name = char["name"]
    bio = " ".join(_resolve(b, name) for b in rng.sample(char["bio"], min(10, len(char["bio"]))))
    topic = rng.choice(char["topics"])
    others = rng.sample([t for t in char["topics"] if t != topic], 5)
    style = [_resolve(s, name) for s in (*char["style"]["all"], *char["style"]["chat"])]
    examples = []
    for group in rng.sample(char["messageExamples"], min(5, len(char["messageExamples"]))):
        names = rng.sample(list(people), min(len(people), 5))
        examples.append(
            "\n".join(
                f"{_resolve(who, name, names)}: {_resolve(t, name, names)}" for who, t in group
            )
        )
    parts = (
        header(f"# About {name}", bio),
        f"{name} is {rng.choice(char['adjectives'])}",
        f"{name} is currently interested in {topic}",
        f"{name} is also interested in {', '.join(others[:-1])} and {others[-1]}",
        header(f"# Message Directions for {name}", "\n".join(style)),
        header(f"# Example Conversations for {name}", "\n\n".join(examples)),
        _resolve(char["system"], name),
    )
    return "\n\n".join(p for p in parts if p)


def ago(now_ms: int, then_ms: int) -> str:
    """core's ``formatTimestamp``."""
    diff = abs(now_ms - then_ms)
    if diff < 60_000:
        return "just now"
    minutes, hours, days = diff // 60_000, diff // 3_600_000, diff // 86_400_000
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes > 1 else ''} ago"
    if hours < 24:
        return f"{hours} hour{'s' if hours > 1 else ''} ago"
    return f"{days} day{'s' if days > 1 else ''} ago"


def message_line(now_ms: int, at_ms: int, entity: str, name: str, text: str) -> str:
    """One message as core's ``formatMessages`` writes it."""
    clock = datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%H:%M")
    return f"{clock} ({ago(now_ms, at_ms)}) [{entity}] {name}: {text}"


def recent_messages_text(lines: Sequence[str], sender: str, text: str) -> str:
    """The RECENT_MESSAGES provider's text: the conversation, then the message received."""
    return "\n\n".join(
        p
        for p in (
            header("# Conversation Messages", "\n".join(lines)),
            header("# Received Message", f"{sender}: {text}"),
            header(
                "# Focus your response",
                f"You are replying to the above message from **{sender}**. Keep your answer "
                "relevant to that message, but include as context any previous messages in "
                "the thread from after your last reply.",
            ),
        )
        if p
    )


def actions_block(offered: Sequence[str]) -> str:
    """``# Available Actions`` as core's ``formatActions`` prints it (in the given order)."""
    lines = []
    for name in offered:
        description, params = ACTIONS[name]
        lines.append(f"- {name}: {description}")
        if params:
            lines.append(f"  params[{len(params)}]: {'; '.join(params)}")
    return header("# Available Actions", f"actions[{len(offered)}]:\n" + "\n".join(lines))


def actions_text(offered: Sequence[str]) -> str:
    """The ACTIONS provider's text."""
    return f"Possible response actions: {', '.join(offered)}\n\n{actions_block(offered)}"


def time_text(now_ms: int) -> str:
    """The TIME provider's text (``Intl.DateTimeFormat`` en-US, full date, long time, UTC)."""
    when = datetime.fromtimestamp(now_ms / 1000, UTC)
    clock = when.strftime("%I:%M:%S %p").lstrip("0")
    human = f"{when.strftime('%A, %B')} {when.day}, {when.year} at {clock} UTC"
    return (
        f"The current date and time is {human}. Please use this as your reference for any "
        "time-based operations or responses."
    )


def providers(*texts: str) -> str:
    """``{{providers}}``: the providers' texts in order, the empty ones left out."""
    return "\n".join(t for t in texts if t.strip())
