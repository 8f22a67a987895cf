"""The durable state store: datasets, jobs, job metrics, models and the event log.

One SQLite database under ``MILADY_LAB_HOME`` (WAL, versioned schema) that a Jupyter
server, notebook kernels, CLI processes and training workers all open at once. Every
write is a short transaction; ``busy_timeout`` lets concurrent writers queue instead of
failing. A table's row comes back as a ``Row``: a plain dict with the camelCase keys of
the REST bodies and the private columns beside them (a job's pid, heartbeat, output
folder), which the job manager and the model code read. What the API lists as is (job
metrics, benchmarks and their runs, the activation history) comes back as its ``milady_lab.api``
record, built from the row in one step.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from .api.schema import Activation, BenchmarkAnswer, BenchmarkRun, JsonObject, Metric

#: One table row as a camelCase dict: the API record's fields and the private ones
#: (``pid``, ``outputPath``, ``heartbeatAt``...) that only the store's users read.
Row = dict[str, Any]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    trajectory_count INTEGER NOT NULL,
    example_count INTEGER NOT NULL,
    train_count INTEGER NOT NULL,
    valid_count INTEGER NOT NULL,
    path TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    redactions TEXT NOT NULL DEFAULT '{}',
    skipped_rows INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    dataset_id TEXT,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    completed_at INTEGER,
    current_iteration INTEGER NOT NULL DEFAULT 0,
    total_iterations INTEGER NOT NULL,
    loss REAL,
    val_loss REAL,
    error TEXT,
    tokens_per_second REAL,
    trained_tokens INTEGER NOT NULL DEFAULT 0,
    peak_memory INTEGER,
    options TEXT NOT NULL DEFAULT '{}',
    resume_from TEXT,
    checkpoint_iteration INTEGER,
    output_path TEXT,
    pid INTEGER,
    pid_start_time REAL,
    heartbeat_at INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
CREATE TABLE IF NOT EXISTS job_metrics (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    loss REAL,
    val_loss REAL,
    learning_rate REAL,
    tokens_per_second REAL,
    trained_tokens INTEGER,
    peak_memory INTEGER
);
CREATE INDEX IF NOT EXISTS job_metrics_job ON job_metrics(job_id, seq);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    adapter_path TEXT NOT NULL,
    base_model TEXT NOT NULL,
    base_model_path TEXT,
    backend TEXT NOT NULL,
    dataset_id TEXT,
    final_loss REAL,
    ollama_name TEXT,
    imported_at INTEGER,
    provider_model TEXT,
    activated_at INTEGER,
    benchmark TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id(prefix: str) -> str:
    """``<prefix>-YYYYMMDDHHMMSS-<6 hex>``: sortable by time, unique across processes."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


class JobStatus(StrEnum):
    """A job's state; members compare equal to their REST strings."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


#: What a running job is doing, in the order it does it (``evaluating`` and ``training``
#: alternate while it trains); a finished job keeps the last stage it reached.
JOB_STAGES = ("loading", "training", "evaluating", "saving", "registering")

#: ``queued`` and ``running`` are live; the rest are final.
LIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class _Any:
    """``finish_job``'s "whatever it is" for the pid and heartbeat conditions."""


ANY: Any = _Any()


@dataclass(frozen=True)
class _Col:
    key: str  # camelCase key in records
    column: str  # SQL column
    kind: str = "plain"  # plain | json | bool


def _cols(*spec: str) -> tuple[_Col, ...]:
    out = []
    for item in spec:
        key, _, kind = item.partition(":")
        column = "".join("_" + c.lower() if c.isupper() else c for c in key)
        out.append(_Col(key, column, kind or "plain"))
    return tuple(out)


