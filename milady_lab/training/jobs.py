"""The job lifecycle: queue, start, follow, cancel and reconcile training jobs.

Every job trains in its own worker process (``python -m milady_lab.training.worker``)
in its own session, so the process group can be signalled as a whole and nothing
waits on the process that started it. All coordination goes through the state
store: the decision "start now or queue" and the claim of the next queued job are
each made inside one ``BEGIN IMMEDIATE`` transaction, so any number of processes
(Jupyter servers, kernels, CLIs, workers) can start jobs at once and exactly one runs.

Process supervision (start times, group kill, exit status, log tail) lives in
``processes``, the claim of the next queued job and the worker launch in ``launch``, the
conditional end of a job in ``StateStore.finish_job``. When a worker ends it starts the
next queued job itself; ``reconcile()`` (run whenever a service starts) and every read
of a running job repair what a killed worker left behind, and stop a live worker whose
heartbeat is older than ``HEARTBEAT_TIMEOUT_S`` (hung, or frozen by SIGSTOP):
``failed``, "worker stopped responding". A cancel leaves a marker in the job folder
before it signals, so whichever process first finds the worker gone records
``cancelled``, not a crash.

Records returned here are the REST bodies: internal fields (``pid``,
``pidStartTime``, ``outputPath``, ``heartbeatAt``) are left out, so process details
never leave the machine; ``progress`` (0–1) and, once completed, ``modelId`` are added.
``raw()`` gives the full row to workers and tests.

Events written to the store's log (followed by SSE, the CLI and widgets), each with
``jobId``: ``job_queued``, ``job_started``, ``job_progress`` (latest figures, at most
every 0.5 s), ``job_log``, and one of ``job_completed`` (with ``modelId``),
``job_failed`` (with ``error``) or ``job_cancelled``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import validation as v
from ..config import Settings
from ..errors import ConflictError, InputError, NotFoundError
from ..state import JobStatus, StateStore, new_id, now_ms
from . import launch
from .launch import remove_temp
from .options import JobOptions
from .processes import (
    CANCEL_GRACE_S,
    describe_exit,
    exit_status,
    group_alive,
    log_tail,
    process_start_time,
    stop_worker,
    worker_alive,
)

__all__ = [
    "CANCEL_GRACE_S",
    "JobManager",
    "exit_status",
    "group_alive",
    "new_id",
    "process_start_time",
    "stop_worker",
    "worker_alive",
]

#: A running job whose worker never recorded a pid is given up after this long.
LAUNCH_TIMEOUT_MS = 30_000
#: A live worker whose heartbeat (written every 2 s by its flusher thread, whatever the
#: training loop is doing) is older than this is hung: stopped and failed.
HEARTBEAT_TIMEOUT_S = 120.0
#: Before failing a stale worker, wait this long for a fresh heartbeat: after a laptop
#: sleeps, the wall clock jumps ahead and the worker needs a moment to beat again.
HEARTBEAT_CONFIRM_S = 5.0
#: Written into the job folder before a cancel signals the worker, so that whoever
#: finds the worker gone (the canceller, or a reconcile in another process) records
#: the job ``cancelled``, not failed.
CANCEL_MARKER = "cancel-requested"

_INTERNAL = ("pid", "pidStartTime", "outputPath", "heartbeatAt")
#: A job row as the state store gives it: the record's fields (``schema.Job``'s wire
#: names) and the internal ones, by key.
JobRow = Mapping[str, Any]
#: Folders ``worker._complete`` names after a new model id (``new_id("model")``).
_MODEL_DIR_RE = re.compile(r"model-\d{14}-[0-9a-f]{6}")


# -- the manager ----------------------------------------------------------------------------------
class JobManager:
    """Training jobs of one state home; safe to use from many threads and processes."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.store = store
        #: A live worker silent for longer than this is hung (tests make it short).
        self.heartbeat_timeout_s = heartbeat_timeout_s

    # -- reading ----------------------------------------------------------------------------
    def get(self, job_id: Any) -> dict[str, Any]:
        """The job's record; a running job whose worker is gone is marked failed first."""
        rec = self.store.get_job(job_id) if v.is_valid_id(job_id) else None
        if rec is None:
            raise NotFoundError(f"no job with id {_show(job_id)}")
        if rec["status"] == JobStatus.RUNNING:
            # Read again even when another thread ended it first (this check then does
            # nothing): the answer must not be the stale "running".
            self._check_worker(rec)
            rec = self.store.get_job(job_id) or rec
        elif rec["status"] == JobStatus.QUEUED:
            self._check_running()  # a dead worker ahead of it must not hold the queue
            rec = self.store.get_job(job_id) or rec
        return self._public(rec)

    def get_now(self, job_id: Any) -> dict[str, Any] | None:
        """``get`` when nothing needs checking or repairing (a final job, or a running one
        whose worker is alive with a fresh heartbeat and no cancel pending): one read,
        no write, no wait. None otherwise: call ``get`` (it may repair, so in a thread)."""
        rec = self.store.get_job(job_id) if v.is_valid_id(job_id) else None
        if rec is None:
            raise NotFoundError(f"no job with id {_show(job_id)}")
        status = rec["status"]
        if status == JobStatus.RUNNING and not self._settled(rec):
            return None
        if status == JobStatus.QUEUED:
            return None
        return self._public(rec)

    def _settled(self, rec: JobRow) -> bool:
        """A running job that ``_check_worker`` would leave alone, found without waiting."""
        beat = rec.get("heartbeatAt") or rec.get("startedAt") or rec["createdAt"]
        return (
            now_ms() - beat <= self.heartbeat_timeout_s * 1000
            and worker_alive(rec.get("pid"), rec.get("pidStartTime"))
            and not self._cancel_requested(rec["id"])
        )

    def list(self) -> list[dict[str, Any]]:
        """All jobs, newest first."""
        self._check_running()
        models = self._models_by_job()
        return [self._public(r, models) for r in self.store.list_jobs()]

    def active_job_id(self) -> str | None:
        """The running job, if any (after checking that its worker is alive)."""
        self._check_running()
        running = self.store.list_jobs((JobStatus.RUNNING,))
        return running[0]["id"] if running else None

    def raw(self, job_id: str) -> dict[str, Any] | None:
        """The full row, internal fields included (workers, tests)."""
        return self.store.get_job(job_id) if v.is_valid_id(job_id) else None

    # -- starting -------------------------------------------------------------------------
    def start(self, body: Any = None, *, dataset_id: str | None = None) -> dict[str, Any]:
        """Validate, then start the job now or queue it.

        ``body`` is a request body or checked ``JobOptions``. A job that needs a dataset
        built first (``opts.build_dataset``) takes the id of the one its caller built
        (``TrainingService.start_job`` does): this layer does not read trajectories.
        """
        opts = body if isinstance(body, JobOptions) else JobOptions.from_body(body, self.store)
        if dataset_id is None:
            if opts.build_dataset:
                raise InputError("no dataset to train on: build one first, or pass datasetId")
            dataset_id = opts.dataset_id
        if opts.iterations is None:  # given as epochs: derived from the dataset built for it
            opts = opts.for_dataset(self.store.get_dataset(dataset_id) if dataset_id else None)
        self._check_running()  # a dead worker must not make this job wait
        job_id = new_id("job")
        rec = {
            "id": job_id,
            "status": JobStatus.QUEUED,
            "datasetId": dataset_id,
            "backend": opts.backend,
            "model": opts.model,
            "createdAt": now_ms(),
            "totalIterations": opts.iterations,
            "currentIteration": 0,
            "trainedTokens": 0,
            "options": opts.to_record(dataset_id).to_dict(),
            "resumeFrom": opts.resume_from,
        }
        (self.settings.jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
        with self.store.transaction() as conn:
            self.store.insert_job(rec, conn)
            self.store.emit("job_queued", f"job {job_id} queued", conn, jobId=job_id)
            # Starts this job when nothing runs (or an older queued job, keeping order).
            launch.claim_next(self.settings, self.store, conn)
        return self.get(job_id)

    def start_next(self) -> str | None:
        """Start the oldest queued job if nothing runs; returns its id."""
        return launch.start_next(self.settings, self.store)

    # -- cancelling -------------------------------------------------------------------------
    def cancel(self, job_id: Any) -> dict[str, Any]:
        """Cancel a queued or running job; 409 for a job that already ended, cancelled
        included (as the REST reference documents: a second cancel changes nothing)."""
        if not v.is_valid_id(job_id) or self.store.get_job(job_id) is None:
            raise NotFoundError(f"no job with id {_show(job_id)}")
        with self.store.transaction() as conn:
            rec = self.store.get_job(job_id, conn)
            assert rec is not None
            status = rec["status"]
            if status == JobStatus.QUEUED:
                self.store.finish_job(job_id, JobStatus.CANCELLED, conn, was=JobStatus.QUEUED)
            elif status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
                raise ConflictError(f"job {job_id} already {status}; it cannot be cancelled")
        if status == JobStatus.RUNNING:
            pid, start_time = rec["pid"], rec["pidStartTime"]
            self._mark_cancel(job_id)
            if pid:
                stop_worker(pid, start_time)
            self.store.finish_job(job_id, JobStatus.CANCELLED, pid=pid)
            remove_temp(self.settings, job_id)
        self.start_next()
        return self.get(job_id)

    # -- repairing --------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Follow running jobs whose worker lives, fail the others, start what is queued.

        Called whenever a service starts (a new Jupyter server, kernel or CLI process).
        Also removes the temporary adapter folders of jobs that no longer run (left by
        a worker killed mid-save).
        """
        self._check_running()
        self._sweep_temp()

    def _sweep_temp(self) -> None:
        try:
            entries = list(self.settings.models_dir.glob(".tmp-job-*"))
        except OSError:
            return
        entries += self._orphan_adapters()
        for entry in entries:
            job_id = entry.name.removeprefix(".tmp-")
            rec = self.store.get_job(job_id) if v.is_valid_id(job_id) else None
            if rec is None or rec["status"] != JobStatus.RUNNING:
                shutil.rmtree(entry, ignore_errors=True)

    def _orphan_adapters(self) -> list[Path]:
        """Adapter folders without a model record (a worker killed after its rename,
        before its commit), renamed to ``.tmp-job-orphan-*`` for removal.

        The worker renames inside its registering transaction, so under this write lock
        a folder named like a model id and unknown to the store is a crash's leftover.
        """
        try:
            names = [e.name for e in self.settings.models_dir.glob("model-*")]
        except OSError:
            return []
        names = [n for n in names if _MODEL_DIR_RE.fullmatch(n)]
        if not names or {m["id"] for m in self.store.list_models()} >= set(names):
            return []  # the usual case: no write lock taken
        out = []
        with self.store.transaction() as conn:
            known = {r[0] for r in conn.execute("SELECT id FROM models")}
            for name in names:
                if name not in known:
                    entry = self.settings.models_dir / name
                    with contextlib.suppress(OSError):
                        out.append(entry.rename(entry.with_name(f".tmp-job-orphan-{name}")))
        return out

    def _check_running(self) -> None:
        """Fail running jobs whose worker is gone; start a queued job if nothing runs.

        Reads first, so the frequent calls (status polls) take no write lock when all is well.
        """
        running = self.store.list_jobs((JobStatus.RUNNING,))
        for rec in running:
            self._check_worker(rec)  # starts the next job itself when it fails one
        if not running and self.store.list_jobs((JobStatus.QUEUED,)):
            self.start_next()

    def _check_worker(self, rec: JobRow) -> bool:
        """End a running job whose worker is gone, never started or stopped responding
        (``failed``; ``cancelled`` when a cancel had been asked for); True when it did."""
        pid, start_time = rec.get("pid"), rec.get("pidStartTime")
        status = JobStatus.FAILED
        if pid is None:
            started = rec.get("heartbeatAt") or rec.get("startedAt") or rec["createdAt"]
            if now_ms() - started < LAUNCH_TIMEOUT_MS:
                return False
            reason: str | None = "the worker process never started"
        elif worker_alive(pid, start_time):
            return self._check_heartbeat(rec)
        elif self._cancel_requested(rec["id"]):
            # A cancel signalled it and has not recorded the outcome yet (or died first).
            status, reason = JobStatus.CANCELLED, None
        else:
            reason = f"worker process {pid} is gone ({describe_exit(pid)})"
            tail = log_tail(self.settings.jobs_dir / rec["id"] / "worker.log", lines=3)
            if tail:
                reason += "; last output: " + " | ".join(tail)
        if not self.store.finish_job(rec["id"], status, error=reason, pid=pid):
            return False  # it ended or was taken over meanwhile
        remove_temp(self.settings, rec["id"])
        self.start_next()
        return True

    def _check_heartbeat(self, rec: JobRow) -> bool:
        """Stop and fail a live worker whose heartbeat is stale; True when it did.

        The job is marked failed first, so the worker, woken by the SIGTERM, finds it
        no longer its own and records nothing (and registers no model).
        """
        beat = rec.get("heartbeatAt") or rec.get("startedAt") or rec["createdAt"]
        limit_ms = self.heartbeat_timeout_s * 1000
        if now_ms() - beat <= limit_ms or self._cancel_requested(rec["id"]):
            return False  # the usual case; a cancel in progress stops the worker itself
        deadline = time.monotonic() + min(HEARTBEAT_CONFIRM_S, self.heartbeat_timeout_s)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            current = self.store.get_job(rec["id"])
            if current is None or current["status"] != JobStatus.RUNNING:
                return False
            if current["pid"] != rec["pid"]:
                return False  # taken over meanwhile
            if current.get("heartbeatAt") != rec.get("heartbeatAt"):
                return False  # it beats again (the machine was asleep, or merely busy)
        pid, start_time = rec["pid"], rec.get("pidStartTime")
        silent = (now_ms() - beat) / 1000
        reason = f"worker stopped responding: no heartbeat for {silent:.0f} s"
        try:
            marked = self._fail_if_unchanged(rec, reason)
        except sqlite3.OperationalError:  # a worker frozen mid-write holds the lock
            marked = None
        stop_worker(pid, start_time)
        if marked is None:
            marked = self._fail_if_unchanged(rec, reason)
        if marked:
            remove_temp(self.settings, rec["id"])
            self.start_next()
        return marked

    def _fail_if_unchanged(self, rec: JobRow, reason: str) -> bool:
        """Fail the job if it still runs under the same worker with the same heartbeat."""
        return self.store.finish_job(
            rec["id"],
            JobStatus.FAILED,
            error=reason,
            pid=rec["pid"],
            heartbeat_at=rec.get("heartbeatAt"),
        )

    def _mark_cancel(self, job_id: str) -> None:
        job_dir = self.settings.jobs_dir / job_id
        with contextlib.suppress(OSError):
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / CANCEL_MARKER).touch()

    def _cancel_requested(self, job_id: str) -> bool:
        return (self.settings.jobs_dir / job_id / CANCEL_MARKER).exists()

    # -- records ----------------------------------------------------------------------------
    def _models_by_job(self) -> dict[str, str]:
        return {m["jobId"]: m["id"] for m in self.store.list_models()}

    def _public(self, rec: JobRow, models: dict[str, str] | None = None) -> dict[str, Any]:
        """The REST body of a job: no internal fields; ``progress`` and ``modelId`` added."""
        out = {k: val for k, val in rec.items() if k not in _INTERNAL}
        total = rec.get("totalIterations") or 0
        current = rec.get("currentIteration") or 0
        done = rec["status"] == JobStatus.COMPLETED
        out["progress"] = 1.0 if done else (min(1.0, current / total) if total else 0.0)
        if done:
            job_model = self.store.model_id_for_job if models is None else models.get
            out["modelId"] = job_model(rec["id"])
        return out


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return repr(text[:80] + ("…" if len(text) > 80 else ""))
