"""JobManager with real worker processes training a tiny Llama on cpu: queue, cancel,
resume, a SIGKILLed worker, a restarted server and 20 simultaneous starts."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError
from milady_lab.state import StateStore
from milady_lab.training.jobs import JobManager, exit_status

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import add_dataset, wait_for, wait_status, worker_log

pytestmark = pytest.mark.slow

FINAL = ("completed", "failed", "cancelled")
LONG = 1_000_000  # iterations: such a job runs until it is cancelled or killed
CLI = "import sys; from milady_lab.cli import main; sys.exit(main())"


def body(model: Path, dataset_id: str, **kw: Any) -> dict[str, Any]:
    return {"datasetId": dataset_id, "model": str(model), "backend": "cpu", **kw}


def models_of(store: StateStore, job_id: str) -> list[dict[str, Any]]:
    return [m for m in store.list_models() if m["jobId"] == job_id]


def test_queue_cancel_and_resume(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    a = manager.start(body(job_model_dir, ds, iterations=LONG, batchSize=1, checkpointEvery=40))
    # Queued behind it: a job that fails fast once started (its hub model is not cached).
    b = manager.start(body(Path("nobody-here/not-cached"), ds, iterations=4))
    c = manager.start(body(job_model_dir, ds, iterations=4))
    assert (a["status"], b["status"], c["status"]) == ("running", "queued", "queued")
    assert manager.active_job_id() == a["id"]
    assert "pid" not in a and "pidStartTime" not in a  # internals stay out of REST bodies

    # A queued job is cancelled at once and never gets a process.
    assert manager.cancel(c["id"])["status"] == "cancelled"
    assert manager.raw(c["id"])["pid"] is None

    # Cancel the running job once it has a checkpoint: its process group is gone in ≤ 5 s.
    wait_for(
        lambda: (manager.raw(a["id"])["checkpointIteration"] or 0) >= 40,
        120,
        "a checkpoint of the long job",
    )
    pgid = manager.raw(a["id"])["pid"]
    t0 = time.monotonic()
    cancelled = manager.cancel(a["id"])
    assert time.monotonic() - t0 < 5.5
    assert cancelled["status"] == "cancelled" and cancelled["error"] is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    # It obeyed the SIGTERM within the grace (no SIGKILL): it stopped by itself and
    # kept the work done since the last periodic checkpoint.
    assert exit_status(pgid) == 0, worker_log(settings, a["id"])
    assert "cancelled: stopped by itself on SIGTERM" in worker_log(settings, a["id"])
    assert cancelled["checkpointIteration"] == cancelled["currentIteration"]
    assert models_of(store, a["id"]) == []
    assert not (settings.models_dir / f".tmp-{a['id']}").exists()
    with pytest.raises(ConflictError, match="already cancelled"):
        manager.cancel(a["id"])  # a second cancel is the documented 409

    # The queued job started by itself once the first ended (and failed on its own).
    after = wait_status(manager, b["id"], FINAL, 120)
    assert after["status"] == "failed" and "not in the local cache" in after["error"]
    assert after["startedAt"] >= cancelled["completedAt"]
    with pytest.raises(ConflictError):
        manager.cancel(b["id"])

    # Resume the cancelled job: same model and data, continuing at its checkpoint.
    ck = manager.raw(a["id"])["checkpointIteration"]
    d = manager.start({"resumeFrom": a["id"], "iterations": ck + 3})
    assert d["resumeFrom"] == a["id"] and d["model"] == a["model"] and d["datasetId"] == ds
    done = wait_status(manager, d["id"], FINAL, 120)
    assert done["status"] == "completed", done["error"] or worker_log(settings, d["id"])
    assert [m["iteration"] for m in store.metrics(d["id"])] == [ck + 1, ck + 2, ck + 3]
    assert done["progress"] == 1.0 and done["currentIteration"] == ck + 3
    assert done["trainedTokens"] > 0 and done["tokensPerSecond"] > 0 and done["loss"] > 0

    # A completed job registered exactly one model, and cannot be cancelled.
    (model,) = store.list_models()
    assert done["modelId"] == model["id"] and model["jobId"] == d["id"]
    assert model["name"].endswith("-v1") and model["active"] is False
    assert model["backend"] == "cpu" and model["finalLoss"] == pytest.approx(done["loss"])
    assert model["baseModel"] == str(job_model_dir.resolve())
    assert (Path(model["adapterPath"]) / "adapter_config.json").is_file()
    with pytest.raises(ConflictError):
        manager.cancel(d["id"])


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "--home",
            str(settings.home),
            "--trajectories",
            settings.trajectories,
            "--cache",
            str(settings.cache),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_restart_follows_live_worker_and_sigkill_fails_it(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    a = manager.start(body(job_model_dir, ds, iterations=LONG, batchSize=1, checkpointEvery=0))
    # Queued behind it: a job whose worker will fail (a hub model not in the local cache).
    q = manager.start(body(Path("nobody-here/no-such-model"), ds, iterations=2))
    assert q["status"] == "queued"
    wait_for(lambda: manager.get(a["id"])["currentIteration"] > 0, 120, "training to start")
    pid = manager.raw(a["id"])["pid"]

    # A new server over the same home follows the live worker and changes nothing.
    restarted = JobManager(settings, StateStore(settings.state_db))
    restarted.reconcile()
    assert restarted.get(a["id"])["status"] == "running"
    assert restarted.raw(a["id"])["pid"] == pid
    assert restarted.get(q["id"])["status"] == "queued"

    # kill -9 the worker: another process that looks sees it failed, with a reason.
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    shown = _cli(settings, "jobs", "show", a["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)["job"]
    assert time.monotonic() - t0 < 10
    assert job["status"] == "failed"
    assert f"worker process {pid} is gone" in job["error"]
    assert models_of(store, a["id"]) == []
    # ... and the queued job was started by that process (and fails for its own reason).
    failed = wait_status(manager, q["id"], FINAL, 60)
    assert failed["status"] == "failed"
    assert "nobody-here/no-such-model" in failed["error"]


def test_failures_are_readable(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    broken = add_dataset(settings, store, broken=True)
    j = manager.start(body(job_model_dir, broken, iterations=3))
    rec = wait_status(manager, j["id"], FINAL, 120)
    assert rec["status"] == "failed"
    assert "train.jsonl line 1 is not valid JSON" in rec["error"], rec["error"]
    assert rec["completedAt"] and models_of(store, j["id"]) == []
    assert not (settings.models_dir / f".tmp-{j['id']}").exists()


def _start_one(settings: Settings, request: dict[str, Any], barrier: Any, out: Any) -> None:
    store = StateStore(settings.state_db)
    barrier.wait(timeout=60)
    try:
        out.put(JobManager(settings, store).start(request)["status"])
    except Exception as exc:
        out.put(f"error: {exc!r}")


def test_twenty_simultaneous_starts_one_runs(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    request = body(job_model_dir, ds, iterations=LONG, batchSize=1)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(20), ctx.Queue()
    procs = [
        ctx.Process(target=_start_one, args=(settings, request, barrier, out)) for _ in range(20)
    ]
    for p in procs:
        p.start()
    statuses = Counter(out.get(timeout=90) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert statuses == {"running": 1, "queued": 19}
    jobs = store.list_jobs()
    assert len(jobs) == 20
    assert sum(1 for j in jobs if j["pid"] is not None) == 1  # one worker launched, no duplicate
    assert len(list(settings.jobs_dir.glob("*/worker.log"))) == 1
    assert manager.active_job_id() == next(j["id"] for j in jobs if j["status"] == "running")
