"""The body of ``POST /datasets/build`` and ``/datasets/preview``, and the filters that
shape a dataset by purpose and reward (issue 15).

``BuildDatasetRequest`` is the one description of the body's fields (names, JSON types and
bounds): ``datasets.BuildOptions.FIELDS`` follows it and ``openapi.json`` is generated
from it (``milady_lab.api``). ``ShapeFilters`` holds what a build
keeps of an agent's work: calls of some purposes (matched on ``purpose`` or
``actionType``) or models, trajectories with a reward of at least ``minReward``, and
the best ``topFraction`` of trajectories by reward within every other filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import polars as pl

from .. import validation as v
from ..api.fields import Day
from ..api.records import JsonObject
from ..errors import InputError
from ..trajectories.base import REWARD_FIELDS

#: Most values one list filter (source, status, purpose, model) may hold.
MAX_CHOICES = 100
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_Names = _Name | Annotated[list[_Name], msgspec.Meta(min_length=1, max_length=MAX_CHOICES)]
_Count = Annotated[int, msgspec.Meta(ge=1, le=10**9)]


class PrivacyRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """``privacy``: what the privacy pass does (``privacy.options.PrivacyOptions``)."""

    redact: bool = True
    anonymize_handles: bool = False


class BuildDatasetRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The build/preview body. ``privacy`` stays last (messages list filters before it)."""

    limit: Annotated[
        _Count | None,
        msgspec.Meta(description="Most qualifying trajectories to include (no cap when omitted)"),
    ] = None
    min_llm_calls_per_trajectory: Annotated[
        _Count | None,
        msgspec.Meta(description="Usable LLM calls a trajectory needs to qualify (default 1)"),
    ] = None
    source: Annotated[
        _Names | None,
        msgspec.Meta(
            description=(
                "Only trajectories whose source is this value (or any value of this "
                'list), e.g. "chat"'
            )
        ),
    ] = None
    status: Annotated[
        _Names | None,
        msgspec.Meta(
            description=(
                "Only trajectories whose status is this value (or any value of this "
                'list), e.g. "completed"'
            )
        ),
    ] = None
    start_date: Annotated[
        Day | None,
        msgspec.Meta(description="Only trajectories started on or after this UTC day"),
    ] = None
    end_date: Annotated[
        Day | None,
        msgspec.Meta(description="Only trajectories started on or before this UTC day"),
    ] = None
    search: Annotated[
        Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | None,
        msgspec.Meta(
            description=(
                "Only trajectories with an LLM call whose system prompt, user "
                "prompt or reply contains this text (ignoring case)"
            )
        ),
    ] = None
    #: Calls whose ``purpose`` or ``actionType`` is this value (or any of the list).
    purpose: Annotated[
        _Names | None,
        msgspec.Meta(
            description=(
                "Only LLM calls whose purpose or actionType is this value (or any "
                'value of this list), e.g. "should_respond"; trajectories qualify '
                "on these calls"
            )
        ),
    ] = None
    #: Calls made by this model (or any of the list).
    model: Annotated[
        _Names | None,
        msgspec.Meta(description="Only LLM calls made by this model (or any model of this list)"),
    ] = None
    #: Trajectories whose ``rewardField`` is at least this.
    min_reward: Annotated[
        float | None,
        msgspec.Meta(
            description=(
                "Only trajectories whose rewardField is at least this (400 when the "
                "source never fills that reward)"
            )
        ),
    ] = None
    reward_field: Annotated[
        Literal["totalReward", "aiJudgeReward"] | None,
        msgspec.Meta(description="The reward minReward and topFraction use (default totalReward)"),
    ] = None
    #: The best fraction of the trajectories that pass every other filter, by reward.
    top_fraction: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=1)] | None,
        msgspec.Meta(
            description=(
                "Keep the best fraction (by rewardField) of the trajectories that "
                "pass every other filter, at least one; limit then caps them, "
                "newest first"
            )
        ),
    ] = None
    #: Rollouts of this scenario (or any of the list): the agent's ``scenario_id``.
    scenario_id: Annotated[
        _Names | None,
        msgspec.Meta(
            description=(
                "Only rollouts of this scenario (or any of this list): the agent's scenario_id"
            )
        ),
    ] = None
    #: Trajectories of this batch (or any of the list): the agent's ``batch_id``.
    batch_id: Annotated[
        _Names | None,
        msgspec.Meta(
            description=(
                "Only trajectories of this batch (or any of this list): the agent's batch_id"
            )
        ),
    ] = None
    #: Whether trajectories the agent archived (older than 30 days) count; default true.
    include_archived: Annotated[
        bool | None,
        msgspec.Meta(
            description=(
                "Whether trajectories the agent archived (older than 30 days) count; default true"
            )
        ),
    ] = None
    #: ``sft`` (default): chat examples; ``pairs``: DPO lines (prompt, chosen, rejected)
    #: from calls sharing a prompt context; ``labelled``: KTO lines (messages, label).
    kind: Annotated[
        Literal["sft", "pairs", "labelled"] | None,
        msgspec.Meta(
            description=(
                "What the dataset holds: sft (default) chat examples; pairs: DPO "
                "lines {prompt, chosen, rejected} from calls sharing a prompt "
                "context (rollouts of one scenarioId/batchId answering the same "
                "turn, or an identical prompt), chosen the higher reward; labelled: "
                "KTO lines {messages, label} from labelThreshold and the agent's "
                "verifiable failures (format rejected, action not offered, "
                "error/timeout)"
            )
        ),
    ] = None
    #: ``pairs``: the least reward difference between chosen and rejected (default: any).
    min_reward_gap: Annotated[
        Annotated[float, msgspec.Meta(ge=0)] | None,
        msgspec.Meta(
            description=(
                "kind pairs: the least reward difference between chosen and "
                "rejected (default: any difference)"
            )
        ),
    ] = None
    #: ``labelled``: a reward at least this is desirable, below it undesirable.
    label_threshold: Annotated[
        float | None,
        msgspec.Meta(
            description=(
                "kind labelled: a trajectory reward at least this is desirable, "
                "below it undesirable (without it only verifiable signals label)"
            )
        ),
    ] = None
    privacy: Annotated[
        PrivacyRequest | None,
        msgspec.Meta(
            description=(
                "What the privacy pass does to each system prompt, user prompt and "
                "reply before de-duplication and writing (default: redact on, "
                "handles kept)"
            )
        ),
    ] = None


