"""Preference datasets (issue 27): learn from what went well *and* what went wrong.

An SFT dataset imitates every reply, the failures included. The agent's records say
more: rollouts of one scenario carry rewards judged against each other, and every
agent, rewarded or not, records failures a parser can see. This module turns the same
selected, redacted and de-duplicated calls an SFT build would keep
(``datasets._example_batches``: same filters, same privacy pass) into

* ``kind: "pairs"`` (DPO): ``{"prompt": [system?, user], "chosen": [assistant],
  "rejected": [assistant], "metadata": {...}}``. Calls share a *prompt context* when
  their trajectories are rollouts of one scenario (same ``scenarioId`` and ``batchId``)
  and the call answers the same turn (same purpose, same place among the trajectory's
  calls of that purpose: rule ``scenario``), or, for trajectories without a scenario,
  when the rendered prompt (system + user) is identical (rule ``prompt``). In each
  group the call of the highest reward (``rewardField``, ``totalReward`` by default;
  ties: the newest) is chosen, and every call whose reward is lower by more than 0 and
  at least ``minRewardGap`` is rejected against it: at most one pair per call, so a
  large group never gives a quadratic number. The prompt is the chosen call's
  (``metadata.samePrompt`` says whether the rejected one's was identical). Only text
  replies pair (a reply with tool calls is left out).
* ``kind: "labelled"`` (KTO): the SFT line plus ``"label": true|false``, the first rule
  that applies giving the label:

  1. ``formatRejected`` (false): the prompt shows an elizaOS ``<response>…</response>``
     format (or the reply claims one) and the reply does not parse as the agent's XML
     parser would take it, with every child tag the prompt's example has (without an
     example: ``thought``, ``actions`` and ``text``; ``models.evaluation.scores.format_valid``);
  2. ``actionNotOffered`` (false): the prompt lists its actions (a ``# Available
     actions`` section or a ``Possible response actions:`` line) and the reply's
     ``<actions>`` names one that is not among them;
  3. ``rewardDesirable`` / ``rewardUndesirable``: with ``labelThreshold``, a trajectory
     reward at least / below it (only where the source records rewards at all; a
     ``totalReward`` of exactly 0 outside a scenario's rollouts is the agent's default
     for a trajectory nothing rewarded, not a rating);
  4. ``statusFailed`` (false): the trajectory ended in ``error`` or ``timeout``;
  5. ``checksPassed`` (true): a format or action check applied and passed.

  Calls no rule labels are left out, and so are replies with tool calls.

Groups can span the source's read batches, so these builds hold the selected calls in
memory (an SFT build streams); the grouping and labels are Polars expressions, only
the XML parse of replies that need it runs in Python.

TODO(merge with main): the steps frame does not carry ``scenarioId``/``batchId`` on
this branch, so they are joined from ``summaries_frame()``; once ``iter_steps`` yields
them, read them from the calls' own trajectory rows instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InputError
from ..trajectories.tools import has_tool_turns

#: ``metadata.json``'s description of each kind's lines.
FORMATS: dict[str, dict[str, str]] = {
    "pairs": {
        "line": '{"prompt": [{"role", "content"}...], "chosen": [{"role": "assistant", '
        '"content"}], "rejected": [{"role": "assistant", "content"}], "metadata": {"rule", '
        '"chosenTrajectoryId", "rejectedTrajectoryId", "chosenReward", "rejectedReward", '
        '"samePrompt", ...}}',
        "split": "valid when the 64-bit Polars hash of the pair's group mod 100 < 10: a "
        "held-out pair's prompt context is never trained on",
    },
    "labelled": {
        "line": '{"messages": [{"role", "content"}...], "label": true|false, "metadata": '
        '{"trajectoryId", "stepId", "model", "purpose", "rule"}}',
        "split": "as an SFT dataset: the example's content hash mod 100 < 10",
    },
}
#: Label rules in the order they apply, with the label each gives (None: by reward).
LABEL_RULES = (
    "formatRejected", "actionNotOffered", "rewardDesirable", "rewardUndesirable",
    "statusFailed", "checksPassed",
)  # fmt: skip
FAILED_STATUSES = ("error", "timeout")
_SEED = 0x707265667300
#: The offered actions: a "# Available actions" section (to the next heading) or a
#: "Possible response actions:" line (elizaOS's actions provider writes both).
_OFFERED = (
    r"(?is)#\s*available\s+actions[^\n]*\n(.*?)(?:\n\s*#|\z)"
    r"|possible\s+response\s+actions\s*:([^\n]*)"
)
_ACTION_NAME = r"\b[A-Z][A-Z0-9_]+\b"
_NO_NAMES = pl.lit([], dtype=pl.List(pl.String))
#: What a reply claiming the elizaOS form must hold when the prompt shows no example.
ELIZA_REPLY = "<response><thought/><actions/><text/></response>"


# -- selecting ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SftParts:
    """What a preference build takes from the SFT builder: its selection of calls, its
    "nothing qualifies" error, its line format and its train/valid writer. ``datasets``
    calls this module and hands them in, so neither module imports the other."""

    example_batches: Callable[..., Iterator[pl.DataFrame]]
    no_qualifying: Callable[[Any, Any], InputError]
    lines: Callable[[pl.DataFrame], pl.DataFrame]
    write_split: Callable[..., Any]


def _selected(source: Any, opts: Any, tally: Any, progress: Any, sft: SftParts) -> pl.DataFrame:
    """The calls an SFT build with ``opts`` would keep, with reward, status, their place
    ``n`` and the trajectory's ``scenarioId``/``batchId``; InputError when none qualify."""
    frames = list(sft.example_batches(source, opts, tally, progress))
    if tally.trajectories == 0 or not frames:
        raise sft.no_qualifying(tally, opts)
    calls = pl.concat(frames, how="vertical_relaxed")
    ids = calls.get_column("trajectoryId").unique()
    groups = (
        source.summaries_frame()
        .select("id", "scenarioId", "batchId")
        .filter(pl.col("id").is_in(ids.implode()))
        .unique("id", keep="first")
        .collect()
    )
    return calls.join(groups, left_on="trajectoryId", right_on="id", how="left")