_DATASET = _cols(
    "id",
    "createdAt",
    "trajectoryCount",
    "exampleCount",
    "trainCount",
    "validCount",
    "path",
    "options:json",
    "redactions:json",
    "skippedRows",
    # Preference datasets (issue 27): sft | pairs | labelled, and what each rule gave.
    "kind",
    "pairCount",
    "labelCounts:json",
    # Example lengths against maxSeqLength, and what to know before training (issue 26).
    "lengths:json",
    "warnings:json",
    # The held-out split (issue 26): time or hash, and a time split's cutoff.
    "split",
    "heldOutFrom",
)
#: The best checkpoint of a run, on its job and on the model registered from it.
_TRAINING_RESULT = ("bestIteration", "bestValLoss")
_JOB = _cols(
    "id",
    "status",
    "datasetId",
    "backend",
    "model",
    "createdAt",
    "startedAt",
    "completedAt",
    "currentIteration",
    "totalIterations",
    "loss",
    "valLoss",
    "error",
    "tokensPerSecond",
    "trainedTokens",
    "peakMemory",
    "options:json",
    "resumeFrom",
    "checkpointIteration",
    "outputPath",
    "pid",
    "pidStartTime",
    "heartbeatAt",
    *_TRAINING_RESULT,
    "stoppedEarly:bool",
    "stopReason",
    "truncatedExamples",
    "droppedExamples",
    # Truncation that keeps what matters (issue 26): the prompts' oldest turns go first.
    "shortenedExamples",
    "droppedTurns",
    "lastAdapterPath",
    "stage",
)
_METRIC = _cols(
    "jobId",
    "iteration",
    "ts",
    "loss",
    "valLoss",
    "learningRate",
    "tokensPerSecond",
    "trainedTokens",
    "peakMemory",
    # Preference objectives (issue 27, ``training/preference.py``).
    "rewardsChosen",
    "rewardsRejected",
    "rewardMargin",
    "rewardAccuracy",
    "logpsChosen",
    "logpsRejected",
    "klEstimate",
    "valRewardMargin",
)
#: The fields of one metric a worker reports (the row's jobId and ts are the store's).
METRIC_KEYS = tuple(c.key for c in _METRIC if c.key not in ("jobId", "ts"))
#: The preference figures (dpo/kto) the CLI bar and the launcher show: key → short label.
PREFERENCE_FIGURES = {"rewardMargin": "margin", "logpsChosen": "logp+", "logpsRejected": "logp-"}
_MODEL = _cols(
    "id",
    "jobId",
    "name",
    "createdAt",
    "active:bool",
    "adapterPath",
    "baseModel",
    "baseModelPath",
    "backend",
    "datasetId",
    "finalLoss",
    "ollamaName",
    "importedAt",
    "providerModel",
    "activatedAt",
    "benchmark:json",
    *_TRAINING_RESULT,
)
_TABLES = {"datasets": _DATASET, "jobs": _JOB, "models": _MODEL}


def _dumps(value: Any) -> str:
    """A column's or an event's JSON; an API record in it (a benchmark's scores) as the
    JSON it encodes to."""
    return json.dumps(value, default=msgspec.to_builtins)


def _encode(col: _Col, value: Any) -> Any:
    if col.kind == "json":
        return None if value is None else _dumps(value)
    if col.kind == "bool":
        return int(bool(value))
    return value


#: Record keys left out when null: a preference dataset's counts on an SFT one.
_OMITTED_WHEN_NULL = frozenset({"pairCount", "labelCounts", "lengths", "warnings", "heldOutFrom"})


def _decode(cols: tuple[_Col, ...], row: sqlite3.Row) -> Row:
    rec: Row = {}
    for col in cols:
        value = row[col.column]
        if value is None and col.key in _OMITTED_WHEN_NULL:
            continue
        if col.kind == "json":
            value = None if value is None else json.loads(value)
        elif col.kind == "bool":
            value = bool(value)
        rec[col.key] = value
    return rec


