"""Agent-shaped trajectory rows: turns (``turns``) recorded as elizaOS 2.x records them.

Each LLM call is logged as the runtime's ``useModel`` wrapper logs it: the character's
system text as ``systemPrompt``, the filled template as ``userPrompt``, ``actionType``
``runtime.useModel``, the pipeline stage as ``stepType`` and the model slot. ``purpose``
names the template (``should_respond``, ``response`` for the message handler, ``reply``,
``reflection``, ``multi_step_decision``, ``post_creation``, ``image_description``) where
a real agent records only the stage, so per-purpose figures mean one format each.

Some turns are replayed as several rollouts of one scenario (``scenario_id``, grouped by
``batch_id``): the same prompts, one good reply and others worse (a wrong action or
decision, a malformed reply), with ``total_reward``/``ai_judge_reward`` to match, which
is what preference training (issue 27) pairs. The demo data's mess (``demo_rows.Mess``)
applies at the same rates; one seeded generator, a fixed clock: same seed, same bytes.
"""

from __future__ import annotations

import random
from typing import Any

from ..api.schema import JsonObject
from ..demo_rows import (
    MODEL_WEIGHTS,
    MODELS,
    STATUS_WEIGHTS,
    STATUSES,
    Mess,
    encode,
    iso,
    key,
    messy_steps_json,
    snake_keys,
    start_times,
    tokens,
    uuid_from,
)
from . import turns
from .characters import CHARACTERS
from .replies import draw_mistake, spoil, toon
from .turns import Call, Turn

#: Share of turns replayed as rollouts of one scenario, and how many rollouts.
SCENARIO_SHARE = 0.15
ROLLOUTS = (2, 3, 3, 4)
#: Outside scenarios: the share of deciding replies that are wrong / malformed, and of
#: other replies that are malformed.
WRONG, MALFORMED, OTHER_MALFORMED = 0.02, 0.04, 0.03
#: Reward range of a rollout by the quality of its deciding reply.
REWARD = {"good": (0.7, 1.0), "wrong": (0.2, 0.5), "malformed": (0.0, 0.3)}
JUDGE_REASON = {
    "good": "followed the format and chose the right action",
    "wrong": "well formed but chose the wrong action",
    "malformed": "the reply does not follow the requested format",
}

# (turn, quality of the deciding reply, scenario id, batch id)
_Plan = tuple[Turn, str, str | None, str | None]