def _rewards_recorded(source: Any, opts: Any) -> bool:
    return bool(source.rewards_filled(opts.shape.reward_field))


# -- pairs ----------------------------------------------------------------------------------
def pair_frame(calls: pl.DataFrame, min_gap: float | None) -> pl.DataFrame:
    """One row per (chosen, rejected) pair; chosen columns end in ``_c``."""
    prompt_key = pl.struct("system", "userPrompt").hash(_SEED)
    scenario = pl.col("scenarioId").is_not_null()
    scenario_key = pl.struct(
        "scenarioId", pl.col("batchId").fill_null(""), pl.col("purpose").fill_null(""), "n"
    ).hash(_SEED)
    rated = (
        calls.filter(pl.col("reward").is_not_null() & ~has_tool_turns())
        .with_row_index("i")
        .with_columns(
            pl.when(scenario).then(scenario_key).otherwise(prompt_key).alias("g"),
            pl.when(scenario).then(pl.lit("scenario")).otherwise(pl.lit("prompt")).alias("rule"),
        )
    )
    best = (
        rated.sort(["reward", "i"], descending=[True, False])
        .group_by("g", maintain_order=True)
        .first()
    )
    gap = pl.col("reward_c") - pl.col("reward")
    keep = gap > 0
    if min_gap:
        keep = keep & (gap >= min_gap)
    return (
        rated.join(best, on="g", how="inner", suffix="_c")
        .filter(keep)
        .sort("i_c", "i")
        .with_columns(pl.col("g").alias("h1"), _pair_started())
    )


