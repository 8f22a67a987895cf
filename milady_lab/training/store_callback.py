"""The callback a worker trains with: it writes the run's metrics and events into the
state store, where the REST API, the CLI and the widgets read them.

A fast loop reports hundreds of metrics a second; writing each in its own
transaction would contend with every other process on the database. Metrics are
therefore buffered and written by a background thread every ``flush_interval``
seconds (0.5 s: a metric is never later than that), together with the job's latest
figures, its heartbeat and one ``job_progress`` event. The same thread keeps the
heartbeat going while the backend is busy elsewhere (loading a model, evaluating).

Every write checks that the job is still ``running`` and owned by this worker; when it
is not (cancelled, or marked failed by a reconcile that found it unresponsive), the
callback asks the backend to stop, so an orphaned run never registers a model.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_bytes
from ..state import METRIC_KEYS, StateStore, now_ms
from .callbacks import MetricPoint, RunSummary, TrainingCallback


class JobProgress(RunSummary, total=False):
    """The job-record fields the callback keeps up to date (``schema.Job``'s names)."""

    totalIterations: int
    currentIteration: int
    loss: float
    valLoss: float
    tokensPerSecond: float
    trainedTokens: int
    peakMemory: int
    checkpointIteration: int


class StoreCallback(TrainingCallback):
    """Writes a job's progress into the state store (buffered, from a flusher thread)."""

    def __init__(
        self,
        store: StateStore,
        job_id: str,
        job_dir: Path,
        *,
        stop_event: threading.Event | None = None,
        owner_pid: int | None = None,
        flush_interval: float = 0.5,
        heartbeat_interval: float = 2.0,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.job_dir = Path(job_dir)
        self.stop_event = stop_event or threading.Event()
        self.owner_pid = owner_pid
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        #: Why this worker no longer owns the job, once it does not.
        self.lost: str | None = None
        self._lock = threading.Lock()
        #: Metric rows to write: column (``METRIC_KEYS``) → number.
        self._pending: list[dict[str, float]] = []
        self._latest: JobProgress = {}
        self._dirty = False
        self._last_write = 0.0
        self._closed = threading.Event()
        self._stage: str | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StoreCallback:
        """Start the flusher/heartbeat thread."""
        self._thread = threading.Thread(target=self._run, name=f"store-{self.job_id}", daemon=True)
        self._thread.start()
        return self

    def close(self, flush: bool = True) -> None:
        """Stop the thread and (unless ``flush`` is False) write whatever is still buffered."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if flush:
            self.flush()

    def _run(self) -> None:
        while not self._closed.wait(self.flush_interval):
            try:
                with self._lock:
                    due = self._dirty or (
                        time.monotonic() - self._last_write >= self.heartbeat_interval
                    )
                if due:
                    self.flush()
            except Exception as exc:  # a busy database must not end the run
                print(f"[milady-lab] could not write progress: {exc}", file=sys.stderr, flush=True)

    # -- hooks ---------------------------------------------------------------------------------
    def on_train_start(self, total_iterations: int, start_iteration: int = 0) -> None:
        with self._lock:
            self._latest.update(totalIterations=total_iterations, currentIteration=start_iteration)
            self._dirty = True
        self.on_stage("training")

    def on_metric(self, metric: MetricPoint) -> None:
        row: dict[str, float] = {
            k: val for k, val in metric.items() if k in METRIC_KEYS and val is not None
        }
        if "iteration" not in row:
            return
        with self._lock:
            self._pending.append(row)
            latest = self._latest
            latest["currentIteration"] = max(latest.get("currentIteration", 0), metric["iteration"])
            if metric.get("loss") is not None:
                latest["loss"] = metric["loss"]
            if metric.get("valLoss") is not None:
                latest["valLoss"] = metric["valLoss"]
            if metric.get("tokensPerSecond") is not None:
                latest["tokensPerSecond"] = metric["tokensPerSecond"]
            if metric.get("trainedTokens") is not None:
                latest["trainedTokens"] = metric["trainedTokens"]
            if metric.get("peakMemory") is not None:
                peak = int(metric["peakMemory"])
                latest["peakMemory"] = max(latest.get("peakMemory") or 0, peak)
            self._dirty = True

    def on_summary(self, fields: RunSummary) -> None:
        with self._lock:
            self._latest.update(fields)
            self._dirty = True

    def on_log(self, message: str) -> None:
        print(f"[milady-lab] {message}", flush=True)
        if self._owned():
            self.store.emit("job_log", message[:2000], jobId=self.job_id)

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        """Record where a later job can resume from (``checkpoint.json`` + the job row)."""
        self.flush()
        info = {"iteration": iteration, "path": str(Path(path).resolve())}
        write_bytes(self.job_dir / "checkpoint.json", json.dumps(info).encode())
        with self._lock:
            self._latest["checkpointIteration"] = iteration
            self._dirty = True
        with self.store.transaction() as conn:
            if self._check_owner(conn):
                self.store.update_job(self.job_id, conn, checkpointIteration=iteration)

    def on_stage(self, stage: str) -> None:
        """The stage on the job row at once, with a ``job_stage`` event: not buffered, as
        one stage (the last evaluation, saving) can outlast many flush intervals. The
        progress so far is written first, so the events keep their order."""
        if stage == self._stage:
            return
        self._stage = stage
        self.flush()
        with self.store.transaction() as conn:
            if self._check_owner(conn):
                self.store.update_job(self.job_id, conn, stage=stage)
                self.store.emit(
                    "job_stage", f"job {self.job_id} {stage}", conn, jobId=self.job_id, stage=stage
                )

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    # -- writing -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered metrics, the job's latest figures and a heartbeat."""
        with self._lock:
            rows, self._pending = self._pending, []
            latest = self._latest.copy()
            dirty, self._dirty = self._dirty, False
            self._last_write = time.monotonic()
        for row in rows:
            self.store.add_metric(self.job_id, **row)
        with self.store.transaction() as conn:
            if not self._check_owner(conn):
                return
            if dirty:
                self.store.update_job(self.job_id, conn, heartbeatAt=now_ms(), **latest)
            else:
                self.store.update_job(self.job_id, conn, heartbeatAt=now_ms())
            if dirty:
                self.store.emit(
                    "job_progress",
                    f"job {self.job_id} at iteration {latest.get('currentIteration', 0)}",
                    conn,
                    jobId=self.job_id,
                    **latest,
                )

    def _owned(self) -> bool:
        if self.lost is not None:
            return False
        rec = self.store.get_job(self.job_id)
        return rec is not None and self._owns(rec)

    def _check_owner(self, conn: sqlite3.Connection) -> bool:
        rec = self.store.get_job(self.job_id, conn)
        return rec is not None and self._owns(rec)

    def _owns(self, rec: Mapping[str, Any]) -> bool:
        ok = rec["status"] == "running" and (self.owner_pid is None or rec["pid"] == self.owner_pid)
        if not ok and self.lost is None:
            self.lost = f"job {self.job_id} is {rec['status']} and no longer this worker's"
            self.stop_event.set()
        return ok
