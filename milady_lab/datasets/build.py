"""The dataset builder: trajectories → chat-format JSONL that mlx-lm and TRL read as is.

The rules (issue 2) in short: a *usable* LLM call has a user prompt and a response
that are not blank (or, for a call that answered with tool calls, those calls);
trajectories are taken newest first and qualify with at least
``minLlmCallsPerTrajectory`` usable calls; ``limit`` caps the qualifying trajectories
included; every usable call of an included trajectory is one example, kept once per
(system-or-none, user, response, and the tool calls and results when it has any:
``trajectories.tools``). Optional filters (source, status, a range of start
days, text in the calls) narrow the trajectories first; see ``BuildOptions``.

Everything is streamed: steps are read in batches in listing order, parsed with
``trajectories.parse``, filtered and de-duplicated with Polars expressions, and each
batch's examples are appended to the output files at once, so memory holds one batch
plus 8 bytes of hash per kept example. The files are written to a locked
``.tmp-<id>`` folder beside the final one; the rename into place and the insert of the
record happen in one state-store transaction. The next build reconciles what a crash
left: temp folders are removed, and a complete folder whose commit was lost gets its
record back from its ``metadata.json``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from .. import validation as v
from ..api.schema import Dataset, JsonObject
from ..atomic import fsync_path
from ..config import Settings
from ..errors import InputError, StorageError, UpstreamError
from ..privacy import PrivacyOptions, PrivacyPass, redact_texts
from ..state import StateStore, now_ms
from ..training.defaults import DEFAULT_MAX_SEQ_LENGTH
from ..trajectories.base import StepsFilter
from ..trajectories.tools import (
    TOOL_COLUMNS,
    chat_turns,
    compact,
    has_tool_turns,
    text_leaves,
    with_text_leaves,
)
from . import lengths
from .files import examples_frame
from .preferences import SftParts, preference_lines, write_preference_files
from .request import FIELDS as REQUEST_FIELDS
from .request import ShapeFilters, top_ids
from .request import names as _names
from .split import ALL_LINES, SPLITS, held_out_from, split_lines

try:  # POSIX: a build holds an flock on its temp folder, so a sweep never takes a live one.
    import fcntl
except ImportError:  # pragma: no cover - Windows falls back to the age rule alone
    fcntl = None  # type: ignore[assignment]

ProgressFn = Callable[[int, int], None]

#: Steps rows per batch read from the source: bounds memory, amortises per-batch overhead.
BATCH_ROWS = 4000
#: Share of examples in ``valid.jsonl``, in percent.
VALID_PERCENT = 10
#: A ``.tmp-*`` folder younger than this is never swept (it may be between mkdir and lock).
SWEEP_MIN_AGE_S = 60.0
#: Seed of the 64-bit content hash used for de-duplication and the split. Two distinct
#: examples share a hash with odds ~n²/2⁶⁵ (1e-8 for 500k examples); a second hash for a
#: 128-bit key tripled the hashing time, so it is not worth it.
_SEED = 0x6D696C6164
#: Ids this module hands out; only folders named like this are ever recovered.
_ID_RE = re.compile(r"ds-\d{8}-\d{6}-[0-9a-f]{6}")
_TMP_PREFIX = ".tmp-"
#: A character that ``str.strip()`` keeps: Rust's ``\s`` is Unicode White_Space, and
#: Python's ``str.isspace`` adds U+001C..U+001F; "blank" means the same in both.
_NOT_BLANK = r"[^\s\x1c-\x1f]"
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: What a build writes: chat examples, DPO pairs, KTO labelled examples.
KINDS = ("sft", "pairs", "labelled")
#: LLM-call text a ``search`` filter looks in.
SEARCH_COLUMNS = ("systemPrompt", "userPrompt", "response")


# -- options --------------------------------------------------------------------------------
def _day(value: Any, field: str) -> date | None:
    """A UTC calendar day as ``YYYY-MM-DD`` (or a ``date``)."""
    if value is None or type(value) is date:
        return value
    if isinstance(value, str) and _DAY_RE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    shown = value[:40] if isinstance(value, str) else value
    raise InputError(f"{field} must be a date as YYYY-MM-DD, got {shown!r}")


def day_start_ms(day: date, zone: tzinfo | None = None) -> int:
    """Ms since epoch at the start of a day in ``zone`` (UTC when None): the filters' day
    bounds. A day that starts inside a DST gap starts at its first real instant."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone or UTC)
    return int(start.astimezone(UTC).timestamp() * 1000)


def time_zone(value: Any, field: str = "timeZone") -> ZoneInfo | None:
    """An IANA time zone name (``Europe/Lisbon``); None keeps UTC."""
    name = v.text(value, field, max_length=64)
    if name is None:
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"{field} must be an IANA time zone name such as Europe/Lisbon, got {name[:64]!r}"
        ) from None


def text_hit(needle: str, columns: tuple[str, ...] = SEARCH_COLUMNS) -> pl.Expr:
    """Whether any of ``columns`` contains ``needle``, ignoring case (a literal, not a regex)."""
    lowered = needle.lower()
    hit = pl.lit(False)
    for col in columns:
        hit = hit | pl.col(col).str.to_lowercase().str.contains(lowered, literal=True)
    return hit.fill_null(False)