def _pair_started() -> pl.Expr:
    """A pair's time for the time split: the newest start among its group's trajectories,
    so a held-out prompt context is never trained on (as with the hash split)."""
    newest = pl.max_horizontal("started", "started_c").max().over("g")
    return newest.alias("started")


def _msg(role: str, column: str) -> pl.Expr:
    return pl.struct(role=pl.lit(role), content=pl.col(column)).struct.json_encode()


def pair_lines(pairs: pl.DataFrame) -> pl.DataFrame:
    """The JSONL pieces of pair lines (joined by spaces, as ``datasets._lines``)."""
    has_system = pl.col("system_c").is_not_null()
    same = pl.col("system_c").eq_missing(pl.col("system")) & (
        pl.col("userPrompt_c") == pl.col("userPrompt")
    )
    meta = pl.struct(
        pl.col("rule"),
        pl.col("trajectoryId_c").alias("chosenTrajectoryId"),
        pl.col("trajectoryId").alias("rejectedTrajectoryId"),
        pl.col("stepId_c").alias("chosenStepId"),
        pl.col("stepId").alias("rejectedStepId"),
        pl.col("reward_c").alias("chosenReward"),
        pl.col("reward").alias("rejectedReward"),
        pl.col("scenarioId_c").fill_null("").alias("scenarioId"),
        same.alias("samePrompt"),
        pl.col("model_c").fill_null("").alias("model"),
        pl.col("purpose_c").fill_null("").alias("purpose"),
    ).struct.json_encode()
    return pairs.select(
        pl.lit('{"prompt":[').alias("open"),
        pl.when(has_system).then(_msg("system", "system_c")).alias("system"),
        pl.when(has_system).then(pl.lit(",")).alias("comma1"),
        _msg("user", "userPrompt_c").alias("user"),
        pl.lit('],"chosen":[').alias("k1"),
        _msg("assistant", "response_c").alias("chosen"),
        pl.lit('],"rejected":[').alias("k2"),
        _msg("assistant", "response").alias("rejected"),
        pl.lit('],"metadata":').alias("k3"),
        meta.alias("meta"),
        pl.lit("}").alias("close"),
    )


def _no_pairs(calls: pl.DataFrame, opts: Any, recorded: bool) -> InputError:
    """Why a pairs build gave nothing, in the terms a user can act on."""
    field = opts.shape.reward_field
    if not recorded:
        return InputError(
            f'kind "pairs" ranks calls by reward, but no trajectory in this source has a '
            f"{field} (every one is zero or null); record rewards (the agent's scenario "
            'rollouts fill them), try another rewardField, or build kind "labelled"'
        )
    rated = calls.filter(pl.col("reward").is_not_null() & ~has_tool_turns()).height
    gap = f" by at least minRewardGap={opts.min_reward_gap}" if opts.min_reward_gap else ""
    return InputError(
        f"no pair: of the {calls.height} selected calls, {rated} have a {field}, and no two "
        f"of them share a prompt context (rollouts of one scenarioId/batchId answering the "
        f"same turn, or an identical system and user prompt) with rewards that differ{gap}; "
        "widen the filters, lower minRewardGap, or record several rollouts per scenario"
    )


# -- labels ---------------------------------------------------------------------------------
def _format_ok(columns: pl.Series) -> pl.Series:
    """Whether the agent's parser takes each reply (``scores.format_valid``) against the
    prompt's ``<response>`` example, or the reply's own claimed form when there is none."""
    from ..models.evaluation.scores import format_valid

    out = [
        not xml or format_valid(reply or "", example or ELIZA_REPLY) is not False
        for reply, example, xml in columns.struct.unnest().iter_rows()
    ]
    return pl.Series(out, dtype=pl.Boolean)


