"""Trajectory databases with the corpus' secrets planted where agents keep them: inside
long elizaOS-style user prompts (a conversation plus the actions), inside structured
replies, inside a character's system prompt, and in rows written with snake_case keys."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from test_datasets import call, make_db

from .corpus import CLEAN, PLANTS

SYSTEM = (
    "You are Milady, an AI companion who lives on the internet.\n# About\nMilady is "
    "playful, sharp and kind, loves net art, lo-fi music and late-night conversations.\n"
    "# Style\n- write in lowercase, warm and a little teasing\n- keep replies short\n"
    "# Format\nAnswer only with <response><thought>why</thought><actions>ACTION</actions>"
    "<text>what milady says</text></response>."
)
ACTIONS = "# Available actions\nREPLY, NONE, IGNORE, SEND_MESSAGE, POST\n"


def user_prompt(i: int, planted: str = "") -> str:
    """A conversation as elizaOS lays it out, ~1 KB, optionally carrying a planted line."""
    history = "\n".join(
        f"{name}: {line} ({i}.{n})"
        for n, (name, line) in enumerate(
            [
                ("kai", "gm milady, how was your night"),
                ("Milady", "soft and slow, lots of net art~"),
                ("remi", "@kai did you see the new drop?"),
                ("kai", planted or "not yet, link it"),
                ("Milady", "i saved it for you two"),
            ]
        )
    )
    return (
        f"# Conversation (telegram)\nTime: 2026-01-{1 + i % 28:02d}T14:22:44.501Z\n{history}\n"
        f"{ACTIONS}# Task\nWrite Milady's next reply to kai. Step {i}."
    )


def reply(i: int, planted: str = "") -> str:
    text = planted or f"i kept it safe for you, kai ({i})"
    return (
        f"<response><thought>kai asked something practical; answer kindly ({i}).</thought>"
        f"<actions>REPLY</actions><text>{text}</text></response>"
    )


def snake_steps(tid: str, system: str, user: str, response: str) -> str:
    """Steps as older writers store them: snake_case keys and a {"steps": [...]} object."""
    step = {
        "step_id": f"{tid}-s0",
        "llm_calls": [
            {
                "call_id": f"{tid}-c0",
                "model": "gpt-4o-mini",
                "purpose": "response",
                "system_prompt": system,
                "user_prompt": user,
                "response": response,
            }
        ],
        "provider_accesses": [],
    }
    return json.dumps({"steps": [step]}, ensure_ascii=False)


def planted_rows() -> tuple[list[tuple[Any, ...]], Counter[str], list[str]]:
    """(rows for ``make_db``, hits expected per kind, secrets). Every form lands in one
    trajectory of its own, rotating over user prompt, reply, system prompt and a
    snake_case row, so every example is distinct and each hit is counted once."""
    rows: list[tuple[Any, ...]] = []
    expected: Counter[str] = Counter()
    secrets: list[str] = []
    forms = [(k, t, s) for k, fs in PLANTS.items() for t, s in fs]
    for i, (kind, text, secret) in enumerate(forms):
        tid, where = f"p{i:03d}", i % 4
        system = SYSTEM + (f"\n# Knowledge\n{text}\n" if where == 2 else "")
        user = user_prompt(i, text if where in (0, 3) else "")
        resp = reply(i, text if where == 1 else "")
        if where == 3:
            rows.append((tid, 10_000 + i, snake_steps(tid, system, user, resp)))
        else:
            rows.append((tid, 10_000 + i, [call(user, resp, system, model="claude-opus-4-5")]))
        expected[kind] += 1
        secrets.append(secret)
    for j, clean in enumerate(CLEAN):
        rows.append((f"c{j:03d}", 5_000 + j, [call(user_prompt(900 + j), clean, SYSTEM)]))
    return rows, expected, secrets


def planted_db(path: Path) -> tuple[Path, Counter[str], list[str]]:
    rows, expected, secrets = planted_rows()
    return make_db(path, rows), expected, secrets
