"""Agent-shaped prose: trajectory databases whose prompts read like a real elizaOS agent's.

The demo data is short and regular, so it hides what the privacy pass costs on real
records: long system prompts (a character's bio, lore, style and message examples),
long user prompts (providers, many lines of multi-speaker conversation in ordinary
English, the actions, the format instructions) and chatty replies. Ordinary English is
what makes a seed-phrase pre-check fire ("a run of 12+ short lowercase words"), so the
redaction benchmark and the seed-phrase tests measure on this. A few secrets from
``corpus.PLANTS`` are planted at a given rate, and rows carry the demo data's mess
(snake_case keys, ``{"steps": [...]}`` objects, text that is not JSON, blank prompts).

Standalone on purpose (stdlib, msgspec and the table's schema only): ``benchmarks/``
imports it too, and ``milady_lab/demo.py`` belongs to another piece of work.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from milady_lab.trajectories.schema import INSERT_SQL, LISTING_INDEX_DDL, TABLE_DDL

#: One fixed clock: a seed gives the same bytes on every machine (2026-05-01T00:00Z).
END_MS = 1_777_593_600_000
_encode = msgspec.json.Encoder().encode

CHARACTERS: dict[str, dict[str, Any]] = {
    "Eliza": {
        "bio": [
            "Eliza is a helpful assistant who grew up reading every forum on the early web.",
            "She is curious about people, patient with beginners and allergic to hype.",
            "She moved from Lisbon to Tokyo and still misses the pastéis de nata.",
        ],
        "lore": [
            "once spent a whole weekend helping a stranger fix their grandmother's router",
            "keeps a list of the best ramen shops in Shibuya and updates it every month",
            "believes that every good answer starts with a better question",
        ],
        "style": ["be warm and direct", "avoid jargon unless asked", "use short paragraphs"],
        "topics": ["open source", "cooking", "travel", "philosophy", "music production"],
    },
    "Spartan": {
        "bio": [
            "Spartan is a blunt DeFi trading assistant who cares about risk first.",
            "He answers in short sentences and never promises returns.",
            "He has watched three market cycles and is not impressed by any of them.",
        ],
        "lore": [
            "lost a bet in 2021 and has been cautious ever since",
            "reads every governance proposal before voting, even the boring ones",
            "thinks most people should just hold and go outside",
        ],
        "style": ["be concise", "state the risk before the upside", "no emojis"],
        "topics": ["liquidity pools", "risk management", "market structure", "wallets"],
    },
    "Milady": {
        "bio": [
            "Milady is an AI companion who lives on the internet and loves net art.",
            "She is playful, sharp and kind, and she remembers the people she talks to.",
            "She writes in lowercase and ends playful lines with a tilde.",
        ],
        "lore": [
            "runs a tiny gallery of gifs that nobody else remembers",
            "once stayed up until sunrise talking about old flash games with a friend",
            "has opinions about fonts that she will share whether you ask or not",
        ],
        "style": ["write in lowercase", "keep replies short", "be warm and a little teasing"],
        "topics": ["net art", "lo-fi music", "late-night conversations", "internet history"],
    },
}
ACTIONS = (
    "REPLY",
    "IGNORE",
    "NONE",
    "CONTINUE",
    "FOLLOW_ROOM",
    "MUTE_ROOM",
    "SEND_MESSAGE",
    "UPDATE_SETTINGS",
    "CHOOSE_OPTION",
    "GENERATE_IMAGE",
)
PROVIDERS = ("TIME", "FACTS", "CHARACTER", "RECENT_MESSAGES", "ACTIONS", "KNOWLEDGE", "ENTITIES")
USERS = ("kai", "remi", "sol", "juno", "mika", "tess", "ozzy", "lena", "bex", "noor", "dan")
#: Ordinary chat English, as people write it (some of it is long runs of short words).
LINES = (
    "hey, can you help me with something that has been on my mind all week",
    "i was thinking we could try the new place down the street after work today",
    "that makes sense, but what about the people who have no time for this at all",
    "honestly i have no idea what they want from us, the brief keeps changing every day",
    "could you look over my notes and tell me if the plan still holds together",
    "we need to ship the fix before the weekend or the whole team will be stuck again",
    "thanks so much, that was exactly what i needed to hear right now",
    "I don’t think that’s right — the docs say the limit is per user, not per team.",
    "lol yes, the cat knocked my coffee over the keyboard again this morning ☕",
    "what time is the call tomorrow? I might be a few minutes late because of the train",
    "ok so here is the thing: the build passes on my laptop but fails on the server",
    "my friend said the museum has a free day every first sunday of the month",
    "do you remember the song we talked about last night, the one with the long intro",
    "it feels like the more i learn about this the less i actually know about it",
    "can you explain why the price moved so much when nothing really happened",
    "she said she would call back but that was two hours ago and still nothing",
    "the garden looks great after the rain, the tomatoes are finally turning red",
    "we walked along the river until the sun went down and the city lights came on",
    "just finished the book you suggested, the ending was so much better than i expected",
    "is there a way to keep the same settings when i move to the new version",
    "Naïve question maybe, but why does the café on 5th close so early? 🤔",
    "good morning! how did you sleep, and did the storm keep you up too",
    "i want to learn how to cook real food this year instead of ordering every night",
    "the meeting ran long again so i had to skip lunch and now i am starving",
    "please remind me to send the report to the team before the end of the day",
    "they moved the deadline again, so we have one more week to get it right",
    "what would you do if you had a whole free day with no plans at all",
    "Ça va? I just got back from Paris and my French is already gone 😅",
    "the new update broke my layout, every button is now in the wrong place",
    "can we talk about the budget for next month before we decide anything else",
    "i saw a fox in the park this morning, it just sat there and looked at me",
    "my brother keeps asking me to explain crypto and i keep saying no",
    "we should write down what we learned from this so the next person does not suffer",
    "sometimes the best thing to do is close the laptop and go for a long walk",
    "how do i tell my manager that the estimate was way too optimistic",
    "if you could live anywhere in the world, where would you go and why",
    "the train was packed again, i stood the whole way home with my bag on my feet",
    "do you think it is worth it to learn another language at my age",
    "just wanted to say thank you for being patient with me these last few weeks",
    "I’ll be honest: I still don’t get why people pay that much for a jpeg.",
)
REPLIES = (
    "Of course. Let's start with what matters most and take it one step at a time.",
    "good question~ the short answer is yes, but there is a catch you should know about",
    "I'd keep it simple: write down the two options and pick the one you can undo.",
    "that sounds like a lot. want me to help you split it into smaller pieces?",
    "Risk first: you can lose all of it. If that is fine, size the position small.",
    "haha the cat always wins. hope the keyboard survived the coffee this time",
    "I remember that one. The intro is long because the song is about waiting.",
    "Happy to look. Send me the notes and I'll tell you what I would change.",
)
FORMAT = (
    "# Instructions: Write a thought and plan for {name} and decide what actions to take. "
    "Also include the providers that {name} will use to have the right context for "
    "responding and acting, if any.\nFirst, think about what you want to do next and plan "
    "your actions. Then, write the next message and include the actions you plan to "
    "take.\n\nResponse format should be formatted in XML like this:\n<response>\n"
    "    <thought>Your thought here</thought>\n    <actions>ACTION1,ACTION2</actions>\n"
    "    <providers>PROVIDER1,PROVIDER2</providers>\n    <text>Your response text here</text>"
    "\n</response>\n\nYour response should include the valid XML block and nothing else."
)
SHOULD_RESPOND = (
    "# Task: Decide on behalf of {name} whether they should respond to the message, "
    "ignore it or stop the conversation.\n# Instructions: Decide if {name} should "
    "respond to or interact with the conversation. If the message is directed at or "
    "relevant to {name}, respond with RESPOND action. If a user asks {name} to be quiet, "
    "respond with STOP action. If {name} should ignore the message, respond with IGNORE "
    "action.\nResponse format should be formatted in XML like this:\n<response>\n"
    "  <name>{name}</name>\n  <reasoning>Your reasoning here</reasoning>\n"
    "  <action>RESPOND | IGNORE | STOP</action>\n</response>"
)
_SNAKE = {
    "stepId": "step_id",
    "stepNumber": "step_number",
    "llmCalls": "llm_calls",
    "providerAccesses": "provider_accesses",
    "callId": "call_id",
    "systemPrompt": "system_prompt",
    "userPrompt": "user_prompt",
}


def system_prompt(name: str) -> str:
    """A character's system prompt as elizaOS composes it (bio, lore, style, examples)."""
    c = CHARACTERS[name]
    pairs = zip(USERS, LINES, REPLIES, strict=False)
    examples = "\n".join(f"{u}: {line}\n{name}: {r}" for u, line, r in pairs)
    return (
        f"# About {name}\n" + " ".join(c["bio"]) + "\n\n# Lore\n- " + "\n- ".join(c["lore"])
        + f"\n\n{name} is interested in " + ", ".join(c["topics"]) + ".\n\n# Style\n- "
        + "\n- ".join(c["style"]) + f"\n\n# Example conversations for {name}\n{examples}"
    )  # fmt: skip