def _actions_said(replies: pl.Series) -> pl.Series:
    """The actions each reply names, as the agent's planner reads them (XML ``<actions>``,
    nested ``<action><name>``, TOON ``actions[n]:`` entries; ``scores.action_names``)."""
    from ..models.evaluation.scores import action_names, read_reply

    names = [action_names(read_reply(r)) if r else [] for r in replies.to_list()]
    return pl.Series(names, dtype=pl.List(pl.String))


def label_frame(
    calls: pl.DataFrame, threshold: float | None, rewards: bool, zero_unrated: bool = False
) -> pl.DataFrame:
    """The calls some rule labels, with ``label`` and ``rule`` (``LABEL_RULES``).
    ``zero_unrated``: a reward of exactly 0 outside a scenario's rollouts is the column's
    default (the agent's ``total_reward`` starts at 0), not a rating."""
    prompt = pl.concat_str(pl.col("system").fill_null(""), pl.lit("\n"), "userPrompt")
    # The reply format the prompt asks for, by its example: elizaOS 1.x's <response> XML,
    # or 2.x's TOON ("TOON only. ..." then "Example:" and the document, at the end).
    example = pl.coalesce(
        prompt.str.extract(r"(?is)(<\s*response\s*>.*?<\s*/\s*response\s*>)", 1),
        prompt.str.extract(r"(?s)\nTOON only\b.*?\nExample:\n(.+?)\s*$", 1),
    )
    claims = pl.col("response").str.contains(r"(?i)^\s*(?:```[A-Za-z]*\s*)?<\s*response[\s>]")
    offered = (
        pl.coalesce(prompt.str.extract(_OFFERED, 1), prompt.str.extract(_OFFERED, 2))
        .str.extract_all(_ACTION_NAME)
        .fill_null(_NO_NAMES)
    )
    said = pl.col("response").map_batches(_actions_said, return_dtype=pl.List(pl.String))
    checked = calls.filter(~has_tool_turns()).with_columns(
        example.alias("_example"), (example.is_not_null() | claims).alias("_xml"),
        offered.alias("_offered"), said.alias("_said"),
    )  # fmt: skip
    fmt_ok = pl.struct("response", "_example", "_xml").map_batches(
        _format_ok, return_dtype=pl.Boolean
    )
    checked = checked.with_columns(fmt_ok.alias("_format_ok"))
    has_offer = pl.col("_offered").list.len() > 0
    unknown = pl.col("_said").list.set_difference(pl.col("_offered")).list.len()
    action_bad = has_offer & (unknown > 0)
    rated = pl.lit(rewards and threshold is not None) & pl.col("reward").is_not_null()
    if zero_unrated:
        rated &= (pl.col("reward") != 0) | pl.col("scenarioId").is_not_null()
    above = pl.col("reward") >= (threshold if threshold is not None else 0.0)
    failed = pl.col("status").is_in(FAILED_STATUSES).fill_null(False)
    rule = (
        pl.when(~pl.col("_format_ok")).then(pl.lit("formatRejected"))
        .when(action_bad).then(pl.lit("actionNotOffered"))
        .when(rated & above).then(pl.lit("rewardDesirable"))
        .when(rated).then(pl.lit("rewardUndesirable"))
        .when(failed).then(pl.lit("statusFailed"))
        .when(pl.col("_xml") | has_offer).then(pl.lit("checksPassed"))
    )  # fmt: skip
    label = pl.col("rule").is_in(["rewardDesirable", "checksPassed"])
    return (
        checked.with_columns(rule.alias("rule"))
        .filter(pl.col("rule").is_not_null())
        .with_columns(label.alias("label"))
        .drop("_example", "_xml", "_offered", "_said", "_format_ok")
    )


