"""Files exported by Milady (``POST /api/trajectories/export``, format json).

A file holds a JSON array of trajectories or ``{"trajectories": [...]}``; each entry is
in the agent API shape (summary fields + ``llmCalls`` + ``providerAccesses``, flat or
under ``"trajectory"``) or the raw row shape (snake_case columns with ``steps_json``).
A folder of such ``.json`` files is read as one source.

Entries are turned back into rows of Milady's table (``trajectory_row``) and loaded into
a private SQLite file, reloaded when the files change, so this source pages, orders and
parses exactly like ``SQLiteSource``. The agent API source uses the same conversion.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

import polars as pl

from ..api.schema import JsonObject
from ..atomic import atomic_file
from . import tools
from .base import DetailRow, SourceUnavailable, StepsFilter
from .schema import INSERT_SQL, LISTING_INDEX_DDL, TABLE_DDL
from .sqlite import SQLiteSource

_CALL_KEYS = (
    ("callId", ("callId", "call_id", "id")),
    ("timestamp", ("timestamp",)),
    ("model", ("model",)),
    ("systemPrompt", ("systemPrompt", "system_prompt")),
    ("userPrompt", ("userPrompt", "user_prompt")),
    ("response", ("response",)),
    ("temperature", ("temperature",)),
    ("maxTokens", ("maxTokens", "max_tokens")),
    ("purpose", ("purpose",)),
    ("actionType", ("actionType", "action_type")),
    ("latencyMs", ("latencyMs", "latency_ms")),
    ("promptTokens", ("promptTokens", "prompt_tokens")),
    ("completionTokens", ("completionTokens", "completion_tokens")),
    # Tool use (``tools``): kept as recorded, read by the parser in any of its shapes.
    ("toolCalls", tools.CALLS_KEYS),
    ("toolResults", tools.RESULTS_KEYS),
    ("tools", tools.TOOLS_KEYS),
)
_ACCESS_KEYS = (
    ("providerId", ("providerId", "provider_id", "id")),
    ("providerName", ("providerName", "provider_name")),
    ("timestamp", ("timestamp",)),
    ("data", ("data",)),
    ("query", ("query",)),
    ("purpose", ("purpose",)),
)


def _get(obj: JsonObject, *keys: str) -> Any:
    for key in keys:
        if obj.get(key) is not None:
            return obj[key]
    return None


def _int(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**63:
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:  # an ISO timestamp
            return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return default
    return default


def _float(value: Any, default: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _iso(value: Any, fallback_ms: int | None) -> str:
    if isinstance(value, str) and value.strip():
        return value
    ms = _int(value, fallback_ms) or 0
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _pick(item: JsonObject, keys: Iterable[tuple[str, tuple[str, ...]]]) -> JsonObject:
    out = {}
    for name, alts in keys:
        value = _get(item, *alts)
        if value is not None:
            out[name] = value
    return out


class ApiStep(TypedDict):
    """A step rebuilt from the API's flat lists, in the agent's steps_json shape."""

    stepId: str
    llmCalls: list[JsonObject]
    providerAccesses: list[JsonObject]


def steps_from_api(calls: Any, accesses: Any) -> list[ApiStep]:
    """Steps rebuilt from the API's flat ``llmCalls``/``providerAccesses`` lists.

    Consecutive calls with one stepId form a step, so calls keep their recorded order;
    an access joins the first step with its stepId, or a new step at the end.
    """
    steps: list[ApiStep] = []
    by_id: dict[str, ApiStep] = {}

    def new_step(key: str) -> ApiStep:
        step: ApiStep = {"stepId": key, "llmCalls": [], "providerAccesses": []}
        steps.append(step)
        by_id.setdefault(key, step)
        return step

    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            key = _text(_get(call, "stepId", "step_id")) or "step-0"
            step = steps[-1] if steps and steps[-1]["stepId"] == key else new_step(key)
            step["llmCalls"].append(_pick(call, _CALL_KEYS))
    for access in accesses if isinstance(accesses, list) else []:
        if isinstance(access, dict):
            key = _text(_get(access, "stepId", "step_id")) or "step-0"
            step = by_id.get(key) or new_step(key)
            step["providerAccesses"].append(_pick(access, _ACCESS_KEYS))
    return steps


def entry_id(entry: Any) -> str | None:
    """The trajectory id of one exported entry (any accepted shape)."""
    if not isinstance(entry, dict):
        return None
    head = entry.get("trajectory") if isinstance(entry.get("trajectory"), dict) else entry
    return _text(_get(head, "id", "trajectoryId", "trajectory_id"))


def trajectory_row(entry: Any, summary: JsonObject | None = None) -> tuple[Any, ...] | None:
    """One exported trajectory (any accepted shape) as a row of Milady's table, in
    ``schema.COLUMNS`` order; None when it has no id. ``summary`` (a listing item) fills
    summary fields the entry lacks."""
    if not isinstance(entry, dict):
        return None
    head = entry.get("trajectory") if isinstance(entry.get("trajectory"), dict) else entry
    # A listing item is the authority on what it lists: the agent's detail falls back to
    # "chat" for the source when its metadata has none.
    listed = {k: summary[k] for k in _LISTED if summary and summary.get(k) is not None}
    s: JsonObject = {**(summary or {}), **head, **listed}
    tid = entry_id(entry) or _text(_get(s, "id", "trajectoryId", "trajectory_id"))
    if not tid:
        return None
    raw_steps = _get(s, "steps_json", "stepsJson")
    if raw_steps is None and isinstance(s.get("steps"), list | dict):
        raw_steps = s["steps"]
    if raw_steps is None:
        calls = _get(entry, "llmCalls", "llm_calls")
        accesses = _get(entry, "providerAccesses", "provider_accesses")
        if calls is None and head is not entry:
            calls = _get(head, "llmCalls", "llm_calls")
            accesses = _get(head, "providerAccesses", "provider_accesses")
        raw_steps = steps_from_api(calls, accesses)
    steps_json = (
        raw_steps
        if isinstance(raw_steps, str)
        else json.dumps(raw_steps, ensure_ascii=False, separators=(",", ":"))
    )
    start = _int(_get(s, "startTime", "start_time"), 0)
    end = _int(_get(s, "endTime", "end_time"))
    metadata = s.get("metadata")
    step_count = _int(_get(s, "stepCount", "step_count"))
    if step_count is None:
        step_count = len(raw_steps) if isinstance(raw_steps, list) else 0
    return (
        tid,
        _text(_get(s, "trajectoryId", "trajectory_id")) or tid,
        _text(_get(s, "agentId", "agent_id")) or "",
        _text(s.get("source")) or "runtime",
        _text(s.get("status")) or "completed",
        start,
        end,
        _int(_get(s, "durationMs", "duration_ms")),
        step_count,
        _int(_get(s, "llmCallCount", "llm_call_count"), 0),
        _int(_get(s, "providerAccessCount", "provider_access_count"), 0),
        _int(_get(s, "totalPromptTokens", "total_prompt_tokens"), 0),
        _int(_get(s, "totalCompletionTokens", "total_completion_tokens"), 0),
        _float(_get(s, "totalReward", "total_reward"), 0.0),
        steps_json,
        metadata if isinstance(metadata, str) else json.dumps(metadata or {}),
        _iso(_get(s, "createdAt", "created_at"), start),
        _iso(_get(s, "updatedAt", "updated_at"), end or start),
        _int(_get(s, "episodeLength", "episode_length")),
        _float(_get(s, "aiJudgeReward", "ai_judge_reward")),
        _text(_get(s, "aiJudgeReasoning", "ai_judge_reasoning")),
        _text(s.get("archetype")),
        _group(s, metadata, "scenarioId", "scenario_id"),
        _group(s, metadata, "batchId", "batch_id"),
    )


def _group(s: JsonObject, metadata: Any, camel: str, snake: str) -> str | None:
    """A grouping id: the record's own field, else its metadata's (where the agent's
    writer also keeps it)."""
    value = _text(_get(s, camel, snake))
    if value is None and isinstance(metadata, dict):
        value = _text(_get(metadata, camel, snake))
    return value


#: Summary fields a listing item decides over a detail (``trajectory_row``).
_LISTED = ("source", "status", "updatedAt")


def entries_of(doc: Any) -> list[Any]:
    """The trajectory entries of one export document; [] for anything else.

    The agent's ``POST /api/trajectories/export`` answers either detail records (``jsonShape:
    "legacy"``, or files exported by older agents) or ``eliza_native_v1`` rows, one per LLM
    call; those are grouped back into trajectories by ``trajectoryId``."""
    if isinstance(doc, dict):
        doc = doc.get("trajectories")
    if not isinstance(doc, list):
        return []
    if doc and all(_is_native(row) for row in doc):
        return native_entries(doc)
    return doc


def _is_native(row: Any) -> bool:
    return isinstance(row, dict) and (
        row.get("format") == "eliza_native_v1"
        or (isinstance(row.get("request"), dict) and isinstance(row.get("response"), dict))
    )


def native_entries(rows: list[JsonObject]) -> list[JsonObject]:
    """``eliza_native_v1`` rows (one per call) as trajectory entries with ``llmCalls``."""
    entries: dict[str, JsonObject] = {}
    for row in rows:
        tid = _text(_get(row, "trajectoryId", "trajectory_id"))
        if not tid:
            continue
        entry = entries.setdefault(tid, {"trajectoryId": tid, "llmCalls": []})
        for key in ("agentId", "source", "status", "scenarioId", "batchId"):
            if row.get(key) is not None:
                entry.setdefault(key, row[key])
        entry["llmCalls"].append(_native_call(row))
    return list(entries.values())


def _native_call(row: JsonObject) -> JsonObject:
    request, response = row.get("request") or {}, row.get("response") or {}
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    messages = request.get("messages") if isinstance(request.get("messages"), list) else None
    prompt = request.get("prompt")
    if prompt is None and messages:
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1].get("content") if users else None
    call = {
        "callId": row.get("callId"),
        "stepId": row.get("stepId"),
        "timestamp": row.get("timestamp"),
        "purpose": row.get("purpose"),
        "actionType": row.get("actionType"),
        "model": row.get("model"),
        "systemPrompt": request.get("system"),
        "userPrompt": prompt if isinstance(prompt, str) else None,
        "messages": messages,
        "tools": request.get("tools"),
        "response": response.get("text"),
        "toolCalls": response.get("toolCalls"),
        "promptTokens": _get(usage, "promptTokens", "inputTokens"),
        "completionTokens": _get(usage, "completionTokens", "outputTokens"),
        "latencyMs": row.get("latencyMs"),
    }
    return {k: v for k, v in call.items() if v is not None}


def create_cache_db(conn: sqlite3.Connection) -> None:
    conn.execute(TABLE_DDL)
    conn.execute(LISTING_INDEX_DDL)


def upsert_rows(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    conn.executemany(INSERT_SQL.replace("INSERT INTO", "INSERT OR REPLACE INTO", 1), rows)


class ExportSource(SQLiteSource):
    """A JSON export file, or a folder of them, served through a private SQLite copy."""

    CHECK_EVERY_S = 1.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.export_path = Path(path).expanduser()
        workdir = Path(tempfile.mkdtemp(prefix="milady-lab-export-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, workdir, True)
        super().__init__(workdir / "export.sqlite", description=f"export:{self.export_path}")
        self._load_lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._problem: str | None = None
        self.skipped_rows = 0

    def _files(self) -> list[Path]:
        if self.export_path.is_dir():
            return sorted(p for p in self.export_path.iterdir() if p.suffix.lower() == ".json")
        return [self.export_path]

    def _refresh(self) -> None:
        """Reload the copy when the export files changed (checked at most once a second)."""
        with self._load_lock:
            now = time.monotonic()
            if self._signature is not None and now - self._checked < self.CHECK_EVERY_S:
                return
            self._checked = now
            try:
                files = self._files()
                signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
            except OSError:
                signature, files = ("missing",), []
            if signature == self._signature:
                return
            self._signature = signature
            self._problem = self._load(files)

    def _load(self, files: list[Path]) -> str | None:
        if not self.export_path.exists():
            self.path.unlink(missing_ok=True)
            return f"no export at {self.export_path}"
        if not files:
            self.path.unlink(missing_ok=True)
            return f"no .json files in {self.export_path}"
        rows: list[tuple[Any, ...]] = []
        bad: list[str] = []
        for file in files:
            try:
                with open(file, "rb") as fh:
                    entries = entries_of(json.load(fh))
            except (OSError, ValueError, RecursionError) as exc:
                bad.append(f"{file.name}: {exc}")
                continue
            rows.extend(r for r in map(trajectory_row, entries) if r is not None)
        # Renamed into place: the reader notices the new inode and reopens.
        with atomic_file(self.path) as tmp:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=OFF")
                create_cache_db(conn)
                conn.execute("BEGIN")
                upsert_rows(conn, rows)
                conn.execute("COMMIT")
            finally:
                conn.close()
        self.skipped_rows = len(bad)  # files that are not JSON, counted in a build's record
        if bad and not rows:
            return f"{self.export_path} is not a trajectories export ({bad[0]})"
        return None

    def _ready(self) -> None:
        """Refresh; an export that cannot be read raises with the cause."""
        self._refresh()
        if self._problem:
            raise SourceUnavailable(self._problem)

    def unavailable_reason(self) -> str | None:
        self._refresh()
        return self._problem or super().unavailable_reason()

    def count(self) -> int:
        self._ready()
        return super().count()

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        self._ready()
        return super().summaries(limit, offset)

    def detail(self, trajectory_id: str) -> DetailRow | None:
        self._ready()
        return super().detail(trajectory_id)

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        self._ready()
        return super().iter_steps(batch_rows, where)

    def rewards_filled(self, field: str) -> bool:
        self._ready()
        return super().rewards_filled(field)

    def summaries_frame(self) -> pl.LazyFrame:
        self._ready()
        return super().summaries_frame()