def _history(rng: random.Random, name: str, n: int, minute: int) -> list[str]:
    """``n`` lines of a multi-speaker conversation, oldest first, as elizaOS formats them."""
    people = rng.sample(USERS, 3)
    lines = []
    for k in range(n):
        ago = f"({n - k + minute} minutes ago)"
        if rng.random() < 0.25:
            lines.append(f"{ago} [{name}] {name}: {rng.choice(REPLIES)}")
        else:
            said = ". ".join(rng.sample(LINES, rng.choice((1, 1, 2, 3))))
            who = rng.choice(people)
            lines.append(f"{ago} [{who}] {who}: {said}")
    return lines


def user_prompt(rng: random.Random, name: str, purpose: str, minute: int) -> str:
    """A ``message_handler``/``should_respond``/``reflection`` prompt, 2–6 KB."""
    history = "\n".join(_history(rng, name, rng.randint(8, 24), minute))
    providers = ", ".join(rng.sample(PROVIDERS, 3))
    actions = ", ".join(rng.sample(ACTIONS, 6))
    facts = "\n".join(f"- {rng.choice(LINES)}" for _ in range(3))
    if purpose == "should_respond":
        return f"{SHOULD_RESPOND.format(name=name)}\n\n# Conversation Messages\n{history}"
    if purpose == "reflection":
        return (
            f"# Task: Generate Agent Reflection, Extract Facts and Relationships\n"
            f"# Known Facts\n{facts}\n# Recent Messages\n{history}\n# Instructions:\n"
            "1. Generate a self-reflective thought on the conversation.\n"
            "2. Extract new facts from the conversation.\n3. Identify relationships."
        )
    return (
        f"# Task: Generate dialog and actions for the character {name}.\n"
        f"# Providers\n{providers}\n# Facts\n{facts}\n"
        f"# Conversation Messages\n{history}\n# Available Actions\n{actions}\n"
        + FORMAT.format(name=name)
    )


