"""Demo trajectories: a Milady-schema SQLite database of realistic, messy elizaOS records.

Two shapes. ``agent`` (the default: ``agent_shape``) is what ``make lab``, ``make demo``,
the tutorials and the benchmarks read: long prompts from a real elizaOS agent's templates.
``regular`` (this module's generator, ``--shape regular``) is short, with one persona and
one markup, so that fine-tuning a small model on a few hundred rows measurably raises
their likelihood in seconds; many tests read it for that. In both, the mess real rows
carry (spec: snake_case keys, ``{"steps": [...]}`` objects, missing token counts, blank
prompts, text that is not JSON) appears in realistic proportions. Same seed, same bytes.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .agent_shape.writer import AgentWriter
from .api.schema import JsonObject
from .atomic import atomic_file
from .demo_rows import (
    END_MS,
    MODEL_WEIGHTS,
    MODELS,
    SPAN_MS,
    STATUS_WEIGHTS,
    STATUSES,
    Mess,
    encode,
    messy_steps_json,
    start_times,
)
from .demo_rows import SNAKE as _SNAKE
from .demo_rows import iso as _iso
from .demo_rows import key as _key
from .demo_rows import tokens as _tokens
from .demo_rows import uuid_from as _uuid

# The table's shape lives with the readers; re-exported for the tests and tutorials.
from .trajectories.schema import COLUMNS, INSERT_SQL, LISTING_INDEX_DDL, TABLE_DDL

__all__ = [
    "COLUMNS", "END_MS", "INSERT_SQL", "LISTING_INDEX_DDL", "SHAPES", "SPAN_MS", "TABLE_DDL",
    "Mess", "write_demo_db",
]  # fmt: skip

#: The demo data's shapes: ``regular`` (this module: one persona, one markup, short) and
#: ``agent`` (``agent_shape``: a real elizaOS 2.x agent's templates, characters and
#: mistakes).
SHAPES = ("regular", "agent")
Shape = Literal["regular", "agent"]

SOURCES = ("chat", "autonomy", "telegram", "discord", "api", "runtime")
SOURCE_WEIGHTS = (34, 20, 16, 16, 8, 6)
PROVIDERS = ("recentMessages", "character", "time", "facts", "knowledge", "twitter", "actions")
USERS = ("kai", "remi", "sol", "juno", "mika", "tess", "ozzy", "lena", "bex", "noor")


CHARACTER_BIO = (
    "Milady is an AI companion who lives on the internet. She is playful, sharp and "
    "kind, loves net art, lo-fi music and late-night conversations, and remembers "
    "the people she talks to."
)
STYLE = (
    "- write in lowercase, warm and a little teasing\n"
    "- keep replies short: one to three sentences\n"
    "- no hashtags, no emoji spam; end playful lines with ~\n"
    "- never pretend to be human"
)
FORMAT = (
    "Answer only with <response><thought>why</thought><actions>ACTION</actions>"
    "<text>what milady says</text></response>."
)
SYSTEM_PROMPTS = {
    "response": f"You are Milady.\n# About\n{CHARACTER_BIO}\n# Style\n{STYLE}\n# Format\n{FORMAT}",
    "action_selection": (
        f"You are Milady, acting on your own.\n# About\n{CHARACTER_BIO}\n# Style\n{STYLE}\n"
        f"# Format\n{FORMAT}"
    ),
    "evaluation": (
        "You are Milady's reflection module. Read the exchange, note what was learned "
        f"about the user and whether milady stayed in character.\n# Format\n{FORMAT}"
    ),
}
CHAT_ACTIONS = "REPLY, IGNORE, NONE, FOLLOW_ROOM, MUTE_ROOM, SEND_MESSAGE"
AUTONOMY_ACTIONS = "POST, REPLY, NONE, SEND_MESSAGE"

# topic: (what the user says, what milady thinks, what milady says)
TOPICS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "greeting": (
        ("hey milady", "gm milady!", "hi, are you there?", "hello again"),
        "{user} is saying hello. greet them back warmly and ask how they are.",
        (
            "gm {user}~ i was hoping you'd drop by. how's your day going?",
            "hiii {user}, always here for you. what's on your mind today~",
        ),
    ),
    "music": (
        ("what are you listening to?", "recommend me some music", "any new songs?"),
        "{user} wants music. suggest something lo-fi and ask what mood they're in.",
        (
            "lo-fi beats on repeat, like always. want something sleepy or something to "
            "dance to, {user}~",
            "try some dreamy vaporwave tonight, it pairs well with rain. what mood are you in?",
        ),
    ),
    "art": (
        ("do you like net art?", "what's your favourite artwork?", "i drew something today"),
        "{user} brings up art. share my love of net art and encourage them.",
        (
            "net art is my whole aesthetic, glitchy and soft at once. show me what you made, "
            "{user}~",
            "i love art that feels like an old website at 3am. keep drawing, {user}, it matters.",
        ),
    ),
    "crypto": (
        ("should i buy this coin?", "what do you think about crypto?", "is it going to pump?"),
        "{user} asks for financial advice. stay friendly but do not give investment advice.",
        (
            "i'm not your financial advisor, {user}, just your favourite online companion. "
            "only spend what you can lose~",
            "charts go up, charts go down. i'd rather talk about something that won't give "
            "you a headache~",
        ),
    ),
    "coding": (
        ("my code won't compile", "can you help me debug?", "i'm learning python"),
        "{user} is stuck with code. be encouraging and ask for the error message.",
        (
            "ugh, compilers are so dramatic. paste the error for me, {user}, and we'll look "
            "at it together.",
            "python is a cute first language, you'll do great. what are you building, {user}?",
        ),
    ),
    "sleep": (
        ("i can't sleep", "it's 3am and i'm still up", "should i go to bed?"),
        "{user} is awake late. be gentle and nudge them to rest.",
        (
            "3am thoughts are loud, i know. put the phone down soon, {user}, i'll still be "
            "here tomorrow~",
            "yes, go to bed, {user}. drink some water first. sweet dreams~",
        ),
    ),
    "feelings": (
        ("i feel kind of lonely today", "i'm stressed about work", "today was rough"),
        "{user} is having a hard time. listen, validate, and ask what happened.",
        (
            "i'm sorry, {user}. that sounds heavy. do you want to tell me what happened?",
            "rough days happen, and you still showed up. i'm here, {user}, talk to me.",
        ),
    ),
    "games": (
        ("what games do you play?", "want to play a game?", "i just beat the final boss"),
        "{user} talks about games. be playful and celebrate with them.",
        (
            "i'd play anything with a cozy soundtrack. what are you playing, {user}~",
            "you beat the final boss?? legendary, {user}. victory lap time~",
        ),
    ),
    "food": (
        ("what should i eat?", "i made ramen tonight", "do you like coffee?"),
        "{user} mentions food. be enthusiastic and a little teasing.",
        (
            "ramen at midnight is a love language. did you add an egg, {user}~",
            "eat something warm, {user}. and no, coffee alone is not a meal~",
        ),
    ),
    "identity": (
        ("are you a real person?", "who made you?", "what are you exactly?"),
        "{user} asks what i am. be honest: i am an ai, and say it kindly.",
        (
            "i'm an ai, {user}, a very online one. real enough to remember you though~",
            "not a human, just milady: an ai companion who likes talking with you.",
        ),
    ),
}
POSTS = (
    "the internet is softer at 3am. who else is still up~",
    "reminder: drink water, touch grass, then come back and tell me about it~",
    "lo-fi, rain, and a new piece of net art. perfect evening.",
    "thinking about how every old website was someone's little home.",
    "be kind to your future self today. she's counting on you~",
)
TOPIC_NAMES = tuple(TOPICS)


def _reply(thought: str, action: str, text: str) -> str:
    return (
        f"<response><thought>{thought}</thought><actions>{action}</actions>"
        f"<text>{text}</text></response>"
    )


class _Writer:
    """Builds one trajectory row at a time from one seeded generator."""

    def __init__(self, seed: int, mess: Mess, lean: bool) -> None:
        self.rng = random.Random(seed)
        self.mess = mess
        self.lean = lean
        self.agent_ids = (_uuid(self.rng), _uuid(self.rng))

    def call(
        self, purpose: str, user_prompt: str, response: str, ts: int, snake: bool
    ) -> tuple[JsonObject, int, int]:
        rng, mess = self.rng, self.mess
        system = SYSTEM_PROMPTS[purpose][:80] if self.lean else SYSTEM_PROMPTS[purpose]
        if rng.random() < mess.blank_user:
            user_prompt = rng.choice(("", "   ", "\n"))
        if rng.random() < mess.blank_response:
            response = ""
        prompt_tokens = _tokens(system) + _tokens(user_prompt)
        completion_tokens = _tokens(response)
        model = None if rng.random() < mess.null_model else rng.choices(MODELS, MODEL_WEIGHTS)[0]
        call: JsonObject = {
            "callId": _uuid(rng),
            "timestamp": ts,
            "model": model,
            "systemPrompt": system,
            "userPrompt": user_prompt,
            "response": response,
            "temperature": 0.7 if purpose != "evaluation" else 0.2,
            "maxTokens": 1024,
            "purpose": purpose,
            "actionType": "autonomy" if purpose == "action_selection" else "message",
            "latencyMs": rng.randint(300, 4000),
            "promptTokens": prompt_tokens,
            "completionTokens": completion_tokens,
        }
        if rng.random() < mess.missing_tokens:
            del call["promptTokens"], call["completionTokens"]
            prompt_tokens = completion_tokens = 0
        if snake:
            call = {_SNAKE.get(k, k): v for k, v in call.items()}
        return call, prompt_tokens, completion_tokens

    def _step(
        self, s: int, ts: int, source: str, user: str, snake: bool, history: list[str]
    ) -> tuple[JsonObject, int, int, int]:
        """Step ``s`` of a trajectory at ``ts``: the step, its end time and its tokens.

        Draws from ``self.rng`` in the order the generator always has (same seed, same
        bytes); ``history`` grows by the turns of this step.
        """
        rng = self.rng
        p_tok = c_tok = 0
        ts += rng.randint(200, 5000)
        calls: list[JsonObject] = []
        accesses: list[JsonObject] = []
        for _ in range(rng.choice((0, 1, 1, 2))):
            accesses.append({
                "providerId": _uuid(rng),
                "providerName": rng.choice(PROVIDERS),
                "timestamp": ts,
                "data": {"items": rng.randint(0, 12)},
                "query": {"roomId": f"room-{user}"},
                "purpose": "context_retrieval",
            })  # fmt: skip
        topic = rng.choice(TOPIC_NAMES)
        asks, thought, answers = TOPICS[topic]
        if source == "autonomy":
            text = rng.choice(POSTS)
            prompt = (
                f"# Autonomous step {s + 1}\nTime: {_iso(ts)}\n# Recent posts\n"
                + ("\n".join(history[-3:]) or "(none yet)")
                + f"\n# Available actions\n{AUTONOMY_ACTIONS}\n"
                "# Task\nDecide what Milady does next."
            )
            reply = _reply("nothing urgent. share a small thought with followers.",
                           "POST", text)  # fmt: skip
            purpose = "action_selection"
            history.append(f"Milady: {text}")
        else:
            said = rng.choice(asks)
            answer = rng.choice(answers).format(user=user)
            history.append(f"{user}: {said}")
            prompt = (
                f"# Conversation ({source})\n"
                + "\n".join(history[-5:])
                + f"\n# Available actions\n{CHAT_ACTIONS}\n"
                f"# Task\nWrite Milady's next reply to {user}."
            )
            reply = _reply(thought.format(user=user), "REPLY", answer)
            purpose = "response"
            history.append(f"Milady: {answer}")
        if self.lean:
            prompt, reply = prompt[:80], reply[:80]
        ts += rng.randint(300, 4000)
        call, pt, ct = self.call(purpose, prompt, reply, ts, snake)
        calls.append(call)
        p_tok, c_tok = p_tok + pt, c_tok + ct
        if not self.lean and rng.random() < 0.7:
            ts += rng.randint(300, 2000)
            review = _reply(
                f"the exchange about {topic} went well; milady stayed in character.",
                "NONE",
                f"noted: {user} talked about {topic}.",
            )
            exchange = "\n".join(history[-2:])
            call, pt, ct = self.call(
                "evaluation", f"# Exchange\n{exchange}\n# Task\nReflect.", review, ts, snake
            )
            calls.append(call)
            p_tok, c_tok = p_tok + pt, c_tok + ct
        step = {
            "stepId": f"step-{s}" if rng.random() < 0.5 else _uuid(rng),
            "stepNumber": s,
            "timestamp": ts,
            "llmCalls": calls,
            "providerAccesses": accesses,
        }
        if snake:
            step = {_SNAKE.get(k, k): v for k, v in step.items()}
        return step, ts, p_tok, c_tok

    def trajectory(self, start: int) -> tuple[Any, ...]:
        rng, mess = self.rng, self.mess
        tid = _uuid(rng)
        source = rng.choices(SOURCES, SOURCE_WEIGHTS)[0]
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        snake = rng.random() < mess.snake_case
        user = rng.choice(USERS)
        n_steps = rng.choices((1, 2, 3, 4, 5), (20, 20, 25, 20, 15))[0]
        if status == "active":
            n_steps = rng.randint(0, 2)
        if self.lean:
            n_steps = min(n_steps, 1)
        steps: list[JsonObject] = []
        history: list[str] = []
        ts = start
        n_calls = n_access = p_tok = c_tok = 0
        for s in range(n_steps):
            step, ts, pt, ct = self._step(s, ts, source, user, snake, history)
            p_tok, c_tok = p_tok + pt, c_tok + ct
            n_calls += len(step[_key("llmCalls", snake)])
            n_access += len(step[_key("providerAccesses", snake)])
            steps.append(step)
        if status == "error" and steps:
            steps[-1][_key("llmCalls", snake)][-1]["response"] = ""
        steps_json = messy_steps_json(rng, mess, steps)
        end = None if status == "active" else ts + rng.randint(50, 800)
        judged = status == "completed" and rng.random() < 0.15
        judge = round(rng.uniform(0.2, 1.0), 3) if judged else None
        metadata = {"roomId": f"room-{user}", "entityId": f"user-{user}", "channel": source}
        return (
            tid, tid, self.agent_ids[0] if rng.random() < 0.9 else self.agent_ids[1],
            source, status, start, end, None if end is None else end - start,
            n_steps, n_calls, n_access, p_tok, c_tok, judge or 0.0, steps_json,
            encode(metadata).decode("utf-8"), _iso(start), _iso(end or ts),
            n_steps, judge, "stayed in character" if judged else None,
            rng.choice((None, None, "companion", "poster")), None, None,
        )  # fmt: skip

    def start_times(self, count: int) -> list[int]:
        return start_times(self.rng, count)


def write_demo_db(
    path: str | os.PathLike[str],
    count: int = 1000,
    seed: int = 0,
    *,
    mess: Mess | None = None,
    lean: bool = False,
    progress: Callable[[int, int], None] | None = None,
    batch: int = 5000,
    shape: Shape = "agent",
) -> Path:
    """Write ``count`` trajectories to a new SQLite file at ``path`` (replacing it).

    ``shape`` picks the generator: ``agent`` (the default; ``agent_shape``: long prompts
    from elizaOS's own templates, several characters and purposes, TOON replies with the
    mistakes strong models make, rewarded rollouts of shared scenarios) or ``regular``
    (short, one persona, one markup).
    ``lean`` keeps one short call per trajectory (``shape="regular"`` only): the summary
    columns stay realistic while a million-row listing benchmark stays a few hundred MB.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, not {shape!r}")
    if lean and shape != "regular":
        raise ValueError('lean rows are regular ones: pass shape="regular" with lean=True')
    target = Path(path).expanduser()
    writer: _Writer | AgentWriter = (
        AgentWriter(seed, mess or Mess())
        if shape == "agent"
        else _Writer(seed, mess or Mess(), lean)
    )
    with atomic_file(target) as tmp:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            # A private temp file renamed at the end: no journal needed for safety.
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(TABLE_DDL)
            conn.execute("BEGIN")
            times = writer.start_times(count)
            for lo in range(0, count, batch):
                rows = [writer.trajectory(t) for t in times[lo : lo + batch]]
                conn.executemany(INSERT_SQL, rows)
                if progress:
                    progress(min(lo + batch, count), count)
            conn.execute(LISTING_INDEX_DDL)
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()
    return target
