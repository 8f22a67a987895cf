"""The body of ``POST /datasets/build`` and ``/datasets/preview`` as the builder reads it,
and the filters that shape a dataset by purpose and reward (issue 15).

``BuildDatasetRequest`` (in ``api.schema``) is the one description of the body's fields
(names, JSON types and bounds): ``FIELDS``, ``KEYWORDS`` and ``BuildOptions.FIELDS``
follow it. ``ShapeFilters`` holds what a build
keeps of an agent's work: calls of some purposes (matched on ``purpose`` or
``actionType``) or models, trajectories with a reward of at least ``minReward``, and
the best ``topFraction`` of trajectories by reward within every other filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec
import polars as pl

from .. import validation as v
from ..api.schema import MAX_CHOICES, BuildDatasetRequest, JsonObject, PrivacyRequest

__all__ = [
    "FIELDS",
    "KEYWORDS",
    "MAX_CHOICES",
    "BuildDatasetRequest",
    "PrivacyRequest",
    "ShapeFilters",
    "names",
    "top_ids",
]
from ..errors import InputError
from ..trajectories.base import REWARD_FIELDS

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