#: Columns added after a table was first released: (table, column, definition).
_ADDED_COLUMNS = (
    ("datasets", "redactions", "TEXT NOT NULL DEFAULT '{}'"),
    ("datasets", "skipped_rows", "INTEGER NOT NULL DEFAULT 0"),
    ("datasets", "kind", "TEXT NOT NULL DEFAULT 'sft'"),
    ("datasets", "pair_count", "INTEGER"),
    ("datasets", "label_counts", "TEXT"),
    # Training controls (issue 15): the best checkpoint, early stopping, truncation.
    ("jobs", "best_iteration", "INTEGER"),
    ("jobs", "best_val_loss", "REAL"),
    ("jobs", "stopped_early", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "stop_reason", "TEXT"),
    ("jobs", "truncated_examples", "INTEGER"),
    ("jobs", "dropped_examples", "INTEGER"),
    ("jobs", "last_adapter_path", "TEXT"),
    ("models", "best_iteration", "INTEGER"),
    ("models", "best_val_loss", "REAL"),
    ("job_metrics", "rewards_chosen", "REAL"),
    ("job_metrics", "rewards_rejected", "REAL"),
    ("job_metrics", "reward_margin", "REAL"),
    ("job_metrics", "reward_accuracy", "REAL"),
    ("job_metrics", "logps_chosen", "REAL"),
    ("job_metrics", "logps_rejected", "REAL"),
    ("job_metrics", "kl_estimate", "REAL"),
    ("job_metrics", "val_reward_margin", "REAL"),
    # Progress on every wait (issue 25): the stage a running job is in (``JOB_STAGES``).
    ("jobs", "stage", "TEXT"),
    # Activation warnings (issue 25): an ``ollama/…`` model Ollama did not list.
    ("activations", "warnings", "TEXT"),
    # Truncation that keeps what matters (issue 26).
    ("jobs", "shortened_examples", "INTEGER"),
    ("jobs", "dropped_turns", "INTEGER"),
    ("datasets", "lengths", "TEXT"),
    ("datasets", "warnings", "TEXT"),
    # Time-based held-out split (issue 26); datasets built before it were split by hash.
    ("datasets", "split", "TEXT NOT NULL DEFAULT 'hash'"),
    ("datasets", "held_out_from", "INTEGER"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database made before a column existed up to date (additive only)."""
    for table, column, definition in _ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


class StateStore:
    """Thread-safe access to the state database; one connection per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer milady-lab (schema {version}); "
                    "upgrade milady-lab to open it"
                )
            # Not executescript(): it COMMITs first, ending the transaction taken above.
            for statement in (_SCHEMA + _EVAL_SCHEMA).split(";"):
                if statement.strip():
                    conn.execute(statement)
            _add_missing_columns(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections -----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so check-then-write is atomic."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- generic helpers ---------------------------------------------------------------
    def _insert(
        self, table: str, rec: Mapping[str, Any], conn: sqlite3.Connection | None = None
    ) -> None:
        cols = [c for c in _TABLES[table] if c.key in rec]
        sql = (
            f"INSERT INTO {table} ({', '.join(c.column for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})"
        )
        params = [_encode(c, rec[c.key]) for c in cols]
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.transaction() as tx:
                tx.execute(sql, params)

    def _update(
        self,
        table: str,
        id_: str,
        fields: Mapping[str, Any],
        conn: sqlite3.Connection | None = None,
    ) -> None:
        by_key = {c.key: c for c in _TABLES[table]}
        unknown = set(fields) - set(by_key)
        if unknown:
            raise KeyError(f"unknown {table} fields: {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{by_key[k].column} = ?" for k in fields)
        sql = f"UPDATE {table} SET {assignments} WHERE id = ?"
        params = [*(_encode(by_key[k], v) for k, v in fields.items()), id_]
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.transaction() as tx:
                tx.execute(sql, params)

    def _get(self, table: str, id_: str, conn: sqlite3.Connection | None = None) -> Row | None:
        row = (
            (conn or self._conn()).execute(f"SELECT * FROM {table} WHERE id = ?", (id_,)).fetchone()
        )
        return None if row is None else _decode(_TABLES[table], row)

    def _list(self, table: str, where: str = "", params: tuple[Any, ...] = ()) -> list[Row]:
        rows = (
            self._conn()
            .execute(f"SELECT * FROM {table} {where} ORDER BY created_at DESC, id ASC", params)
            .fetchall()
        )
        return [_decode(_TABLES[table], r) for r in rows]

    # -- datasets ---------------------------------------------------------------------------
    def insert_dataset(
        self, rec: Mapping[str, Any], conn: sqlite3.Connection | None = None
    ) -> None:
        self._insert("datasets", rec, conn)

    def get_dataset(self, id_: str) -> Row | None:
        return self._get("datasets", id_)

    def list_datasets(self) -> list[Row]:
        return self._list("datasets")

    # -- jobs -----------------------------------------------------------------------------
    def insert_job(self, rec: Mapping[str, Any], conn: sqlite3.Connection | None = None) -> None:
        self._insert("jobs", rec, conn)

    def update_job(self, id_: str, conn: sqlite3.Connection | None = None, **fields: Any) -> None:
        self._update("jobs", id_, fields, conn)

    def get_job(self, id_: str, conn: sqlite3.Connection | None = None) -> Row | None:
        return self._get("jobs", id_, conn)

    def list_jobs(self, statuses: tuple[str, ...] | None = None) -> list[Row]:
        if statuses:
            marks = ", ".join("?" for _ in statuses)
            return self._list("jobs", f"WHERE status IN ({marks})", statuses)
        return self._list("jobs")

    def counts(self) -> dict[str, int]:
        """Jobs per status and the number of datasets and models, in one read."""
        conn = self._conn()
        out = {status.value: 0 for status in JobStatus}
        for row in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            out[row[0]] = int(row[1])
        for table in ("datasets", "models"):
            out[table] = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        return out

    def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        conn: sqlite3.Connection | None = None,
        *,
        error: str | None = None,
        pid: int | None = ANY,
        heartbeat_at: int | None = ANY,
        was: JobStatus = JobStatus.RUNNING,
        fields: Mapping[str, Any] | None = None,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> bool:
        """End a job if it is still ``was`` (running) under ``pid`` with ``heartbeat_at``
        (unless ANY): one conditional UPDATE, and the ``job_<status>`` event only when
        a row changed. True when this call ended it; False when someone else got there.

        ``fields`` are further columns to set; ``message`` and ``data`` replace the
        event's default text and ``{"error": error}``.
        """
        assert JobStatus(status).is_final
        by_key = {c.key: c for c in _JOB}
        values = {"status": str(status), "error": error, "completedAt": now_ms(), **(fields or {})}
        sets = ", ".join(f"{by_key[k].column} = ?" for k in values)
        params: list[Any] = [_encode(by_key[k], val) for k, val in values.items()]
        where = "id = ? AND status = ?"
        params += [job_id, str(was)]
        for column, expected in (("pid", pid), ("heartbeat_at", heartbeat_at)):
            if expected is not ANY:
                where += f" AND {column} IS ?"
                params.append(expected)
        text = message or f"job {job_id} {status}" + (f": {error}" if error else "")
        extra = {"error": error} if data is None else dict(data)
        with nullcontext(conn) if conn is not None else self.transaction() as tx:
            if tx.execute(f"UPDATE jobs SET {sets} WHERE {where}", params).rowcount != 1:
                return False
            self.emit(f"job_{status}", text, tx, jobId=job_id, **extra)
        return True

    def add_metric(self, job_id: str, **metric: Any) -> None:
        rec = {"jobId": job_id, "ts": now_ms(), **metric}
        self._insert_metric(rec)

    def _insert_metric(self, rec: Mapping[str, Any]) -> None:
        cols = [c for c in _METRIC if c.key in rec]
        with self.transaction() as tx:
            tx.execute(
                f"INSERT INTO job_metrics ({', '.join(c.column for c in cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                [rec[c.key] for c in cols],
            )

    def metrics(self, job_id: str, after_seq: int = 0) -> list[Metric]:
        """A job's logged steps after ``after_seq``, oldest first (null figures absent)."""
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM job_metrics WHERE job_id = ? AND seq > ? ORDER BY seq",
                (job_id, after_seq),
            )
            .fetchall()
        )
        return [Metric(seq=r["seq"], **{c.column: r[c.column] for c in _METRIC}) for r in rows]

    # -- models ---------------------------------------------------------------------------
    def insert_model(self, rec: Mapping[str, Any], conn: sqlite3.Connection | None = None) -> None:
        self._insert("models", rec, conn)

    def update_model(self, id_: str, conn: sqlite3.Connection | None = None, **fields: Any) -> None:
        self._update("models", id_, fields, conn)

    def get_model(self, id_: str, conn: sqlite3.Connection | None = None) -> Row | None:
        return self._get("models", id_, conn)

    def list_models(self) -> list[Row]:
        return self._list("models")

    def model_id_for_job(self, job_id: str) -> str | None:
        """The model a job registered (the oldest, if several): one read, not every model."""
        row = (
            self._conn()
            .execute(
                "SELECT id FROM models WHERE job_id = ? ORDER BY created_at, id DESC LIMIT 1",
                (job_id,),
            )
            .fetchone()
        )
        return None if row is None else row[0]

    # -- events ----------------------------------------------------------------------------
    def emit(
        self, kind: str, message: str, conn: sqlite3.Connection | None = None, **data: Any
    ) -> None:
        """Append to the event log that the SSE stream, CLI and widgets follow."""
        params = (now_ms(), kind, message, _dumps(data))
        sql = "INSERT INTO events (ts, kind, message, data) VALUES (?, ?, ?, ?)"
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.transaction() as tx:
                tx.execute(sql, params)

    def events(self, after_seq: int = 0, limit: int = 500) -> list[JsonObject]:
        """Events after ``after_seq``: seq, kind, ts, message and the event's own data
        (free-form: each kind carries its fields), as the SSE stream sends them."""
        rows = (
            self._conn()
            .execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
            .fetchall()
        )
        return [
            {
                "seq": r["seq"],
                "kind": r["kind"],
                "ts": r["ts"],
                "message": r["message"],
                **json.loads(r["data"]),
            }
            for r in rows
        ]

    def last_event_seq(self) -> int:
        row = self._conn().execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(row[0])


