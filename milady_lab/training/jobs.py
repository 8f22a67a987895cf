"""The job lifecycle: queue, start, follow, cancel and reconcile training jobs.

Every job trains in its own worker process (``python -m milady_lab.training.worker``)
in its own session, so the process group can be signalled as a whole and nothing
waits on the process that started it. All coordination goes through the state
store: the decision "start now or queue" and the claim of the next queued job are
each made inside one ``BEGIN IMMEDIATE`` transaction, so any number of processes
(Jupyter servers, kernels, CLIs, workers) can start jobs at once and exactly one runs.

A worker is identified by its pid *and* its process start time, so a recycled pid is
never mistaken for a live worker. When a worker ends it starts the next queued job
itself; ``reconcile()`` (run whenever a service starts) and every read of a running
job repair what a killed worker left behind, and stop a live worker whose heartbeat
is older than ``HEARTBEAT_TIMEOUT_S`` (hung, or frozen by SIGSTOP): ``failed``, "worker
stopped responding". A cancel leaves a marker in the job folder before it signals,
so whichever process first finds the worker gone records ``cancelled``, not a crash.

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
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import validation as v
from ..config import ENV_AGENT_TOKEN, Settings
from ..errors import ConflictError, InputError, MiladyLabError, NotFoundError
from ..state import FINAL_STATUSES, StateStore, now_ms
from .options import JobOptions

#: Seconds a cancelled worker gets to stop by itself before SIGKILL.
CANCEL_GRACE_S = 5.0
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
#: Folders ``worker._complete`` names after a new model id (``new_id("model")``).
_MODEL_DIR_RE = re.compile(r"model-\d{14}-[0-9a-f]{6}")

# Workers this process launched, and their exit statuses once reaped. Reaper threads
# wait on each, so a dead child never lingers as a zombie, and a reconcile here can
# name the signal that killed it.
_children: dict[int, subprocess.Popen[bytes]] = {}
_exit_codes: dict[int, int] = {}


def new_id(prefix: str) -> str:
    """``<prefix>-YYYYMMDDHHMMSS-<6 hex>``: sortable by time, unique across processes."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


