"""Starting queued jobs: the claim of the next queued job and the launch of its worker.

The decision "start now or queue" and the claim of the next queued job are each made
inside one ``BEGIN IMMEDIATE`` transaction, so any number of processes (Jupyter
servers, kernels, CLIs, workers) can start jobs at once and exactly one runs. Used by
``JobManager`` and by a finishing worker, which hands the queue on itself.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from ..config import ENV_AGENT_TOKEN, Settings
from ..state import JobStatus, StateStore, now_ms
from .processes import process_start_time, spawn_worker


def start_next(settings: Settings, store: StateStore) -> str | None:
    """Start the oldest queued job if nothing runs; returns its id."""
    with store.transaction() as conn:
        return claim_next(settings, store, conn)


def claim_next(settings: Settings, store: StateStore, conn: sqlite3.Connection) -> str | None:
    """Inside a write transaction: launch the oldest queued job when none runs."""
    if conn.execute("SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1").fetchone():
        return None
    row = conn.execute(
        "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    launch(settings, store, conn, row["id"])
    return row["id"]


def worker_env(settings: Settings) -> dict[str, str]:
    """The worker's environment: this one plus the settings, without the agent token."""
    env = {**os.environ, **settings.as_env()}
    env.pop(ENV_AGENT_TOKEN, None)  # the worker never reads the agent; keep the token out
    env["PYTHONUNBUFFERED"] = "1"
    # Idle OpenMP threads sleep instead of spinning: the worker shares the cores with
    # the notebook kernel and the server, and spinning threads starve them (and it).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def launch(settings: Settings, store: StateStore, conn: sqlite3.Connection, job_id: str) -> None:
    """Start the worker and record it, in the caller's transaction.

    The worker waits on that transaction before it reads its job, and checks that
    the row names its own pid: if the transaction rolls back, it exits untouched.
    """
    job_dir = settings.jobs_dir / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    ts = now_ms()
    try:
        proc = spawn_worker(job_id, job_dir, worker_env(settings))
    except OSError as exc:
        error = f"could not start the worker process: {exc}"
        store.finish_job(job_id, JobStatus.FAILED, conn, error=error, was=JobStatus.QUEUED)
        return
    store.update_job(
        job_id,
        conn,
        status=JobStatus.RUNNING,
        startedAt=ts,
        heartbeatAt=ts,
        pid=proc.pid,
        pidStartTime=process_start_time(proc.pid),
    )
    store.emit("job_started", f"job {job_id} started", conn, jobId=job_id)


def temp_adapter_dir(settings: Settings, job_id: str) -> Path:
    """Where a job's worker trains its adapter before the rename into ``models/``."""
    return settings.models_dir / f".tmp-{job_id}"


def remove_temp(settings: Settings, job_id: str) -> None:
    """Drop that folder (a job that ended without a model)."""
    shutil.rmtree(temp_adapter_dir(settings, job_id), ignore_errors=True)