@dataclass(frozen=True)
class BuildOptions:
    """Validated build options; ``limit`` None means no cap, a None filter keeps all.

    The filters choose trajectories before the usable-call rule counts them: ``sources``
    and ``statuses`` match the trajectory's fields exactly (any listed value),
    ``start_day``/``end_day`` bound its start time (days in ``zone``, UTC when None,
    both inclusive), and
    ``search`` keeps trajectories with an LLM call whose system prompt, user prompt or
    reply contains the text, ignoring case — the same filters the explorer offers.
    ``shape`` keeps calls by purpose and model and trajectories by reward
    (``dataset_request.ShapeFilters``); with ``topFraction`` a first pass finds the
    qualifying trajectories' rewards, and ``limit`` caps what that fraction keeps.
    ``privacy`` redacts secrets and contacts (on unless ``"redact": false``) and, when
    asked, replaces people's handles; it runs after selection, before de-duplication.
    """

    limit: int | None = None
    min_llm_calls: int = 1
    sources: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    start_day: date | None = None
    end_day: date | None = None
    zone: ZoneInfo | None = None
    search: str | None = None
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)
    shape: ShapeFilters = field(default_factory=ShapeFilters)
    scenario_ids: tuple[str, ...] | None = None
    batch_ids: tuple[str, ...] | None = None
    include_archived: bool = True
    #: ``sft`` | ``pairs`` | ``labelled`` (``preferences.py``).
    kind: str = "sft"
    min_reward_gap: float | None = None
    label_threshold: float | None = None
    #: ``time`` (default): the newest trajectories' examples are held out; ``hash``: the
    #: content hash chooses them (``split.py``).
    split: str = "time"

    #: Accepted body fields (``request.BuildDatasetRequest``), in the order messages list them.
    FIELDS = REQUEST_FIELDS

    @classmethod
    def from_body(cls, body: Any = None) -> BuildOptions:
        """From a REST body, CLI strings or Python values; InputError names the bad field."""
        if isinstance(body, BuildOptions):
            return body
        b = v.body_object(body, cls.FIELDS)
        limit = v.integer(b.get("limit"), "limit", minimum=1, maximum=10**9)
        min_calls = v.integer(
            b.get("minLlmCallsPerTrajectory"),
            "minLlmCallsPerTrajectory",
            default=1,
            minimum=1,
            maximum=10**9,
        )
        assert min_calls is not None
        start, end = _day(b.get("startDate"), "startDate"), _day(b.get("endDate"), "endDate")
        if start is not None and end is not None and start > end:
            raise InputError(f"startDate {start} is after endDate {end}")
        kind = v.choice(b.get("kind"), "kind", KINDS) or "sft"
        gap = v.number(b.get("minRewardGap"), "minRewardGap")
        if gap is not None and gap < 0:
            raise InputError(f"minRewardGap must be at least 0, got {gap}")
        threshold = v.number(b.get("labelThreshold"), "labelThreshold")
        if gap is not None and kind != "pairs":
            raise InputError('minRewardGap applies to kind "pairs" only')
        if threshold is not None and kind != "labelled":
            raise InputError('labelThreshold applies to kind "labelled" only')
        return cls(
            limit=limit,
            min_llm_calls=min_calls,
            sources=_names(b.get("source"), "source"),
            statuses=_names(b.get("status"), "status"),
            start_day=start,
            end_day=end,
            zone=time_zone(b.get("timeZone")),
            search=v.text(b.get("search"), "search", max_length=1000),
            privacy=PrivacyOptions.from_body(b.get("privacy")),
            shape=ShapeFilters.from_body(b, rewards_used=kind != "sft"),
            scenario_ids=_names(b.get("scenarioId"), "scenarioId"),
            batch_ids=_names(b.get("batchId"), "batchId"),
            include_archived=v.boolean(b.get("includeArchived"), "includeArchived", default=True),
            kind=kind,
            min_reward_gap=gap,
            label_threshold=threshold,
            split=v.choice(b.get("split"), "split", SPLITS) or "time",
        )

    def as_body(self) -> JsonObject:
        """The options as a request body (filters only when set), as records keep them."""
        body: JsonObject = {
            "limit": self.limit,
            "minLlmCallsPerTrajectory": self.min_llm_calls,
        }
        for key, names in (("source", self.sources), ("status", self.statuses)):
            if names is not None:
                body[key] = names[0] if len(names) == 1 else list(names)
        if self.start_day is not None:
            body["startDate"] = self.start_day.isoformat()
        if self.end_day is not None:
            body["endDate"] = self.end_day.isoformat()
        if self.zone is not None and (self.start_day or self.end_day):
            body["timeZone"] = self.zone.key
        if self.search is not None:
            # Kept with the dataset and shown in messages: redacted like the examples.
            body["search"] = (
                redact_texts([self.search])[0][0] if self.privacy.redact else self.search
            )
        body.update(self.shape.as_body())
        for key, names in (("scenarioId", self.scenario_ids), ("batchId", self.batch_ids)):
            if names is not None:
                body[key] = names[0] if len(names) == 1 else list(names)
        if not self.include_archived:
            body["includeArchived"] = False
        if self.kind != "sft":
            body["kind"] = self.kind
        if self.min_reward_gap is not None:
            body["minRewardGap"] = self.min_reward_gap
        if self.label_threshold is not None:
            body["labelThreshold"] = self.label_threshold
        if self.split != "time":
            body["split"] = self.split
        body["privacy"] = self.privacy.as_body()
        return body

    @property
    def filtered(self) -> bool:
        return (
            self.shape.active
            or not self.include_archived
            or any(
                f is not None
                for f in (
                    self.sources, self.statuses, self.start_day, self.end_day, self.search,
                    self.scenario_ids, self.batch_ids,
                )
            )
        )  # fmt: skip

    def steps_filter(self) -> StepsFilter | None:
        """The filters a source applies before reading steps (SQL: a WHERE clause)."""
        where = StepsFilter(
            sources=self.sources,
            statuses=self.statuses,
            start_ms=day_start_ms(self.start_day, self.zone) if self.start_day else None,
            end_ms=(
                day_start_ms(self.end_day + timedelta(days=1), self.zone) if self.end_day else None
            ),
            scenario_ids=self.scenario_ids,
            batch_ids=self.batch_ids,
            include_archived=self.include_archived,
        )
        return None if where == StepsFilter() else where

    def describe_filters(self) -> str:
        """The filters in words, for messages."""
        body = self.as_body()
        parts = [f"{k}={body[k]!r}" for k in self.FIELDS[2:-1] if k in body]
        return ", ".join(parts)