# -- evaluation, activation history, auto-improve (issue 14) --------------------------------
# Kept apart from the job code above: its own tables, created on open like the others.
_EVAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS benchmarks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    completed_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS benchmarks_model ON benchmarks(model_id, seq);
CREATE TABLE IF NOT EXISTS activations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    activated_at INTEGER NOT NULL,
    config_path TEXT NOT NULL,
    previous_config BLOB,
    previous_mode INTEGER,
    written_sha256 TEXT NOT NULL,
    previous_keys TEXT NOT NULL,
    previous_active_id TEXT,
    forced INTEGER NOT NULL DEFAULT 0,
    gate TEXT,
    rolled_back_at INTEGER
);
CREATE TABLE IF NOT EXISTS benchmark_runs (
    run_id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,
    owner_pid INTEGER,
    owner_start REAL,
    started_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS benchmark_runs_model ON benchmark_runs(model_id, started_at);
CREATE TABLE IF NOT EXISTS settings_kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"""

_ACTIVATION_KEYS = (
    "seq",
    "model_id",
    "provider_model",
    "activated_at",
    "config_path",
    "previous_config",
    "previous_mode",
    "written_sha256",
    "previous_keys",
    "previous_active_id",
    "forced",
    "gate",
    "rolled_back_at",
    "warnings",
)


_ACTIVATION_JSON = ("previous_keys", "gate", "warnings")
#: The columns an activation listing shows as they are (``Activation``'s plain fields).
_ACTIVATION_LISTED = (
    "seq",
    "model_id",
    "provider_model",
    "activated_at",
    "config_path",
    "previous_mode",
    "previous_active_id",
    "rolled_back_at",
)
_BENCHMARK = msgspec.json.Decoder(BenchmarkAnswer)
_BENCHMARK_RUN = msgspec.json.Decoder(BenchmarkRun)


def _json_column(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _camel(column: str) -> str:
    head, *rest = column.split("_")
    return head + "".join(p.title() for p in rest)


class EvalStore:
    """Benchmarks, activations, key/value settings and leases over a ``StateStore``."""

    def __init__(self, store: StateStore) -> None:
        self.store = store  # its tables are created with the store's own (``_EVAL_SCHEMA``)

    # -- benchmarks ------------------------------------------------------------------------
    def add_benchmark(self, body: Mapping[str, Any], conn: sqlite3.Connection) -> int:
        cur = conn.execute(
            "INSERT INTO benchmarks (model_id, completed_at, body) VALUES (?, ?, ?)",
            (body["modelId"], body["completedAt"], _dumps(body)),
        )
        return int(cur.lastrowid or 0)

    def benchmarks(self, model_id: str) -> list[BenchmarkAnswer]:
        """A model's benchmarks, newest first."""
        rows = (
            self.store._conn()
            .execute(
                "SELECT seq, body FROM benchmarks WHERE model_id = ? ORDER BY seq DESC", (model_id,)
            )
            .fetchall()
        )
        return [_BENCHMARK.decode(r["body"]) for r in rows]

    # -- benchmark runs --------------------------------------------------------------------
    def add_benchmark_run(
        self, run: BenchmarkRun, owner: tuple[int, float | None], conn: sqlite3.Connection
    ) -> None:
        """A new run, with the process that runs it (pid and start time)."""
        conn.execute(
            "INSERT INTO benchmark_runs (run_id, model_id, status, owner_pid, owner_start, "
            "started_at, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, run.model_id, run.status, *owner, run.started_at, _dumps(run)),
        )

    def save_benchmark_run(self, run: BenchmarkRun, conn: sqlite3.Connection | None = None) -> None:
        """The run as it stands now (its progress, or its end)."""
        sql = "UPDATE benchmark_runs SET status = ?, body = ? WHERE run_id = ?"
        params = (run.status, _dumps(run), run.run_id)
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.store.transaction() as tx:
                tx.execute(sql, params)

    def latest_benchmark_run(
        self, model_id: str, conn: sqlite3.Connection | None = None
    ) -> tuple[BenchmarkRun, tuple[int | None, float | None]] | None:
        """A model's newest run and its owner (pid, start time); None when it has none."""
        row = (
            (conn or self.store._conn())
            .execute(
                "SELECT body, owner_pid, owner_start FROM benchmark_runs WHERE model_id = ? "
                "ORDER BY started_at DESC, rowid DESC LIMIT 1",
                (model_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return _BENCHMARK_RUN.decode(row["body"]), (row["owner_pid"], row["owner_start"])

    def running_benchmark_runs(
        self, conn: sqlite3.Connection | None = None
    ) -> list[tuple[BenchmarkRun, tuple[int | None, float | None]]]:
        """Every run recorded as running, with its owner (pid, start time)."""
        rows = (
            (conn or self.store._conn())
            .execute(
                "SELECT body, owner_pid, owner_start FROM benchmark_runs WHERE status = 'running'"
            )
            .fetchall()
        )
        return [
            (_BENCHMARK_RUN.decode(r["body"]), (r["owner_pid"], r["owner_start"])) for r in rows
        ]

    # -- activations -----------------------------------------------------------------------
    def add_activation(self, rec: Mapping[str, Any], conn: sqlite3.Connection) -> int:
        cols = [c for c in _ACTIVATION_KEYS if c != "seq" and _camel(c) in rec]
        values = []
        for c in cols:
            value = rec[_camel(c)]
            values.append(_dumps(value) if c in _ACTIVATION_JSON else value)
        cur = conn.execute(
            f"INSERT INTO activations ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            values,
        )
        return int(cur.lastrowid or 0)

    def activations(self, limit: int = 100) -> list[Activation]:
        """Activation history, newest first, without the saved config contents (the old
        config may hold secrets, API keys: never in a listing)."""
        rows = (
            self.store._conn()
            .execute("SELECT * FROM activations ORDER BY seq DESC LIMIT ?", (limit,))
            .fetchall()
        )
        return [
            Activation(
                **{c: row[c] for c in _ACTIVATION_LISTED},
                forced=bool(row["forced"]),
                **{c: _json_column(row[c]) for c in ("gate", "warnings")},
            )
            for row in rows
        ]

    def last_open_activation(self, conn: sqlite3.Connection) -> Row | None:
        """The newest activation not rolled back yet, with the config it replaced."""
        row = conn.execute(
            "SELECT * FROM activations WHERE rolled_back_at IS NULL ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        rec: Row = {}
        for c in _ACTIVATION_KEYS:
            value = row[c]
            if c in _ACTIVATION_JSON:
                value = _json_column(value)
            elif c == "forced":
                value = bool(value)
            rec[_camel(c)] = value
        return rec

    def mark_rolled_back(self, seq: int, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE activations SET rolled_back_at = ? WHERE seq = ?", (now_ms(), seq))

    # -- key/value settings ----------------------------------------------------------------
    def get_value(self, key: str, conn: sqlite3.Connection | None = None) -> Any:
        row = (
            (conn or self.store._conn())
            .execute("SELECT value FROM settings_kv WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else json.loads(row["value"])

    def set_value(self, key: str, value: Any, conn: sqlite3.Connection | None = None) -> None:
        sql = (
            "INSERT INTO settings_kv (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at"
        )
        params = (key, _dumps(value), now_ms())
        if conn is not None:
            conn.execute(sql, params)
        else:
            with self.store.transaction() as tx:
                tx.execute(sql, params)

    # -- leases ----------------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew ``name`` for ``owner``; False while another owner holds it."""
        now = now_ms()
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT owner, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and row["owner"] != owner and row["expires_at"] > now:
                return False
            conn.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at",
                (name, owner, now + ttl_ms),
            )
            return True

    def release_lease(self, name: str, owner: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    def lease_holder(self, name: str) -> Row | None:
        row = (
            self.store._conn()
            .execute("SELECT owner, expires_at FROM leases WHERE name = ?", (name,))
            .fetchone()
        )
        if row is None or row["expires_at"] <= now_ms():
            return None
        return {"owner": row["owner"], "expiresAt": row["expires_at"]}