# -- processes ----------------------------------------------------------------------------------
def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (clock ticks since boot from /proc, else psutil); None if gone.

    A zombie counts as gone: it has finished, only its exit status is left.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except FileNotFoundError:
        return None
    except OSError:
        raw = ""
    if raw:
        fields = raw[raw.rfind(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            return None
        return float(fields[19])
    try:  # no /proc (macOS)
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except Exception:
        return None


def worker_alive(pid: int | None, start_time: float | None) -> bool:
    """Whether the worker recorded as (pid, start time) still runs."""
    if not pid:
        return False
    current = process_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_bytes().decode("ascii", "replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not group_alive(pgid):
            child = _children.get(pgid)
            if child is not None:  # our own child: make sure it is reaped, not a zombie
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate_group(pgid: int, grace: float = CANCEL_GRACE_S) -> bool:
    """SIGTERM the group, wait ``grace`` seconds, SIGKILL; True once no member runs.

    SIGCONT follows the SIGTERM: a stopped worker (``kill -STOP``) then obeys it too.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)
    if _wait_group_gone(pgid, grace):
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return _wait_group_gone(pgid, 5.0)


def stop_worker(pid: int, start_time: float | None, grace: float = CANCEL_GRACE_S) -> bool:
    """Stop a worker and everything it started; True once nothing of it runs.

    A worker leads its own process group, so the group is signalled. A process that
    does not lead its group (not one we launched) gets the signals alone: signalling
    its group could hit unrelated processes, such as the shell that started it.
    """
    if not worker_alive(pid, start_time):
        return True
    if pid in (os.getpid(), os.getppid()):  # a corrupt row must never make us kill ourselves
        return False
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return True
    if leads_group:
        return terminate_group(pid, grace)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            if sig == signal.SIGTERM:
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while worker_alive(pid, start_time):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        else:
            return True
    return False


def _reap(proc: subprocess.Popen[bytes]) -> None:
    _exit_codes[proc.pid] = proc.wait()
    _children.pop(proc.pid, None)


def exit_status(pid: int, timeout: float = 5.0) -> int | None:
    """How a worker this process launched ended: its exit status, or minus the signal
    that killed it (``-9``: SIGKILL). None while it runs, or for another's worker."""
    child = _children.get(pid)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=timeout)
        return child.returncode
    return _exit_codes.get(pid)


def _describe_exit(pid: int) -> str:
    """Why a worker is gone, as precisely as this process can tell."""
    child = _children.get(pid)
    if child is not None:  # ours: its exit status is (about to be) known
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
    code = _exit_codes.get(pid, child.returncode if child is not None else None)
    if code is None:
        return "it was killed (signal 9 / out of memory?) or crashed without reporting"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " — out of memory, or kill -9?" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code} without reporting"


def log_tail(path: Path, lines: int = 6, max_bytes: int = 16_384) -> list[str]:
    """The last meaningful lines of a worker log (no blank lines, no progress bars)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = []
    for line in text.replace("\r", "\n").splitlines():
        line = line.strip()
        if not line or line.startswith(("Traceback", "File ", "^")) or "it/s]" in line:
            continue
        out.append(line[:300])
    return out[-lines:]


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
        if rec["status"] == "running" and self._check_worker(rec):
            rec = self.store.get_job(job_id) or rec
        elif rec["status"] == "queued":
            self._check_running()  # a dead worker ahead of it must not hold the queue
            rec = self.store.get_job(job_id) or rec
        return self._public(rec)

    def list(self) -> list[dict[str, Any]]:
        """All jobs, newest first."""
        self._check_running()
        models = self._models_by_job()
        return [self._public(r, models) for r in self.store.list_jobs()]

    def active_job_id(self) -> str | None:
        """The running job, if any (after checking that its worker is alive)."""
        self._check_running()
        running = self.store.list_jobs(("running",))
        return running[0]["id"] if running else None

    def raw(self, job_id: str) -> dict[str, Any] | None:
        """The full row, internal fields included (workers, tests)."""
        return self.store.get_job(job_id) if v.is_valid_id(job_id) else None

    # -- starting -------------------------------------------------------------------------
    def start(self, body: Any = None, service: Any = None) -> dict[str, Any]:
        """Validate, build a dataset if needed, then start the job now or queue it."""
        opts = JobOptions.from_body(body, self.store)
        self._check_running()  # a dead worker must not make this job wait
        dataset_id = opts.dataset_id
        if opts.build_dataset:
            dataset_id = self._build_dataset(opts, service)
        job_id = new_id("job")
        options = opts.to_record()
        options["datasetId"] = dataset_id
        rec = {
            "id": job_id,
            "status": "queued",
            "datasetId": dataset_id,
            "backend": opts.backend,
            "model": opts.model,
            "createdAt": now_ms(),
            "totalIterations": opts.iterations,
            "currentIteration": 0,
            "trainedTokens": 0,
            "options": options,
            "resumeFrom": opts.resume_from,
        }
        (self.settings.jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
        with self.store.transaction() as conn:
            self.store.insert_job(rec, conn)
            self.store.emit("job_queued", f"job {job_id} queued", conn, jobId=job_id)
            # Starts this job when nothing runs (or an older queued job, keeping order).
            self._claim_next(conn)
        return self.get(job_id)

    def _build_dataset(self, opts: JobOptions, service: Any) -> str:
        """Build the dataset a job without ``datasetId`` trains on, in this process, so
        that "nothing to train on" is an input error before any worker starts."""
        from ..datasets import BuildOptions, build_dataset

        body = {"limit": opts.max_trajectories} if opts.max_trajectories else {}
        try:
            if service is not None:
                source = service.source
            else:
                from ..trajectories import open_source

                source = open_source(self.settings.trajectories, self.settings)
            rec = build_dataset(source, self.settings, self.store, BuildOptions.from_body(body))
        except MiladyLabError as exc:
            # The source is not named: a database URL may carry a password.
            raise InputError(
                f"could not build a dataset to train on from the trajectories: {exc.message}"
            ) from exc
        return rec["id"]

    def start_next(self) -> str | None:
        """Start the oldest queued job if nothing runs; returns its id."""
        with self.store.transaction() as conn:
            return self._claim_next(conn)

    def _claim_next(self, conn: sqlite3.Connection) -> str | None:
        """Inside a write transaction: launch the oldest queued job when none runs."""
        if conn.execute("SELECT 1 FROM jobs WHERE status = 'running' LIMIT 1").fetchone():
            return None
        row = conn.execute(
            "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        self._launch(conn, row["id"])
        return row["id"]

    def _launch(self, conn: sqlite3.Connection, job_id: str) -> None:
        """Start the worker and record it, in the caller's transaction.

        The worker waits on that transaction before it reads its job, and checks that
        the row names its own pid: if the transaction rolls back, it exits untouched.
        """
        job_dir = self.settings.jobs_dir / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.as_env()}
        env.pop(ENV_AGENT_TOKEN, None)  # the worker never reads the agent; keep the token out
        env["PYTHONUNBUFFERED"] = "1"
        # Idle OpenMP threads sleep instead of spinning: the worker shares the cores with
        # the notebook kernel and the server, and spinning threads starve them (and it).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        ts = now_ms()
        try:
            with open(job_dir / "worker.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "milady_lab.training.worker", job_id],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=job_dir,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            error = f"could not start the worker process: {exc}"
            self.store.update_job(job_id, conn, status="failed", error=error, completedAt=ts)
            self.store.emit("job_failed", f"job {job_id} failed: {error}", conn, jobId=job_id)
            return
        _children[proc.pid] = proc
        threading.Thread(target=_reap, args=(proc,), daemon=True, name=f"reap-{proc.pid}").start()
        self.store.update_job(
            job_id,
            conn,
            status="running",
            startedAt=ts,
            heartbeatAt=ts,
            pid=proc.pid,
            pidStartTime=process_start_time(proc.pid),
        )
        self.store.emit("job_started", f"job {job_id} started", conn, jobId=job_id)

    # -- cancelling -------------------------------------------------------------------------
    def cancel(self, job_id: Any) -> dict[str, Any]:
        """Cancel a queued or running job; idempotent; 409 for a job that already ended."""
        if not v.is_valid_id(job_id) or self.store.get_job(job_id) is None:
            raise NotFoundError(f"no job with id {_show(job_id)}")
        with self.store.transaction() as conn:
            rec = self.store.get_job(job_id, conn)
            assert rec is not None
            status = rec["status"]
            if status == "queued":
                self._finish(conn, job_id, "cancelled", None)
            elif status in ("completed", "failed"):
                raise ConflictError(f"job {job_id} already {status}; it cannot be cancelled")
        if status == "cancelled":
            return self._public(rec)
        if status == "running":
            pid, start_time = rec["pid"], rec["pidStartTime"]
            self._mark_cancel(job_id)
            if pid:
                stop_worker(pid, start_time)
            with self.store.transaction() as conn:
                current = self.store.get_job(job_id, conn)
                if current is not None and current["status"] == "running" and current["pid"] == pid:
                    self._finish(conn, job_id, "cancelled", None)
            self._remove_temp(job_id)
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
            if rec is None or rec["status"] != "running":
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
        running = self.store.list_jobs(("running",))
        for rec in running:
            self._check_worker(rec)  # starts the next job itself when it fails one
        if not running and self.store.list_jobs(("queued",)):
            self.start_next()

    def _check_worker(self, rec: dict[str, Any]) -> bool:
        """End a running job whose worker is gone, never started or stopped responding
        (``failed``; ``cancelled`` when a cancel had been asked for); True when it did."""
        pid, start_time = rec.get("pid"), rec.get("pidStartTime")
        status = "failed"
        if pid is None:
            started = rec.get("heartbeatAt") or rec.get("startedAt") or rec["createdAt"]
            if now_ms() - started < LAUNCH_TIMEOUT_MS:
                return False
            reason: str | None = "the worker process never started"
        elif worker_alive(pid, start_time):
            return self._check_heartbeat(rec)
        elif self._cancel_requested(rec["id"]):
            # A cancel signalled it and has not recorded the outcome yet (or died first).
            status, reason = "cancelled", None
        else:
            reason = f"worker process {pid} is gone ({_describe_exit(pid)})"
            tail = log_tail(self.settings.jobs_dir / rec["id"] / "worker.log", lines=3)
            if tail:
                reason += "; last output: " + " | ".join(tail)
        with self.store.transaction() as conn:
            current = self.store.get_job(rec["id"], conn)
            if current is None or current["status"] != "running" or current["pid"] != pid:
                return False  # it ended or was taken over meanwhile
            self._finish(conn, rec["id"], status, reason)
        self._remove_temp(rec["id"])
        self.start_next()
        return True

    def _check_heartbeat(self, rec: dict[str, Any]) -> bool:
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
            if current is None or current["status"] != "running" or current["pid"] != rec["pid"]:
                return False
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
            self._remove_temp(rec["id"])
            self.start_next()
        return marked

    def _fail_if_unchanged(self, rec: dict[str, Any], reason: str) -> bool:
        """Fail the job if it still runs under the same worker with the same heartbeat."""
        with self.store.transaction() as conn:
            current = self.store.get_job(rec["id"], conn)
            if (
                current is None
                or current["status"] != "running"
                or current["pid"] != rec["pid"]
                or current.get("heartbeatAt") != rec.get("heartbeatAt")
            ):
                return False
            self._finish(conn, rec["id"], "failed", reason)
        return True

    def _mark_cancel(self, job_id: str) -> None:
        job_dir = self.settings.jobs_dir / job_id
        with contextlib.suppress(OSError):
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / CANCEL_MARKER).touch()

    def _cancel_requested(self, job_id: str) -> bool:
        return (self.settings.jobs_dir / job_id / CANCEL_MARKER).exists()

    def _finish(
        self, conn: sqlite3.Connection, job_id: str, status: str, error: str | None
    ) -> None:
        assert status in FINAL_STATUSES
        self.store.update_job(job_id, conn, status=status, error=error, completedAt=now_ms())
        message = f"job {job_id} {status}" + (f": {error}" if error else "")
        self.store.emit(f"job_{status}", message, conn, jobId=job_id, error=error)

    def _remove_temp(self, job_id: str) -> None:
        shutil.rmtree(self.settings.models_dir / f".tmp-{job_id}", ignore_errors=True)

    # -- records ----------------------------------------------------------------------------
    def _models_by_job(self) -> dict[str, str]:
        return {m["jobId"]: m["id"] for m in self.store.list_models()}

    def _public(self, rec: dict[str, Any], models: dict[str, str] | None = None) -> dict[str, Any]:
        """The REST body of a job: no internal fields; ``progress`` and ``modelId`` added."""
        out = {k: val for k, val in rec.items() if k not in _INTERNAL}
        total = rec.get("totalIterations") or 0
        current = rec.get("currentIteration") or 0
        out["progress"] = (
            1.0 if rec["status"] == "completed" else (min(1.0, current / total) if total else 0.0)
        )
        if rec["status"] == "completed":
            if models is None:
                models = self._models_by_job()
            out["modelId"] = models.get(rec["id"])
        return out


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return repr(text[:80] + ("…" if len(text) > 80 else ""))