# -- selecting examples ---------------------------------------------------------------------
def _present(column: str) -> pl.Expr:
    """Not null and not only whitespace."""
    return pl.col(column).str.contains(_NOT_BLANK).fill_null(False)


class PreferenceCounts(TypedDict, total=False):
    """What a preference build made: pairs written (kind pairs), lines per rule
    (kind labelled)."""

    pairCount: int
    labelCounts: dict[str, int]


class Preview(PreferenceCounts):
    """What ``preview`` answers (``POST /datasets/preview``)."""

    trajectoryCount: int
    exampleCount: int
    redactions: dict[str, int]


@dataclass
class _Tally:
    total: int = 0  # in the source
    scanned: int = 0  # read (those the filters select)
    trajectories: int = 0
    examples: int = 0
    #: Selected rows whose steps text is not JSON at all (a torn or scrambled row).
    unreadable: int = 0
    #: The build's privacy pass (its counts are the record's ``redactions``).
    privacy: PrivacyPass | None = None
    #: Preference builds: pairs written, labelled lines per rule (``preferences.py``).
    pairs: int | None = None
    labels: dict[str, int] | None = None

    def preference_counts(self) -> PreferenceCounts:
        """``pairCount`` / ``labelCounts`` for the record, when this build made them."""
        out: PreferenceCounts = {}
        if self.pairs is not None:
            out["pairCount"] = self.pairs
        if self.labels is not None:
            out["labelCounts"] = self.labels
        return out


def _parse(batch: pl.DataFrame) -> pl.DataFrame:
    from ..trajectories.parse import llm_calls_from_steps

    return llm_calls_from_steps(batch.select("id", "steps"))


def _unreadable(batch: pl.DataFrame, parsed: pl.DataFrame) -> int:
    """Rows of ``batch`` with steps text that is not JSON: counted in the record's
    ``skippedRows`` rather than passed over as if they had no calls. Only rows that gave
    no call are decoded again, so a clean batch costs one anti-join."""
    import msgspec

    texts = (
        batch.select(pl.col("id").cast(pl.String), pl.col("steps").cast(pl.String))
        .filter(pl.col("steps").str.strip_chars() != "")
        .join(parsed.select(pl.col("trajectoryId").alias("id")).unique(), on="id", how="anti")
        .get_column("steps")
    )
    bad = 0
    for text in texts:
        try:
            msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            bad += 1
    return bad