#: Body fields, in the struct's order.
FIELDS = tuple(f.encode_name for f in msgspec.structs.fields(BuildDatasetRequest))
#: Python keyword → body field (``purpose`` → ``purpose``, ``min_reward`` → ``minReward``):
#: the clients' and widgets' keyword arguments, derived from the one description.
KEYWORDS = {f.name: f.encode_name for f in msgspec.structs.fields(BuildDatasetRequest)}


def names(value: Any, field: str) -> tuple[str, ...] | None:
    """A filter on a text field: one name or a list of names (any of them matches)."""
    if value is None:
        return None
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise InputError(f"{field} must name at least one value")
    if len(items) > MAX_CHOICES:
        raise InputError(f"{field} may list at most {MAX_CHOICES} values, got {len(items)}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"{field} must be a string or a list of strings")
        out.append(v.text(item, field, max_length=200) or item)
    return tuple(dict.fromkeys(out))  # de-duplicated, order kept


def _one_or_list(values: tuple[str, ...]) -> str | list[str]:
    return values[0] if len(values) == 1 else list(values)


@dataclass(frozen=True)
class ShapeFilters:
    """Purpose, model and reward filters of a build (all None: keep everything)."""

    purposes: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    min_reward: float | None = None
    reward_field: str = "totalReward"
    top_fraction: float | None = None

    #: ``rewardField`` was given (a preference build reads it without a reward filter).
    field_given: bool = False

    @classmethod
    def from_body(cls, b: JsonObject, *, rewards_used: bool = False) -> ShapeFilters:
        """``rewards_used``: the build ranks or labels by reward (``kind`` pairs or
        labelled), so ``rewardField`` means something without a reward filter."""
        field = v.choice(b.get("rewardField"), "rewardField", REWARD_FIELDS)
        min_reward = v.number(b.get("minReward"), "minReward")
        top = v.number(b.get("topFraction"), "topFraction", exclusive_minimum=0.0, maximum=1.0)
        if field is not None and min_reward is None and top is None and not rewards_used:
            raise InputError("rewardField applies to minReward or topFraction; give one of them")
        return cls(
            purposes=names(b.get("purpose"), "purpose"),
            models=names(b.get("model"), "model"),
            min_reward=min_reward,
            reward_field=field or "totalReward",
            top_fraction=top,
            field_given=field is not None,
        )

    @property
    def on_reward(self) -> bool:
        return self.min_reward is not None or self.top_fraction is not None

    @property
    def active(self) -> bool:
        return self.on_reward or self.purposes is not None or self.models is not None

    def as_body(self) -> JsonObject:
        body: JsonObject = {}
        if self.purposes is not None:
            body["purpose"] = _one_or_list(self.purposes)
        if self.models is not None:
            body["model"] = _one_or_list(self.models)
        if self.min_reward is not None:
            body["minReward"] = self.min_reward
        if self.top_fraction is not None:
            body["topFraction"] = self.top_fraction
        if self.on_reward or self.field_given:
            body["rewardField"] = self.reward_field
        return body

    def calls(self, calls: pl.DataFrame) -> pl.DataFrame:
        """The calls of the wanted purposes and models (a call frame with ``actionType``)."""
        keep: list[pl.Expr] = []
        if self.purposes is not None:
            wanted = list(self.purposes)
            keep.append(pl.col("purpose").is_in(wanted) | pl.col("actionType").is_in(wanted))
        if self.models is not None:
            keep.append(pl.col("model").is_in(list(self.models)))
        return calls.filter(pl.all_horizontal(keep).fill_null(False)) if keep else calls

    def trajectories(self, batch: pl.DataFrame) -> pl.DataFrame:
        """The rows of a steps batch whose reward passes ``minReward``."""
        if self.min_reward is None:
            return batch
        return batch.filter((pl.col(self.reward_field) >= self.min_reward).fill_null(False))

    def check_source(self, source: Any) -> None:
        """A reward filter on a reward the source never fills is an input error."""
        if self.on_reward and not source.rewards_filled(self.reward_field):
            raise InputError(
                f"no trajectory in this source has a {self.reward_field} (every one is zero or "
                f"null), so minReward/topFraction would select on nothing; the agent fills "
                f"it only when rewards are recorded{_other_field(self.reward_field)}"
            )


def _other_field(field: str) -> str:
    other = next(f for f in REWARD_FIELDS if f != field)
    return f" (try rewardField {other!r})"


def top_ids(qualifying: pl.DataFrame, fraction: float, field: str) -> pl.DataFrame:
    """``id`` of the best ``fraction`` of ``qualifying`` (``id``, ``field``, listing
    position ``t``) by reward, at least one; ties go to the newer trajectory."""
    keep = max(1, math.ceil(fraction * qualifying.height)) if qualifying.height else 0
    return (
        qualifying.sort([field, "t"], descending=[True, False], nulls_last=True)
        .head(keep)
        .select("id")
    )
