"""The model every trajectory source reads into, and the interface sources implement."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NotRequired, Protocol, TypedDict

import polars as pl

from .tools import ToolCall, ToolResult, ToolSchema

#: One row per trajectory, in every listing and frame (camelCase like the REST bodies).
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "agentId": pl.String(),
    "source": pl.String(),
    "status": pl.String(),
    "startTime": pl.Int64(),
    "endTime": pl.Int64(),
    "durationMs": pl.Int64(),
    "llmCallCount": pl.Int64(),
    "providerAccessCount": pl.Int64(),
    "totalPromptTokens": pl.Int64(),
    "totalCompletionTokens": pl.Int64(),
    "totalReward": pl.Float64(),
    "aiJudgeReward": pl.Float64(),
    # Rollouts of one scenario, and the batch they ran in (the agent's grouping columns).
    "scenarioId": pl.String(),
    "batchId": pl.String(),
    "archetype": pl.String(),
    "episodeLength": pl.Int64(),
    # Moved by the agent's 30-day prune into ``trajectory_archive`` and its .jsonl.gz files.
    "archived": pl.Boolean(),
}


class SummaryRow(TypedDict):
    """One ``SUMMARY_SCHEMA`` row as Python values: a listing page's item, every field
    present (null when unknown). ``api.schema.TrajectorySummary`` is its REST record."""

    id: str
    agentId: str | None
    source: str | None
    status: str | None
    startTime: int | None
    endTime: int | None
    durationMs: int | None
    llmCallCount: int | None
    providerAccessCount: int | None
    totalPromptTokens: int | None
    totalCompletionTokens: int | None
    totalReward: float | None
    aiJudgeReward: float | None
    scenarioId: str | None
    batchId: str | None
    archetype: str | None
    episodeLength: int | None
    archived: bool | None


#: One row per LLM call.
LLM_CALL_SCHEMA: dict[str, pl.DataType] = {
    "trajectoryId": pl.String(),
    "stepId": pl.String(),
    "model": pl.String(),
    "purpose": pl.String(),
    "actionType": pl.String(),
    "systemPrompt": pl.String(),
    "userPrompt": pl.String(),
    "response": pl.String(),
    "promptTokens": pl.Int64(),
    "completionTokens": pl.Int64(),
    "latencyMs": pl.Int64(),
    "timestamp": pl.Int64(),
    # Canonical JSON text (``trajectories.tools``), null when the call recorded none.
    "toolCalls": pl.String(),
    "toolResults": pl.String(),
    "tools": pl.String(),
}


class CallFields(TypedDict):
    """What every form of an LLM call holds (the tool fields differ: text or objects)."""

    trajectoryId: str | None
    stepId: str
    model: str | None
    purpose: str | None
    actionType: str | None
    systemPrompt: str | None
    userPrompt: str | None
    response: str | None
    promptTokens: int | None
    completionTokens: int | None
    latencyMs: int | None
    timestamp: int | None


class CallRow(CallFields):
    """One LLM call as a frame row (``parse.CALL_ROWS_SCHEMA``): the tool fields as their
    canonical JSON text."""

    toolCalls: str | None
    toolResults: str | None
    tools: str | None
    callIndex: int


class CallDetail(CallFields):
    """One LLM call as a trajectory's detail shows it (``api.schema.LlmCall``): the
    frame row's fields (the tool fields as objects) and the call's id, temperature and
    token limit."""

    toolCalls: list[ToolCall] | None
    toolResults: list[ToolResult] | None
    tools: list[ToolSchema] | None
    callIndex: int
    callId: str | None
    temperature: float | None
    maxTokens: int | None


class AccessRow(TypedDict):
    """One provider access (``parse.ACCESS_ROWS_SCHEMA``); in a detail also its ``data``
    payload as recorded (free-form)."""

    trajectoryId: str | None
    stepId: str
    providerId: str | None
    providerName: str | None
    purpose: str | None
    timestamp: int | None
    data: NotRequired[Any]


class DetailRow(SummaryRow):
    """What ``TrajectorySource.detail`` gives: the summary, the calls, the accesses."""

    llmCalls: list[CallDetail]
    providerAccesses: list[AccessRow]


#: What ``iter_steps`` yields: raw steps text per trajectory, in listing order.
STEPS_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "source": pl.String(),
    "status": pl.String(),
    "startTime": pl.Int64(),
    "totalReward": pl.Float64(),
    "aiJudgeReward": pl.Float64(),
    "steps": pl.String(),
}
#: The reward columns of ``STEPS_SCHEMA`` a build may filter on (``rewardField``).
REWARD_FIELDS = ("totalReward", "aiJudgeReward")
#: Their columns in Milady's ``trajectories`` table.
REWARD_COLUMNS = {"totalReward": "total_reward", "aiJudgeReward": "ai_judge_reward"}


@dataclass(frozen=True)
class StepsFilter:
    """Trajectory fields ``iter_steps`` selects on before any steps text is read.

    A SQL source turns it into a WHERE clause, so a narrow dataset build never reads
    the steps of the trajectories it leaves out. None keeps every value.
    """

    sources: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    start_ms: int | None = None  # startTime >= start_ms
    end_ms: int | None = None  # startTime < end_ms
    scenario_ids: tuple[str, ...] | None = None
    batch_ids: tuple[str, ...] | None = None
    include_archived: bool = True  # read by sources that hold the agent's archive

    def sql(
        self, dialect: str, columns: frozenset[str] | set[str] | None = None
    ) -> tuple[str, list[Any]]:
        """``WHERE …`` (or "") and its parameters; values always go as parameters.

        ``columns`` is the table's (None: all): a filter on a column the table lacks
        (an agent from before ``scenario_id``) matches nothing, as a null would."""
        mark, text, integer = (
            ("?", "TEXT", "INTEGER") if dialect == "sqlite" else ("%s", "text", "bigint")
        )
        parts: list[str] = []
        params: list[Any] = []
        for column, names in (
            ("source", self.sources), ("status", self.statuses),
            ("scenario_id", self.scenario_ids), ("batch_id", self.batch_ids),
        ):  # fmt: skip
            if names is None:
                continue
            if not names or (columns is not None and column not in columns):
                parts.append("1 = 0")
                continue
            parts.append(f"CAST({column} AS {text}) IN ({', '.join([mark] * len(names))})")
            params.extend(names)
        if self.start_ms is not None:
            parts.append(f"CAST(start_time AS {integer}) >= {mark}")
            params.append(self.start_ms)
        if self.end_ms is not None:
            parts.append(f"CAST(start_time AS {integer}) < {mark}")
            params.append(self.end_ms)
        return ("WHERE " + " AND ".join(parts) if parts else ""), params


class SourceUnavailable(Exception):
    """The source cannot be read right now; the message says why."""


class TrajectorySource(Protocol):
    """A place trajectories are read from. Listing order: newest first by startTime,
    ties by id ascending. No method raises on a malformed row."""

    description: str  # for status; never contains a password or token

    def unavailable_reason(self) -> str | None:
        """None when the source can be read, else a short reason (never raises)."""

    def count(self) -> int: ...

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        """One page of summaries (SUMMARY_SCHEMA), without parsing steps."""

    def detail(self, trajectory_id: str) -> DetailRow | None:
        """Summary fields + ``llmCalls`` (each with stepId) + ``providerAccesses``."""

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        """The raw steps text, with the fields a build filters on (STEPS_SCHEMA), of every
        trajectory ``where`` selects (all when None), in listing order, in batches."""

    def rewards_filled(self, field: str) -> bool:
        """Whether any trajectory has ``field`` (a ``REWARD_FIELDS`` name) set to
        something other than 0 or null: a reward filter on one never filled is refused."""

    def summaries_frame(self) -> pl.LazyFrame: ...

    def llm_calls_frame(self) -> pl.LazyFrame: ...
