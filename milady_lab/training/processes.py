"""Worker process supervision: start times from /proc, liveness, group kill, exit
status and the log tail, for whichever process (server, kernel, CLI, worker) looks.

A worker is identified by its pid *and* its process start time, so a recycled pid is
never mistaken for a live worker. Workers lead their own session, so a cancel signals
the whole process group. Kept apart from the job lifecycle (``jobs``) so that the
worker itself can use it without importing the manager.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Seconds a cancelled worker gets to stop by itself before SIGKILL.
CANCEL_GRACE_S = 5.0

# Workers this process launched, and their exit statuses once reaped. Reaper threads
# wait on each, so a dead child never lingers as a zombie, and a reconcile here can
# name the signal that killed it.
_children: dict[int, subprocess.Popen[bytes]] = {}
_exit_codes: dict[int, int] = {}


def _stat_fields(raw: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after the command name (state first)."""
    return raw[raw.rfind(")") + 2 :].split()


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
        fields = _stat_fields(raw)
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
        fields = _stat_fields(raw)
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


def spawn_worker(job_id: str, job_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``python -m milady_lab.training.worker JOB_ID`` in its own session, its
    output appended to ``worker.log``; a reaper thread records its exit status."""
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
    _children[proc.pid] = proc
    threading.Thread(target=_reap, args=(proc,), daemon=True, name=f"reap-{proc.pid}").start()
    return proc


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


def describe_exit(pid: int) -> str:
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