def _guard(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """A source that fails mid-read is the source's failure, not a bug: UpstreamError."""
    from ..trajectories import SourceUnavailable

    try:
        yield from batches
    except SourceUnavailable as exc:
        raise UpstreamError(f"reading the trajectories failed: {exc}") from None


def _read_ahead(steps: Iterator[pl.DataFrame]) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(batch, its LLM calls), the next batch read and parsed in a worker thread while
    the caller works on this one. Reading and parsing hold the GIL, the caller's Polars
    work mostly releases it, so on two cores the two overlap (~30% off the build)."""

    def advance() -> tuple[pl.DataFrame, pl.DataFrame] | None:
        for batch in steps:
            if batch.height:
                return batch, _parse(batch)
        return None

    with ThreadPoolExecutor(1, thread_name_prefix="milady-lab-dataset") as pool:
        pending = pool.submit(advance)
        try:
            while (item := pending.result()) is not None:
                pending = pool.submit(advance)
                yield item
        finally:
            # The caller closes ``steps`` next: never while the worker is inside it.
            pending.cancel()
            with contextlib.suppress(BaseException):
                pending.result()


def _example_batches(
    source: Any, opts: BuildOptions, tally: _Tally, progress: ProgressFn | None
) -> Iterator[pl.DataFrame]:
    """De-duplicated examples in dataset order, one frame per source batch.

    Columns: system (null when blank), userPrompt, response, trajectoryId, stepId,
    model, purpose, h1 (a 64-bit content hash, also used for the hash split), started
    (the trajectory's start time, for the time split).
    """
    reason = source.unavailable_reason()
    if reason is not None:
        raise UpstreamError(f"cannot read the trajectories: {reason}")
    opts.shape.check_source(source)
    keep = _top_fraction(source, opts) if opts.shape.top_fraction is not None else None
    total = int(source.count())
    remaining = opts.limit
    seen = pl.DataFrame(schema={"h1": pl.UInt64})
    tally.total = total
    # The source selects on the trajectory fields (SQL), so the steps of trajectories the
    # filters leave out are never read, let alone parsed.
    steps = _guard(source.iter_steps(BATCH_ROWS, opts.steps_filter()))
    try:
        for batch, parsed in _read_ahead(steps):
            tally.scanned += batch.height
            tally.unreadable += _unreadable(batch, parsed)
            usable, included = _qualifying(batch, parsed, opts, keep)
            if remaining is not None:
                included = included.head(remaining)
                remaining -= included.height
            tally.trajectories += included.height
            if included.height:
                system = pl.when(_present("systemPrompt")).then(pl.col("systemPrompt"))
                key = _content_key(system)
                examples = (
                    usable.join(
                        included.select("id", "t", _reward(opts), "status", "startTime"),
                        left_on="trajectoryId",
                        right_on="id",
                        how="inner",
                    )
                    .sort("t", "c")
                    # The call's place among its trajectory's calls of its purpose:
                    # which call of one scenario's rollouts answer the same turn.
                    .with_columns(pl.int_range(pl.len()).over("trajectoryId", "purpose").alias("n"))
                    .pipe(_private, tally.privacy)
                    .select(
                        system.alias("system"),
                        "userPrompt",
                        "response",
                        *TOOL_COLUMNS,
                        "trajectoryId",
                        "stepId",
                        "model",
                        "purpose",
                        key.alias("h1"),
                        # For preference builds (``preferences.py``); SFT lines skip them.
                        "reward",
                        "status",
                        "n",
                        # The trajectory's start time: the time split (``split.py``).
                        pl.col("startTime").alias("started"),
                    )
                    .filter(pl.col("h1").is_first_distinct())
                    .join(seen, on="h1", how="anti", maintain_order="left")
                )
                seen = pl.concat([seen, examples.select("h1")], rechunk=False)
                tally.examples += examples.height
                if examples.height:
                    yield examples
            if progress is not None:
                progress(tally.scanned, max(total, tally.scanned))
            if remaining == 0:
                break
    finally:
        steps.close()  # let the source release its cursor when we stop early
    if progress is not None:
        done = max(total, tally.scanned)
        progress(done, done)


def _reward(opts: BuildOptions) -> pl.Expr:
    """The trajectory's reward (``rewardField``) as ``reward``."""
    return pl.col(opts.shape.reward_field).cast(pl.Float64).alias("reward")


def _content_key(system: pl.Expr) -> pl.Expr:
    """The 64-bit content hash of an example. A call without tools hashes exactly as
    before tools were read, so existing datasets keep their split."""
    plain = pl.struct(system, "userPrompt", "response").hash(_SEED)
    # Both branches are computed for every row: the second rehashes the first (8 bytes)
    # with the tool columns, null in most rows, rather than every text again.
    with_tools = pl.struct(plain, "toolCalls", "toolResults").hash(_SEED)
    return pl.when(has_tool_turns()).then(with_tools).otherwise(plain)


def _qualifying(
    batch: pl.DataFrame, parsed: pl.DataFrame, opts: BuildOptions, keep: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The usable calls of one batch (``c``: their order), and the trajectories that
    qualify (``id``, ``t``: position in the batch, the reward), before ``limit``.
    ``keep``: the ids a first pass chose (``topFraction``)."""
    calls = parsed.with_row_index("c")
    answered = _present("response") | pl.col("toolCalls").is_not_null()
    usable = opts.shape.calls(calls.filter(_present("userPrompt") & answered))
    if opts.search is not None:
        hits = calls.filter(text_hit(opts.search)).select("trajectoryId").unique()
        usable = usable.join(hits, on="trajectoryId", how="semi")
    counts = usable.group_by("trajectoryId").len()
    rows = opts.shape.trajectories(batch.with_row_index("t"))
    if keep is not None:
        rows = rows.join(keep, on="id", how="semi")
    included = (
        rows.select("id", "t", opts.shape.reward_field, "status", "startTime")
        .join(counts, left_on="id", right_on="trajectoryId", how="inner")
        .filter(pl.col("len") >= opts.min_llm_calls)
        .sort("t")
    )
    return usable, included


def _top_fraction(source: Any, opts: BuildOptions) -> pl.DataFrame:
    """First pass of a ``topFraction`` build: the ids of the best fraction, by reward, of
    the trajectories every other filter lets through (``limit`` comes after)."""
    parts: list[pl.DataFrame] = []
    offset = 0
    steps = _guard(source.iter_steps(BATCH_ROWS, opts.steps_filter()))
    try:
        for batch, parsed in _read_ahead(steps):
            _, included = _qualifying(batch, parsed, opts, None)
            parts.append(included.with_columns(pl.col("t") + offset))
            offset += batch.height
    finally:
        steps.close()
    field_ = opts.shape.reward_field
    schema = {"id": pl.String, "t": pl.UInt32, field_: pl.Float64}
    columns = [pl.col(name).cast(kind) for name, kind in schema.items()]
    qualifying = (
        pl.concat([p.select(columns) for p in parts]) if parts else pl.DataFrame(schema=schema)
    )
    return top_ids(qualifying, opts.shape.top_fraction or 1.0, field_)


#: The texts of an example the privacy pass reads and rewrites.
_TEXT_COLUMNS = ("systemPrompt", "userPrompt", "response")


def _private(calls: pl.DataFrame, privacy: PrivacyPass | None) -> pl.DataFrame:
    """The included calls with the privacy pass applied (before the content hash, so
    examples that differ only in a secret become one)."""
    if privacy is None or not privacy.active:
        return calls
    calls = privacy.apply(calls, _TEXT_COLUMNS, conversation="userPrompt", system="systemPrompt")
    return _private_tools(calls, privacy)


def _private_tools(calls: pl.DataFrame, privacy: PrivacyPass) -> pl.DataFrame:
    """Tool calls and results redacted like the texts: what they say (arguments,
    contents) goes through the same pass as one text column, since a regex on the JSON
    itself could break its quoting."""
    columns = ("toolCalls", "toolResults")
    rows = calls.select(has_tool_turns().arg_true()).to_series()
    if not rows.len():
        return calls
    docs = [
        [json.loads(text) if text else [] for text in values]
        for values in calls.select(columns)[rows].iter_rows()
    ]
    texts = [leaf for doc in docs for items in doc for leaf in text_leaves(items)]
    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    new = iter(privacy.apply(frame, ["text"], conversation="text").get_column("text").to_list())
    redacted = [[with_text_leaves(items, new) for items in doc] for doc in docs]
    out = []
    for i, column in enumerate(columns):
        values = [compact(doc[i]) if doc[i] else None for doc in redacted]
        series = calls.get_column(column).clone()
        out.append(series.scatter(rows, pl.Series(values, dtype=pl.String)))
    return calls.with_columns(out)


def _no_qualifying(tally: _Tally, opts: BuildOptions) -> InputError:
    calls = "call" if opts.min_llm_calls == 1 else "calls"
    if opts.filtered:
        return InputError(
            f"no trajectory qualifies: none of the {tally.total} trajectories matches the "
            f"filters ({opts.describe_filters()}) and has at least {opts.min_llm_calls} usable "
            f"LLM {calls} (a user prompt and a response that are not blank); widen the "
            "filters or lower minLlmCallsPerTrajectory"
        )
    return InputError(
        f"no trajectory qualifies: none of the {tally.scanned} trajectories has at least "
        f"{opts.min_llm_calls} usable LLM {calls} (a user prompt and a response that are "
        "not blank); record more trajectories or lower minLlmCallsPerTrajectory"
    )


def preview(
    source: Any,
    opts: BuildOptions,
    progress: ProgressFn | None = None,
    home: str | os.PathLike[str] | None = None,
) -> Preview:
    """What a build with ``opts`` would give, without writing anything: the counts, and
    how many secrets and contacts of each kind the redaction would replace."""
    tally = _Tally(privacy=PrivacyPass(opts.privacy, home))
    if opts.kind != "sft":
        preference_lines(source, opts, tally, progress, _sft_parts())
    else:
        for _ in _example_batches(source, opts, tally, progress):
            pass
    return {
        "trajectoryCount": tally.trajectories,
        "exampleCount": tally.examples,
        "redactions": tally.privacy.redactions() if tally.privacy else {},
        **tally.preference_counts(),
    }


# -- writing --------------------------------------------------------------------------------
def _message(role: str, column: str) -> pl.Expr:
    return pl.struct(role=pl.lit(role), content=pl.col(column)).struct.json_encode()


def _sft_parts() -> SftParts:
    """What a preference build (``preferences``) takes from this builder."""
    return SftParts(_example_batches, _no_qualifying, _lines, write_split)


def _lines(examples: pl.DataFrame) -> pl.DataFrame:
    """The JSONL lines as pieces that, joined by spaces, form one JSON object each.

    ``{"messages": [system (only when not blank), user, assistant], "metadata": {...}}``;
    a call with tools has the tool turns before its reply and the schemas it was offered
    (``"tools"``) when recorded, as Hugging Face chat templates and mlx-lm read them.
    A missing model or purpose is written as "": Hugging Face ``datasets`` (TRL) types a
    column from the first 10 MB of a file and fails on a string after only nulls.
    Each message is JSON-encoded by Polars and the pieces are written side by side by
    the CSV writer (space-separated, never quoted): JSON allows the spaces, and no line
    is ever assembled as one string, which halves the copying of building
    list-of-struct columns for ``write_ndjson``.
    """
    has_system = pl.col("system").is_not_null()
    tool_turns = pl.struct("response", "toolCalls", "toolResults").map_batches(
        _tool_turns, return_dtype=pl.String
    )
    return examples.select(
        pl.lit('{"messages":[').alias("open"),
        pl.when(has_system).then(_message("system", "system")).alias("system"),
        pl.when(has_system).then(pl.lit(",")).alias("comma1"),
        _message("user", "userPrompt").alias("user"),
        pl.lit(",").alias("comma2"),
        pl.when(has_tool_turns())
        .then(tool_turns)
        .otherwise(_message("assistant", "response"))
        .alias("assistant"),
        pl.when(pl.col("tools").is_not_null())
        .then(pl.concat_str(pl.lit('],"tools":'), "tools", pl.lit(',"metadata":')))
        .otherwise(pl.lit('],"metadata":'))
        .alias("meta_key"),
        pl.struct("trajectoryId", "stepId", pl.col("model", "purpose").fill_null(""))
        .struct.json_encode()
        .alias("meta"),
        pl.lit("}").alias("close"),
    )


def _tool_turns(columns: pl.Series) -> pl.Series:
    """The turns after the user prompt of the examples with tools (``chat_turns``), as
    comma-separated JSON messages; null for the others (only the few with tools are
    visited in Python)."""
    frame = columns.struct.unnest()
    rows = frame.select(has_tool_turns().arg_true()).to_series()
    texts = [
        ",".join(json.dumps(m, ensure_ascii=False) for m in chat_turns(*row))
        for row in frame.select("response", "toolCalls", "toolResults")[rows].iter_rows()
    ]
    out = pl.repeat(None, frame.height, dtype=pl.String, eager=True)
    return out.scatter(rows, pl.Series(texts, dtype=pl.String)) if texts else out


def _write_jsonl(lines: pl.DataFrame, fh: IO[bytes]) -> None:
    """Append ``lines`` (from ``_lines``) to an open file (tests patch this)."""
    if lines.height:
        lines.write_csv(fh, include_header=False, separator=" ", quote_style="never", null_value="")


@dataclass
class _Split:
    """Counts per file, and the example each file would give up if the other is empty."""

    train: int = 0
    valid: int = 0
    # (h1, line index) of the train example with the smallest hash, and the valid one
    # with the largest: the deterministic picks that keep both files non-empty.
    train_pick: tuple[int, int] | None = None
    valid_pick: tuple[int, int] | None = None
    #: Characters of each training example (``lengths.chars``), batch by batch.
    train_chars: list[pl.Series] = field(default_factory=list)
    #: The split used (``time`` falls back to ``hash`` without two distinct start
    #: times), and a time split's cutoff: the trajectory start time held out from.
    method: str = "hash"
    held_out_from: int | None = None


def _pick(part: pl.DataFrame, offset: int, best: tuple[int, int] | None, smallest: bool):
    if part.height == 0:
        return best
    idx = int(part["h1"].arg_min() if smallest else part["h1"].arg_max())  # type: ignore[arg-type]
    cand = (int(part["h1"][idx]), offset + idx)
    if best is None or (cand[0] < best[0] if smallest else cand[0] > best[0]):
        return cand
    return best


def _move_line(src: Path, dst: Path, index: int) -> None:
    """Move line ``index`` of ``src`` to the end of ``dst`` (only for tiny splits)."""
    lines = src.read_bytes().splitlines(keepends=True)
    moved = lines.pop(index)
    src.write_bytes(b"".join(lines))
    with dst.open("ab") as fh:
        fh.write(moved)


def _write_files(
    folder: Path, source: Any, opts: BuildOptions, tally: _Tally, progress: ProgressFn | None
) -> _Split:
    if opts.kind != "sft":
        return write_preference_files(folder, source, opts, tally, progress, _sft_parts())
    batches = _example_batches(source, opts, tally, progress)
    split = write_split(folder, batches, _lines, opts.split)
    if tally.trajectories == 0:
        raise _no_qualifying(tally, opts)
    return split


def write_split(
    folder: Path,
    batches: Iterable[pl.DataFrame],
    lines: Callable[[pl.DataFrame], pl.DataFrame],
    split: str = "hash",
) -> _Split:
    """Write ``train.jsonl``/``valid.jsonl`` from frames with an ``h1`` hash column and
    the trajectory's ``started`` time, each line from ``lines``; ``split`` ``time`` holds
    out the newest trajectories' examples (``split.py``), ``hash`` those whose ``h1``
    says so. Both files non-empty when possible."""
    if split == "time":
        return _write_by_time(folder, batches, lines)
    out = _Split()
    train_path, valid_path = folder / "train.jsonl", folder / "valid.jsonl"
    with train_path.open("wb") as train_fh, valid_path.open("wb") as valid_fh:
        for examples in batches:
            is_valid = _hash_held_out(examples["h1"])
            train, valid = examples.filter(~is_valid), examples.filter(is_valid)
            out.train_pick = _pick(train, out.train, out.train_pick, smallest=True)
            out.valid_pick = _pick(valid, out.valid, out.valid_pick, smallest=False)
            _write_jsonl(lines(train), train_fh)
            _write_jsonl(lines(valid), valid_fh)
            if (sizes := lengths.chars(train)) is not None:
                out.train_chars.append(sizes)
            out.train += train.height
            out.valid += valid.height
    return _both_files(out, train_path, valid_path)


def _hash_held_out(h1: pl.Series) -> pl.Series:
    return (h1 % 100) < VALID_PERCENT


def _write_by_time(
    folder: Path, batches: Iterable[pl.DataFrame], lines: Callable[[pl.DataFrame], pl.DataFrame]
) -> _Split:
    """The time split: every line to one file, then dealt out once the cutoff is known
    (the hash split when the start times cannot tell old from new)."""
    part = folder / ALL_LINES
    keys: list[pl.DataFrame] = []
    sizes: list[pl.Series] = []
    with part.open("wb") as fh:
        for examples in batches:
            _write_jsonl(lines(examples), fh)
            started = pl.col("started") if "started" in examples else pl.lit(None)
            keys.append(examples.select("h1", started.cast(pl.Int64).alias("started")))
            if (chars := lengths.chars(examples)) is not None:
                sizes.append(chars)
    schema = {"h1": pl.UInt64, "started": pl.Int64}
    frame = pl.concat(keys) if keys else pl.DataFrame(schema=schema)
    cutoff = held_out_from(frame.lazy(), VALID_PERCENT)
    if cutoff is None:
        held = _hash_held_out(frame["h1"])
    else:
        held = frame.select((pl.col("started") >= cutoff).fill_null(False)).to_series()
    train_path, valid_path = folder / "train.jsonl", folder / "valid.jsonl"
    split_lines(part, train_path, valid_path, held)
    train, valid = frame.filter(~held), frame.filter(held)
    out = _Split(
        train=train.height,
        valid=valid.height,
        train_pick=_pick(train, 0, None, smallest=True),
        valid_pick=_pick(valid, 0, None, smallest=False),
        method="hash" if cutoff is None else "time",
        held_out_from=cutoff,
    )
    if len(sizes) == len(keys) and sizes:
        out.train_chars.append(pl.concat(sizes).filter(~held))
    return _both_files(out, train_path, valid_path)


def _both_files(split: _Split, train_path: Path, valid_path: Path) -> _Split:
    """At least one valid example when there are two or more, and never an empty train."""
    if split.valid == 0 and split.train >= 2 and split.train_pick is not None:
        _move_line(train_path, valid_path, split.train_pick[1])
        split.train, split.valid = split.train - 1, 1
    elif split.train == 0 and split.valid >= 2 and split.valid_pick is not None:
        _move_line(valid_path, train_path, split.valid_pick[1])
        split.train, split.valid = 1, split.valid - 1
    fsync_path(train_path)
    fsync_path(valid_path)
    return split


# -- temp folders, sweeping -----------------------------------------------------------------
def _try_lock(folder: Path) -> int | None:
    """An fd holding an exclusive flock on ``folder``, or None when a live build holds it."""
    fd = os.open(folder, os.O_RDONLY)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


#: Record fields a dataset's metadata.json must hold for the folder to be recovered.
_RECORD_INTS = ("createdAt", "trajectoryCount", "exampleCount", "trainCount", "validCount")


def _recoverable(folder: Path) -> Dataset | None:
    """The record of a complete dataset folder (as a build leaves it just before its
    commit), or None when the folder is not one."""
    try:
        meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("id") != folder.name:
        return None
    if not all(type(meta.get(k)) is int for k in _RECORD_INTS):
        return None
    if not ((folder / "train.jsonl").is_file() and (folder / "valid.jsonl").is_file()):
        return None
    options, redactions = meta.get("options"), meta.get("redactions")
    kind = meta.get("kind") if meta.get("kind") in KINDS else "sft"
    return Dataset(
        id=folder.name,
        created_at=meta["createdAt"],
        trajectory_count=meta["trajectoryCount"],
        example_count=meta["exampleCount"],
        train_count=meta["trainCount"],
        valid_count=meta["validCount"],
        path=str(folder),
        options=options if isinstance(options, dict) else {},
        redactions=redactions if isinstance(redactions, dict) else {},
        kind=kind,
        pair_count=meta.get("pairCount"),
        label_counts=meta.get("labelCounts"),
        split="time" if meta.get("split") == "time" else "hash",
        held_out_from=cutoff if type(cutoff := meta.get("heldOutFrom")) is int else None,
    )


def sweep_orphans(root: Path, store: StateStore) -> dict[str, list[str]]:
    """Reconcile the datasets folder with the store after crashed builds.

    * ``.tmp-*`` folders no live build holds are removed (a build that died writing);
    * a complete dataset folder without a record (a crash between the rename and the
      commit, or a state database that was reset) gets its record back from its
      ``metadata.json``: its files were all written and synced before the rename.
      Anything else is left alone and, having no record, is never listed.

    Records are checked inside a write transaction; a build renames and inserts inside
    one too, so a live build's folder is never mistaken for an orphan.
    """
    out: dict[str, list[str]] = {"removed": [], "recovered": []}
    if not root.is_dir():
        return out
    with store.transaction() as tx:
        known = {r[0] for r in tx.execute("SELECT id FROM datasets")}
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and _ID_RE.fullmatch(entry.name) and entry.name not in known:
                rec = _recoverable(entry)
                if rec is not None:
                    store.insert_dataset(rec, conn=tx)
                    store.emit(
                        "dataset_recovered",
                        f"dataset {rec['id']} recovered from its folder",
                        conn=tx,
                        datasetId=rec["id"],
                    )
                    out["recovered"].append(entry.name)
    now = time.time()
    for entry in root.iterdir():
        if not entry.name.startswith(_TMP_PREFIX) or not entry.is_dir():
            continue
        try:
            if now - entry.stat().st_mtime < SWEEP_MIN_AGE_S:
                continue
            fd = _try_lock(entry)
        except FileNotFoundError:
            continue
        if fd is None:
            continue
        try:
            shutil.rmtree(entry, ignore_errors=True)
        finally:
            os.close(fd)
        out["removed"].append(entry.name)
    return out


def _new_id(root: Path, store: StateStore) -> str:
    """``ds-YYYYMMDD-HHMMSS-<6 hex>``: sortable, URL-safe, unique in the store and on disk."""
    while True:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        ds_id = f"ds-{stamp}-{secrets.token_hex(3)}"
        if (
            store.get_dataset(ds_id) is None
            and not (root / ds_id).exists()
            and not (root / f"{_TMP_PREFIX}{ds_id}").exists()
        ):
            return ds_id


# -- the build ------------------------------------------------------------------------------
def build_dataset(
    source: Any,
    settings: Settings,
    store: StateStore,
    opts: BuildOptions,
    progress: ProgressFn | None = None,
) -> Dataset:
    """Build a dataset under ``$MILADY_LAB_HOME/datasets/<id>/`` and record it.

    Raises InputError, with nothing written, when no trajectory qualifies.
    """
    root = settings.datasets_dir.absolute()  # the record must not depend on the cwd
    root.mkdir(parents=True, exist_ok=True)
    sweep_orphans(root, store)
    ds_id = _new_id(root, store)
    tmp, final = root / f"{_TMP_PREFIX}{ds_id}", root / ds_id
    created = now_ms()
    tmp.mkdir()
    lock_fd = _try_lock(tmp)
    committed = False
    try:
        tally = _Tally(privacy=PrivacyPass(opts.privacy, settings.home))
        split = _write_files(tmp, source, opts, tally, progress)
        rec = _record(ds_id, created, final, opts, tally, split, source, store)
        meta = {
            **rec.to_dict(),
            "source": getattr(source, "description", None),
            "format": _format(opts.kind, split),
        }
        (tmp / "metadata.json").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        fsync_path(tmp / "metadata.json")
        fsync_path(tmp)
        message = (
            f"dataset {ds_id} built: {tally.trajectories} trajectories, {tally.examples} examples"
        )
        with store.transaction() as tx:
            tmp.rename(final)
            try:
                store.insert_dataset(rec, conn=tx)
                store.emit("dataset_built", message, conn=tx, datasetId=ds_id)
            except BaseException:
                final.rename(tmp)
                raise
        committed = True
        with contextlib.suppress(OSError):
            fsync_path(root)
        return rec
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not committed:  # e.g. the COMMIT itself failed after the rename
            shutil.rmtree(final, ignore_errors=True)
        if disk_full(exc):
            raise StorageError(
                f"not enough disk space under {root} to build the dataset ({exc}); "
                "nothing was kept: free some space and build again"
            ) from exc
        raise
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _record(
    ds_id: str,
    created: int,
    final: Path,
    opts: BuildOptions,
    tally: _Tally,
    split: _Split,
    source: Any,
    store: StateStore,
) -> Dataset:
    """The dataset's record: counts, options, redactions, skipped rows, lengths."""
    counts = tally.preference_counts()
    sizes = pl.concat(split.train_chars) if split.train_chars else pl.Series([], dtype=pl.Int64)
    est = lengths.estimate(sizes, DEFAULT_MAX_SEQ_LENGTH, lengths.measured_speed(store))
    rec = Dataset(
        id=ds_id,
        created_at=created,
        trajectory_count=tally.trajectories,
        example_count=tally.examples,
        train_count=split.train,
        valid_count=split.valid,
        path=str(final),
        options=opts.as_body(),
        redactions=tally.privacy.redactions() if tally.privacy else {},
        # Rows of the source that could not be read (a corrupt archive line, steps
        # text that is not JSON).
        skipped_rows=int(getattr(source, "skipped_rows", 0)) + tally.unreadable,
        kind=opts.kind,  # type: ignore[arg-type]  # one of KINDS, checked by BuildOptions
        pair_count=counts.get("pairCount"),
        label_counts=counts.get("labelCounts"),
        lengths=est,
        warnings=[*lengths.warnings(est), *_split_warnings(opts, split)] or None,
        split=split.method,  # type: ignore[arg-type]  # time | hash
        held_out_from=split.held_out_from,
    )
    return rec


def _split_warnings(opts: BuildOptions, split: _Split) -> list[str]:
    """Say so when a time split was asked for and the hash chose instead."""
    if opts.split == "time" and split.method == "hash":
        return [
            "held out by content hash, not by time: the trajectories have fewer than "
            "two distinct start times"
        ]
    return []


def _format(kind: str, split: _Split) -> JsonObject:
    """What a dataset's files hold, for its ``metadata.json``."""
    if split.method == "time":
        rule = (
            f"valid when the trajectory started at or after {split.held_out_from} "
            f"(ms since epoch), chosen to hold out about {VALID_PERCENT}% of the examples"
        )
    else:
        rule = (
            f"valid when 64-bit Polars hash of (system, user, response) mod 100 "
            f"< {VALID_PERCENT}; Polars {pl.__version__}"
        )
    if kind != "sft":
        from .preferences import FORMATS

        held = {"split": rule} if split.method == "time" else {}
        return {"files": {"train": "train.jsonl", "valid": "valid.jsonl"}, **FORMATS[kind], **held}
    return {
        "files": {"train": "train.jsonl", "valid": "valid.jsonl"},
        "line": '{"messages": [{"role", "content"}...], "metadata": '
        '{"trajectoryId", "stepId", "model", "purpose"}}',
        "split": rule,
    }


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or quota is full (OSError, Polars' or SQLite's form)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return isinstance(exc, OSError | sqlite3.Error) and (
        "No space left" in text or "os error 28" in text or "disk is full" in text
    )


#: Kept for notebooks: the frame of a built dataset's examples (``dataset_files``).
load_examples = examples_frame
