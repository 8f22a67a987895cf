"""Shared fixtures and helpers for the job tests (``test_jobs.py``, ``test_worker.py``,
``test_job_*.py``): a state home, a tiny Llama to train for real, small datasets, and
a teardown that leaves no worker process behind."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_bpe_tokenizer, save_tiny_llama_for

from milady_lab.config import Settings
from milady_lab.state import StateStore, now_ms
from milady_lab.training.jobs import JobManager, group_alive

#: The fixtures; test modules take them with ``from .jobkit import *``.
__all__ = ["job_model_dir", "manager", "settings", "store"]

_WORDS = [
    "hello",
    "there",
    "friend",
    "how",
    "are",
    "you",
    "today",
    "the",
    "weather",
    "is",
    "nice",
    "thanks",
    "for",
    "asking",
]


def examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        user = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8)))
        reply = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8)))
        out.append(
            {
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return out


def _build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer and a chat template."""
    tok = build_bpe_tokenizer(folder, (json.dumps(e) for e in examples(200, 1)), 300)
    return save_tiny_llama_for(folder, tok)


@pytest.fixture(scope="session")
def job_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The backend tests' ``tiny_llama_dir`` when it exists, else our own tiny Llama."""
    with contextlib.suppress(pytest.FixtureLookupError):
        return Path(request.getfixturevalue("tiny_llama_dir"))
    return _build_tiny_llama(tmp_path_factory.mktemp("job-tiny-llama"))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Workers inherit this: one thread each, so parallel workers don't fight for 2 cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    home = tmp_path / "home"
    home.mkdir()
    return Settings.from_env(
        home=home,
        trajectories=tmp_path / "no-trajectories.sqlite",
        agent_config=tmp_path / "agent.json",
        cache=tmp_path / "cache",
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[StateStore]:
    s = StateStore(settings.state_db)
    yield s
    s.close()


@pytest.fixture
def manager(settings: Settings, store: StateStore) -> Iterator[JobManager]:
    """A JobManager whose teardown cancels every live job and checks no worker is left."""
    mgr = JobManager(settings, store)
    yield mgr
    cleanup_jobs(mgr)


def cleanup_jobs(mgr: JobManager) -> None:
    for rec in mgr.store.list_jobs(("queued",)):
        with contextlib.suppress(Exception):
            mgr.cancel(rec["id"])
    for rec in mgr.store.list_jobs(("running",)):
        with contextlib.suppress(Exception):
            mgr.cancel(rec["id"])
    for rec in mgr.store.list_jobs():
        pid = rec.get("pid")
        if pid and group_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def add_dataset(
    settings: Settings, store: StateStore, *, n: int = 24, broken: bool = False, name: str = "ds"
) -> str:
    """A dataset folder + record as the dataset builder would leave it."""
    ds_id = f"{name}-{now_ms()}-{random.randrange(16**6):06x}"
    folder = settings.datasets_dir / ds_id
    folder.mkdir(parents=True)
    rows = examples(n, 7)
    if broken:
        (folder / "train.jsonl").write_text("this is not json\n")
    else:
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    store.insert_dataset(
        {
            "id": ds_id,
            "createdAt": now_ms(),
            "trajectoryCount": n,
            "exampleCount": n,
            "trainCount": n - 4,
            "validCount": 4,
            "path": str(folder),
            "options": {},
        }
    )
    return ds_id


def wait_for(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def wait_status(mgr: JobManager, job_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    rec = wait_for(
        lambda: (r := mgr.get(job_id))["status"] in statuses and r,
        timeout,
        f"job {job_id} to be {'/'.join(statuses)}",
    )
    return rec


def worker_log(settings: Settings, job_id: str) -> str:
    path = settings.jobs_dir / job_id / "worker.log"
    return path.read_text(errors="replace") if path.exists() else ""


#: The CLI in a child process as a terminal's shell starts it, Ctrl-C at Python's default
#: (a run started in the background by a non-interactive shell, ``make test &``, ignores
#: SIGINT, and a child inherits that: Python then leaves it ignored, and the handler polars
#: installs on import forwards Ctrl-C to Python, which drops it), dumping its threads'
#: stacks on SIGUSR1 (``stopped_on_ctrl_c``).
CLI_WITH_STACKS = (
    "import faulthandler, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "faulthandler.register(signal.SIGUSR1); from milady_lab.cli import main; sys.exit(main())"
)


def stopped_on_ctrl_c(proc: Any, timeout: float) -> int:
    """``proc``'s exit status once Ctrl-C stopped it; if it does not stop in ``timeout``
    seconds, an AssertionError saying what it was doing: its signal masks (SigIgn: a
    Ctrl-C ignored since it started; SigBlk: one held back), where its main thread
    sleeps in the kernel, and its Python stacks (sent to its stderr)."""
    import subprocess

    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    proc_dir = Path(f"/proc/{proc.pid}")
    with contextlib.suppress(OSError):
        status = [
            line
            for line in (proc_dir / "status").read_text().splitlines()
            if line.startswith(("State", "SigQ", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))
        ]
        wchan = (proc_dir / "wchan").read_text()
        here = Path("/proc/self/status").read_text().splitlines()
        ours = [line for line in here if line.startswith(("SigBlk", "SigIgn"))]
        proc.send_signal(signal.SIGUSR1)  # the stacks, on its stderr
        time.sleep(1.0)
        raise AssertionError(
            f"no exit {timeout:.0f} s after Ctrl-C: {'; '.join(status)}; wchan {wchan}; "
            f"the test process: {'; '.join(ours)}; SIGINT here: {signal.getsignal(signal.SIGINT)}"
        )
    raise AssertionError(f"no exit {timeout:.0f} s after Ctrl-C (its /proc is gone)")


def ranks_said(stderr: str, keep: int = 3000) -> str:
    """A failed torchrun's stderr for an assertion message: what the ranks wrote before
    the launcher's summary (a rank's own abort message: gloo's, C++'s), then the summary's
    root cause. The summary alone, its last 2000 characters, hid why a rank aborted."""
    at = stderr.find("failed (exitcode")
    if at < 0:
        return stderr[-keep:]
    before = stderr[: stderr.rfind("\n", 0, at) + 1]
    cause = stderr.find("Root Cause", at)
    return before[-keep:] + "…\n" + (stderr[cause : cause + 800] if cause >= 0 else stderr[-800:])