def label_lines(
    labelled: pl.DataFrame, sft_lines: Callable[[pl.DataFrame], pl.DataFrame]
) -> pl.DataFrame:
    """An SFT line (``sft_lines``) with ``"label"`` and the rule in its metadata."""
    lines = sft_lines(labelled)
    meta = labelled.select(
        pl.struct(
            "trajectoryId", "stepId", pl.col("model", "purpose").fill_null(""), "rule"
        ).struct.json_encode()
    ).to_series()
    label = labelled.select(
        pl.concat_str(
            pl.lit('"label":'),
            pl.when(pl.col("label")).then(pl.lit("true")).otherwise(pl.lit("false")),
            pl.lit(',"metadata":'),
        )
    ).to_series()
    # ``meta_key`` ends in ',"metadata":'; the label goes between it and the metadata.
    key = lines.get_column("meta_key").str.strip_suffix('"metadata":')
    lines = lines.with_columns(key.alias("meta_key"), label.alias("label"), meta.alias("meta"))
    return lines.select(*_LABEL_PIECES)


_LABEL_PIECES = (
    "open", "system", "comma1", "user", "comma2", "assistant", "meta_key", "label", "meta",
    "close",
)  # fmt: skip


def _no_labels(calls: pl.DataFrame, opts: Any, recorded: bool) -> InputError:
    reward = (
        f"no {opts.shape.reward_field} is recorded in this source"
        if not recorded
        else "labelThreshold is not set, so rewards label nothing"
        if opts.label_threshold is None
        else "no selected call's trajectory has a reward"
    )
    return InputError(
        f"no call could be labelled: of the {calls.height} selected calls none fails or "
        "passes a check that applies (the prompt shows no <response> format and lists no "
        f"actions), none is in an error/timeout trajectory, and {reward}; give "
        "labelThreshold with recorded rewards, or select calls whose prompts ask for a format"
    )


# -- the build ------------------------------------------------------------------------------
def preference_lines(
    source: Any,
    opts: Any,
    tally: Any,
    progress: Callable[[int, int], None] | None,
    sft: SftParts,
) -> pl.DataFrame:
    """The rows a ``pairs``/``labelled`` build writes (with ``h1``), its counts on
    ``tally``; InputError, saying why, when there would be none."""
    calls = _selected(source, opts, tally, progress, sft)
    recorded = _rewards_recorded(source, opts)
    if opts.kind == "pairs":
        if not recorded:
            raise _no_pairs(calls, opts, recorded)
        rows = pair_frame(calls, opts.min_reward_gap)
        if rows.height == 0:
            raise _no_pairs(calls, opts, recorded)
        tally.pairs = rows.height
        ids = pl.concat([rows.get_column("trajectoryId_c"), rows.get_column("trajectoryId")])
    else:
        if opts.label_threshold is not None and not recorded:
            raise InputError(
                f"labelThreshold labels by {opts.shape.reward_field}, but no trajectory in "
                "this source has one (every one is zero or null); leave labelThreshold out "
                "to label by the verifiable signals alone"
            )
        zero = opts.shape.reward_field == "totalReward"
        rows = label_frame(calls, opts.label_threshold, recorded, zero_unrated=zero)
        if rows.height == 0:
            raise _no_labels(calls, opts, recorded)
        counts = rows.group_by("rule").len()
        found = dict(zip(counts["rule"].to_list(), counts["len"].to_list(), strict=True))
        tally.labels = {r: int(found[r]) for r in LABEL_RULES if r in found}
        ids = rows.get_column("trajectoryId")
    tally.examples = rows.height
    tally.trajectories = ids.n_unique()
    return rows


def write_preference_files(
    folder: Path,
    source: Any,
    opts: Any,
    tally: Any,
    progress: Callable[[int, int], None] | None,
    sft: SftParts,
) -> Any:
    """``train.jsonl``/``valid.jsonl`` of a preference build (``sft.write_split``)."""
    rows = preference_lines(source, opts, tally, progress, sft)
    if opts.kind == "pairs":
        return sft.write_split(folder, [rows], pair_lines, opts.split)
    return sft.write_split(folder, [rows], lambda frame: label_lines(frame, sft.lines), opts.split)
