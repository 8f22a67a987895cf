"""Replies in the format elizaOS 2.x templates ask for (TOON), and the mistakes models make.

A reply is a list of ``(key, value)`` fields; ``toon`` writes it as the templates'
examples show (``actions[n]:`` entries with nested ``params:``), ``xml`` as the older
``<response>`` markup a model sometimes falls back to. ``spoil`` plants one of the
mistakes strong models make at a small rate: prose before the document, XML instead of
TOON, an action that was not offered, the template's placeholder echoed, a cut reply.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .cast import NOT_OFFERED

#: One action entry: its name and its params (in order).
Action = tuple[str, tuple[tuple[str, str], ...]]
#: A field's value: text, or the actions list.
Value = str | tuple[Action, ...]
Fields = tuple[tuple[str, Value], ...]

#: The mistakes, in the order ``spoil`` draws them, and their share among spoiled replies.
MISTAKES = ("prose", "xml", "not_offered", "placeholder", "truncated")
MISTAKE_WEIGHTS = (30, 25, 18, 14, 13)
#: What a template's example says where the reply should say something (echoed = invalid).
PLACEHOLDERS = {
    "thought": "Your thought here",
    "text": "Your message here",
    "post": "Your post text here",
    "reasoning": "Your reasoning here",
}
PROSE = (
    "Sure! Here is my response:\n\n",
    "Okay, let me think about this.\n\n",
    "Here's the TOON document you asked for:\n\n",
    "Based on the conversation, I'll respond as follows.\n\n",
)


def toon(fields: Fields) -> str:
    """The reply as one TOON document."""
    lines: list[str] = []
    for key, value in fields:
        if isinstance(value, tuple):
            lines.append(f"{key}[{len(value)}]:")
            for name, params in value:
                lines.append(f"  - name: {name}")
                if params:
                    lines.append("    params:")
                    lines.extend(f"      {k}: {v}" for k, v in params)
        else:
            lines.append(f"{key}: {value}" if value else f"{key}:")
    return "\n".join(lines)


def xml(fields: Fields) -> str:
    """The same reply in the ``<response>`` markup of elizaOS 1.x prompts."""
    lines = ["<response>"]
    for key, value in fields:
        text = ",".join(name for name, _ in value) if isinstance(value, tuple) else value
        lines.append(f"  <{key}>{text}</{key}>")
    lines.append("</response>")
    return "\n".join(lines)


def action_names(fields: Fields) -> tuple[str, ...]:
    """The actions a reply names (``actions`` entries, or should_respond's ``action``)."""
    for key, value in fields:
        if key == "actions" and isinstance(value, tuple):
            return tuple(name for name, _ in value)
        if key == "action" and isinstance(value, str):
            return (value,) if value else ()
    return ()


def with_action(fields: Fields, name: str) -> Fields:
    """``fields`` with its (first) action replaced by ``name``."""
    out: list[tuple[str, Value]] = []
    for key, value in fields:
        if key == "actions" and isinstance(value, tuple):
            value = ((name, ()), *value[1:]) if value else ((name, ()),)
        elif key == "action":
            value = name
        out.append((key, value))
    return tuple(out)


def spoil(rng: random.Random, fields: Fields, kind: str, offered: Sequence[str]) -> str:
    """``fields`` written with mistake ``kind`` (one of ``MISTAKES``)."""
    if kind == "prose":
        return rng.choice(PROSE) + toon(fields)
    if kind == "xml":
        return xml(fields)
    if kind == "not_offered":
        invented = [a for a in NOT_OFFERED if a not in offered]
        return toon(with_action(fields, rng.choice(invented)))
    if kind == "placeholder":
        echoed = tuple((k, PLACEHOLDERS.get(k, v) if isinstance(v, str) else v) for k, v in fields)
        return toon(echoed)
    text = toon(fields)
    return text[: max(8, int(len(text) * rng.uniform(0.3, 0.8)))]


def draw_mistake(rng: random.Random) -> str:
    return rng.choices(MISTAKES, MISTAKE_WEIGHTS)[0]