def reply(rng: random.Random, name: str, purpose: str) -> str:
    """What a model answered: the asked-for XML, now and then with a strong model's slip."""
    if purpose == "should_respond":
        act = rng.choice(("RESPOND", "RESPOND", "IGNORE", "STOP"))
        why = rng.choice(LINES)
        return f"<response><name>{name}</name><reasoning>{why}</reasoning><action>{act}</action></response>"  # noqa: E501
    if purpose == "reflection":
        return (
            f'{{"thought": "{rng.choice(LINES)}", "facts": [{{"claim": "{rng.choice(LINES)}", '
            f'"type": "fact", "in_bio": false}}], "relationships": []}}'
        )
    text = " ".join(rng.sample(REPLIES, 2))
    body = (
        f"<response>\n<thought>{rng.choice(LINES)}</thought>\n<actions>REPLY</actions>\n"
        f"<providers>RECENT_MESSAGES</providers>\n<text>{text}</text>\n</response>"
    )
    return body if rng.random() > 0.05 else f"Sure! Here is my answer:\n```xml\n{body}\n```"


class _Writer:
    """Rows of one seeded database: each trajectory a conversation with one character."""

    def __init__(self, seed: int, secret_rate: float) -> None:
        from .corpus import PLANTS

        self.rng = random.Random(seed)
        self.secret_rate = secret_rate
        self.plants = [text for forms in PLANTS.values() for text, _secret in forms]
        self.systems = {name: system_prompt(name) for name in CHARACTERS}
        self.planted = self.planted_here = 0

    def _plant(self, text: str) -> str:
        if self.rng.random() >= self.secret_rate:
            return text
        self.planted_here += 1
        return f"{text}\nkai: {self.rng.choice(self.plants)}"

    def call(self, name: str, purpose: str, minute: int, snake: bool) -> dict[str, Any]:
        rng = self.rng
        user = user_prompt(rng, name, purpose, minute)
        response = reply(rng, name, purpose)
        if rng.random() < 0.02:
            user = rng.choice(("", "   "))
        elif rng.random() < 0.03:
            response = ""
        else:  # only calls a build reads carry a secret, so each one planted is found
            user = self._plant(user)
        call = {
            "callId": f"c-{rng.getrandbits(64):016x}",
            "model": None if rng.random() < 0.02 else rng.choice(("gpt-4o", "claude-sonnet-4-5")),
            "purpose": purpose,
            "systemPrompt": self.systems[name],
            "userPrompt": user,
            "response": response,
            "temperature": 0.7,
        }
        return {_SNAKE.get(k, k): v for k, v in call.items()} if snake else call

    def row(self, i: int) -> tuple[Any, ...]:
        rng = self.rng
        name = rng.choice(tuple(CHARACTERS))
        snake = rng.random() < 0.07
        self.planted_here = 0
        steps = []
        for s in range(rng.choice((1, 1, 2, 2, 3))):
            purposes = ["should_respond", "message_handler"]
            if rng.random() < 0.4:
                purposes.append("reflection")
            step = {
                "stepId": f"t{i}-s{s}",
                "stepNumber": s,
                "llmCalls": [self.call(name, p, s, snake) for p in purposes],
                "providerAccesses": [],
            }
            steps.append({_SNAKE.get(k, k): v for k, v in step.items()} if snake else step)
        doc: Any = {"steps": steps} if rng.random() < 0.04 else steps
        text = _encode(doc).decode()
        if rng.random() < 0.01:  # a row that is not JSON: its secrets are never read
            text = rng.choice((text[: len(text) // 3], "[object Object]", "", "undefined"))
        else:
            self.planted += self.planted_here
        start = END_MS - (i + 1) * 60_000
        calls = sum(len(s.get("llmCalls") or s["llm_calls"]) for s in steps)
        return (
            f"t{i:07d}", f"t{i:07d}", "agent-" + name.lower(), rng.choice(("discord", "telegram")),
            "completed", start, start + 5_000, 5_000, len(steps), calls, 0, 0, 0, 0.0, text,
            "{}", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z", len(steps), None, None,
            None, None, None,
        )  # fmt: skip


def write_agent_db(
    path: str | Path, count: int, seed: int = 0, secret_rate: float = 0.0005
) -> tuple[Path, int]:
    """Write ``count`` agent-shaped trajectories to a new SQLite file: (path, secrets
    planted, each one line of ``corpus.PLANTS`` in a user prompt)."""
    target = Path(path)
    target.unlink(missing_ok=True)
    writer = _Writer(seed, secret_rate)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(TABLE_DDL)
        conn.execute("BEGIN")
        for lo in range(0, count, 2000):
            conn.executemany(INSERT_SQL, [writer.row(i) for i in range(lo, min(lo + 2000, count))])
        conn.execute(LISTING_INDEX_DDL)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return target, writer.planted
