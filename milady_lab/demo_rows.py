"""What both demo generators share: the mess rates, the fixed clock and the row pieces.

``demo`` (short, regular trajectories) and ``agent_shape`` (records shaped like a real
elizaOS 2.x agent's) write the same table with the same kinds of mess at the same
rates, so the pieces live below both of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from .api.schema import JsonObject

#: Fixed clock so a seed gives the same data on every machine (2026-05-01T00:00Z).
END_MS = 1_777_593_600_000
SPAN_MS = 90 * 24 * 3600 * 1000

STATUSES = ("completed", "error", "timeout", "active")
STATUS_WEIGHTS = (86, 6, 3, 5)
MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "gpt-4o-mini", "ollama/llama3.2:3b")
MODEL_WEIGHTS = (45, 30, 15, 10)


@dataclass(frozen=True)
class Mess:
    """Share of rows (or calls) carrying each kind of mess; the defaults are realistic."""

    snake_case: float = 0.07  # rows written with snake_case keys
    steps_object: float = 0.04  # rows holding {"steps": [...]}
    not_json: float = 0.01  # rows whose steps_json is not JSON
    missing_tokens: float = 0.10  # calls without token counts
    blank_user: float = 0.02  # calls with an empty or whitespace user prompt
    blank_response: float = 0.03  # calls with an empty response
    null_model: float = 0.02  # calls with model null


#: camelCase → snake_case, for the rows a writer records with snake_case keys.
SNAKE = {
    "stepId": "step_id", "stepNumber": "step_number", "llmCalls": "llm_calls",
    "providerAccesses": "provider_accesses", "callId": "call_id",
    "systemPrompt": "system_prompt", "userPrompt": "user_prompt", "maxTokens": "max_tokens",
    "actionType": "action_type", "latencyMs": "latency_ms", "promptTokens": "prompt_tokens",
    "completionTokens": "completion_tokens", "stepType": "step_type", "modelSlot": "model_slot",
    "providerId": "provider_id", "providerName": "provider_name",
}  # fmt: skip

#: Compact UTF-8 JSON, as JSON.stringify writes it (msgspec: ~5x faster than json).
encode = msgspec.json.Encoder().encode


def uuid_from(rng: random.Random) -> str:
    """A version-4 UUID drawn from ``rng`` (same seed, same ids)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"


def iso(ms: int) -> str:
    """ms since epoch as JavaScript's toISOString writes it."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def tokens(text: str) -> int:
    """The agent's estimate when a provider reports no usage (~4 characters a token)."""
    return max(1, len(text) // 4) if text else 0


def key(name: str, snake: bool) -> str:
    return SNAKE.get(name, name) if snake else name


def snake_keys(obj: JsonObject) -> JsonObject:
    return {SNAKE.get(k, k): v for k, v in obj.items()}


def messy_steps_json(rng: random.Random, mess: Mess, steps: list[JsonObject]) -> str:
    """``steps`` as the row's text: sometimes ``{"steps": [...]}``, rarely not JSON."""
    doc: object = steps
    if rng.random() < mess.steps_object:
        doc = {"steps": steps}
    text = encode(doc).decode("utf-8")
    if rng.random() < mess.not_json:
        text = rng.choice((
            text[: max(1, len(text) // 3)],  # truncated write
            "[object Object]", "undefined", "", "{steps: []}", "not json: step log lost",
        ))  # fmt: skip
    return text


def start_times(rng: random.Random, count: int) -> list[int]:
    """Ascending start times (rows are inserted as an agent would), with some ties."""
    times = sorted(END_MS - rng.randrange(SPAN_MS) for _ in range(count))
    for i in range(1, count):
        if rng.random() < 0.02:
            times[i] = times[i - 1]
    return times