class AgentWriter:
    """Builds agent-shaped rows from one seeded generator (``write_demo_db(shape="agent")``)."""

    def __init__(self, seed: int, mess: Mess) -> None:
        self.rng = random.Random(seed)
        self.mess = mess
        self.agents = {c["name"]: uuid_from(self.rng) for c in CHARACTERS}
        self.decks = turns.Decks()
        self.pending: list[_Plan] = []
        self.batch_id = ""
        self.batch_left = 0

    def start_times(self, count: int) -> list[int]:
        return start_times(self.rng, count)

    def trajectory(self, start: int) -> tuple[Any, ...]:
        """The next row; a scenario's rollouts are consecutive rows."""
        if not self.pending:
            self.pending = self._plan(start)
        return self._row(*self.pending.pop(0), start)

    def _quality(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < WRONG:
            return "wrong"
        return draw_mistake(rng) if r < WRONG + MALFORMED else "good"

    def _plan(self, start: int) -> list[_Plan]:
        rng = self.rng
        turn = turns.turn(rng, start, self.decks)
        if rng.random() >= SCENARIO_SHARE:
            return [(turn, self._quality(), None, None)]
        if self.batch_left == 0:
            self.batch_id, self.batch_left = f"batch-{uuid_from(rng)}", rng.randint(3, 8)
        self.batch_left -= 1
        scenario = f"scenario-{uuid_from(rng)}"
        qualities = ["good"]
        for _ in range(rng.choice(ROLLOUTS) - 1):
            r = rng.random()
            qualities.append("good" if r < 0.55 else "wrong" if r < 0.8 else draw_mistake(rng))
        rng.shuffle(qualities)
        return [(turn, q, scenario, self.batch_id) for q in qualities]

    def _response(self, call: Call, quality: str) -> str:
        rng = self.rng
        if not call.main:
            if rng.random() < OTHER_MALFORMED:
                return spoil(rng, call.fields, draw_mistake(rng), call.offered)
            return toon(call.fields)
        if quality == "good":
            return toon(call.fields)
        if quality == "wrong":
            return toon(call.wrong or call.fields)
        return spoil(rng, call.fields, quality, call.offered)

    def _call(self, turn: Turn, call: Call, quality: str, ts: int, snake: bool) -> JsonObject:
        rng, mess = self.rng, self.mess
        system = turn.char["system"].replace("{{name}}", turn.char["name"])
        user, response = call.prompt, self._response(call, quality)
        if rng.random() < mess.blank_user:
            user = rng.choice(("", "   ", "\n"))
        if rng.random() < mess.blank_response:
            response = ""
        model = None if rng.random() < mess.null_model else rng.choices(MODELS, MODEL_WEIGHTS)[0]
        out: JsonObject = {
            "callId": uuid_from(rng),
            "timestamp": ts,
            "model": model,
            "systemPrompt": system,
            "userPrompt": user,
            "response": response,
            "temperature": call.temperature,
            "maxTokens": 4096 if call.main else 2048,
            "purpose": call.purpose,
            "actionType": "runtime.useModel",
            "stepType": call.step_type,
            "modelSlot": call.slot,
            "latencyMs": rng.randint(400, 2000) + len(response) * 4,
            "promptTokens": tokens(system + user),
            "completionTokens": tokens(response),
        }
        if rng.random() < mess.missing_tokens:
            del out["promptTokens"], out["completionTokens"]
        return snake_keys(out) if snake else out

    def _steps(
        self, turn: Turn, quality: str, start: int, snake: bool
    ) -> tuple[list[JsonObject], int]:
        """The turn's calls as steps (one per pipeline stage); the end time."""
        rng = self.rng
        ts = start
        steps: list[JsonObject] = []
        for s in sorted({c.step for c in turn.calls}):
            ts += rng.randint(50, 400)
            accesses: list[JsonObject] = []
            if s == 0 and turn.source != "autonomy":
                for name in ("CHARACTER", "RECENT_MESSAGES", "ACTIONS", "TIME"):
                    access: JsonObject = {
                        "providerId": uuid_from(rng),
                        "providerName": name,
                        "timestamp": ts,
                        "data": {},
                        "query": {"roomId": turn.room_id},
                        "purpose": "compose_state",
                    }
                    accesses.append(snake_keys(access) if snake else access)
            calls = []
            for call in (c for c in turn.calls if c.step == s):
                ts += rng.randint(600, 6000)
                calls.append(self._call(turn, call, quality, ts, snake))
            step: JsonObject = {
                "stepId": uuid_from(rng),
                "stepNumber": s,
                "timestamp": ts,
                "llmCalls": calls,
                "providerAccesses": accesses,
            }
            steps.append(snake_keys(step) if snake else step)
        return steps, ts

    def _row(
        self, turn: Turn, quality: str, scenario: str | None, batch: str | None, start: int
    ) -> tuple[Any, ...]:
        rng, mess = self.rng, self.mess
        tid = uuid_from(rng)
        status = "completed" if scenario else rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        snake = rng.random() < mess.snake_case
        steps, ts = self._steps(turn, quality, start, snake)
        calls_key = key("llmCalls", snake)
        if status == "active":
            steps = steps[:1]
        if status == "error" and steps:
            steps[-1][calls_key][-1]["response"] = ""
        n_calls = sum(len(s[calls_key]) for s in steps)
        n_access = sum(len(s[key("providerAccesses", snake)]) for s in steps)
        p_tok = sum(c.get(key("promptTokens", snake), 0) for s in steps for c in s[calls_key])
        c_tok = sum(c.get(key("completionTokens", snake), 0) for s in steps for c in s[calls_key])
        steps_json = messy_steps_json(rng, mess, steps)
        end = None if status == "active" else ts + rng.randint(50, 800)
        grade = quality if quality in REWARD else "malformed"
        judged = scenario is not None or (status == "completed" and rng.random() < 0.15)
        judge = round(rng.uniform(*REWARD[grade]), 3) if judged else None
        metadata = {
            "roomId": turn.room_id,
            "entityId": turn.entity_id,
            "channel": turn.source,
            "character": turn.char["name"],
        }
        return (
            tid,
            tid,
            self.agents[turn.char["name"]],
            turn.source,
            status,
            start,
            end,
            None if end is None else end - start,
            len(steps),
            n_calls,
            n_access,
            p_tok,
            c_tok,
            judge or 0.0,
            steps_json,
            encode(metadata).decode("utf-8"),
            iso(start),
            iso(end or ts),
            len(steps),
            judge,
            JUDGE_REASON[grade] if judged else None,
            turn.char["name"].lower() if scenario else None,
            scenario,
            batch,
        )
