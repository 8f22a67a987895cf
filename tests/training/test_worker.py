"""The worker side: the store callback's buffered writes and ownership checks, readable
errors, a worker that refuses a job it does not own, a cancel while the worker is still
starting, and reconcile of rows whose worker is gone or never started."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.state import StateStore, now_ms
from milady_lab.training import jobs
from milady_lab.training.jobs import (
    JobManager,
    exit_status,
    new_id,
    process_start_time,
    stop_worker,
    worker_alive,
)
from milady_lab.training.store_callback import StoreCallback
from milady_lab.training.worker import readable_error

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import add_dataset, wait_for, wait_status, worker_log


def _job(store: StateStore, status: str = "running", **fields: Any) -> str:
    job_id = new_id("job")
    store.insert_job(
        {
            "id": job_id,
            "status": status,
            "datasetId": None,
            "backend": "cpu",
            "model": "smollm2-135m-instruct",
            "createdAt": now_ms(),
            "totalIterations": 1000,
            "options": {},
            **fields,
        }
    )
    return job_id


def test_store_callback_buffers_and_writes_within_half_a_second(
    settings: Settings, store: StateStore
) -> None:
    job_id = _job(store, startedAt=now_ms())
    cb = StoreCallback(store, job_id, settings.jobs_dir / job_id, owner_pid=None).start()
    try:
        cb.on_train_start(1000, 0)
        t0 = time.monotonic()
        for i in range(1, 301):
            cb.on_metric(
                {
                    "iteration": i,
                    "loss": 1.0 / i,
                    "learningRate": 1e-3,
                    "tokensPerSecond": 100.0,
                    "trainedTokens": 10 * i,
                    "peakMemory": 1000 + i,
                    "ignored": "x",
                }
            )
        wait_for(lambda: len(store.metrics(job_id)) == 300, 2, "metrics to be written")
        assert time.monotonic() - t0 < 1.5
        rec = store.get_job(job_id)
        assert rec["currentIteration"] == 300 and rec["loss"] == pytest.approx(1 / 300)
        assert rec["trainedTokens"] == 3000 and rec["peakMemory"] == 1300
        assert rec["heartbeatAt"] >= rec["startedAt"]
        progress = [e for e in store.events() if e["kind"] == "job_progress"]
        assert 1 <= len(progress) <= 4  # one event per flush, not per metric
        cb.on_metric({"iteration": 301, "valLoss": 0.5})
        ckpt = settings.jobs_dir / job_id / "checkpoints" / "301"
        ckpt.mkdir(parents=True)
        cb.on_checkpoint(301, ckpt)
        assert store.get_job(job_id)["checkpointIteration"] == 301
        marker = json.loads((settings.jobs_dir / job_id / "checkpoint.json").read_text())
        assert marker == {"iteration": 301, "path": str(ckpt.resolve())}
        cb.on_log("hello")
        assert store.events()[-1]["message"] == "hello"
        # Someone else ended the job: the callback stops the run and writes nothing more.
        store.update_job(job_id, status="cancelled")
        cb.on_metric({"iteration": 302, "loss": 9.0})
        wait_for(cb.should_stop, 2, "the callback to ask for a stop")
        assert cb.lost and store.get_job(job_id)["currentIteration"] == 301
    finally:
        cb.close()
    assert store.get_job(job_id)["valLoss"] == 0.5


def test_readable_error() -> None:
    try:
        raise ValueError("bad shape (3, 4)")
    except ValueError as exc:
        text = readable_error(exc)
    assert text.startswith("ValueError: bad shape (3, 4) (at test_worker.py:")
    assert readable_error(InputError("dataset x no longer exists")) == "dataset x no longer exists"
    assert "out of memory" in readable_error(MemoryError())


def _worker(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env()}
    return subprocess.run(
        [sys.executable, "-m", "milady_lab.training.worker", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_worker_leaves_a_job_it_does_not_own(settings: Settings, store: StateStore) -> None:
    queued = _job(store, "queued")
    other = _job(store, "running", pid=os.getpid(), pidStartTime=process_start_time(os.getpid()))
    assert _worker(settings).returncode == 2
    for job_id in (queued, other):
        done = _worker(settings, job_id)
        assert done.returncode == 0, done.stderr
        assert "not mine to run" in done.stdout
    assert store.get_job(queued)["status"] == "queued"
    assert store.get_job(other)["status"] == "running"


def test_reconcile_fails_gone_and_never_started_workers(
    manager: JobManager, settings: Settings, store: StateStore
) -> None:
    # Our own pid with another start time: a recycled pid, not the worker.
    recycled = _job(store, pid=os.getpid(), pidStartTime=1.0, startedAt=now_ms())
    never = _job(store, pid=None, startedAt=now_ms() - 60_000, heartbeatAt=now_ms() - 60_000)
    assert not worker_alive(os.getpid(), 1.0) and worker_alive(os.getpid(), None)
    manager.reconcile()
    gone = manager.get(recycled)
    assert gone["status"] == "failed" and gone["completedAt"]
    assert f"worker process {os.getpid()} is gone" in gone["error"]
    assert manager.get(never)["status"] == "failed"
    assert "never started" in manager.get(never)["error"]
    kinds = [e["kind"] for e in store.events()]
    assert kinds.count("job_failed") == 2
    assert manager.active_job_id() is None


@pytest.mark.slow
def test_cancel_while_the_worker_starts(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    job = manager.start(
        {"datasetId": ds, "model": str(job_model_dir), "backend": "cpu", "iterations": 1_000_000}
    )
    pid = manager.raw(job["id"])["pid"]
    # The worker has taken the job and is importing torch, not yet training.
    wait_for(lambda: "resolving base model" in worker_log(settings, job["id"]), 30, "the claim")
    t0 = time.monotonic()
    assert manager.cancel(job["id"])["status"] == "cancelled"
    assert time.monotonic() - t0 < 5.5
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    rec = wait_status(manager, job["id"], ("cancelled",), 1)
    assert rec["error"] is None and store.list_models() == []
    # Interrupted mid-import, it still ended by itself (no SIGKILL) and said so.
    assert exit_status(pid) == 0, worker_log(settings, job["id"])
    assert "cancelled: stopped by itself on SIGTERM" in worker_log(settings, job["id"])


def test_queue_drains_with_nothing_waiting(settings: Settings, store: StateStore) -> None:
    """Jobs queued by a process that exits at once still run one after another: each
    worker starts the next on its way out. Only the store is read here (a JobManager
    read could start jobs itself). The jobs fail fast: their model is not in the cache."""
    ds = add_dataset(settings, store)
    script = (
        "import sys, json; from milady_lab.config import Settings; "
        "from milady_lab.state import StateStore; from milady_lab.training.jobs import JobManager; "
        "s = Settings.from_env(); m = JobManager(s, StateStore(s.state_db)); "
        "print(json.dumps([m.start(json.loads(a))['id'] for a in sys.argv[1:]]))"
    )
    req = json.dumps({"datasetId": ds, "model": "nobody-here/not-cached", "backend": "cpu"})
    env = {**os.environ, **settings.as_env()}
    out = subprocess.run(
        [sys.executable, "-c", script, req, req, req],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    ids = json.loads(out.stdout)
    wait_for(
        lambda: store.get_job(ids[-1])["status"] in ("completed", "failed", "cancelled"),
        90, "the last queued job to end",
    )  # fmt: skip
    jobs = [store.get_job(i) for i in ids]
    assert [j["status"] for j in jobs] == ["failed"] * 3, [j["error"] for j in jobs]
    assert all("nobody-here/not-cached" in j["error"] for j in jobs)
    for before, after in itertools.pairwise(jobs):
        assert before["completedAt"] <= after["startedAt"]
    assert len({j["pid"] for j in jobs}) == 3


def test_threads_share_nothing_but_the_store(settings: Settings, store: StateStore) -> None:
    """Claims from many threads of one process are serialised by the database too."""
    ids = [_job(store, "queued") for _ in range(5)]
    results: list[str | None] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        mgr = JobManager(settings, StateStore(settings.state_db))
        mgr._launch = lambda conn, job_id: mgr.store.update_job(  # type: ignore[method-assign]
            job_id, conn, status="running", pid=None, startedAt=now_ms(), heartbeatAt=now_ms()
        )
        barrier.wait()
        results.append(mgr.start_next())

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [r for r in results if r]
    assert claimed == [ids[0]]
    assert [store.get_job(i)["status"] for i in ids] == ["running"] + ["queued"] * 4


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_stop_worker_takes_the_whole_group_and_only_it() -> None:
    # A group leader with a grandchild that ignores SIGTERM: SIGKILL after the grace.
    code = (
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '30']); print('ready', flush=True); time.sleep(30)"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert leader.stdout is not None and leader.stdout.readline() == "ready\n"
    wait_for(lambda: process_start_time(leader.pid), 5, "the group leader")
    t0 = time.monotonic()
    assert stop_worker(leader.pid, process_start_time(leader.pid), grace=0.5)
    assert 0.5 <= time.monotonic() - t0 < 3  # it took the SIGKILL
    leader.wait(5)
    wait_for(lambda: _group_gone(leader.pid), 3, "init to reap the orphaned grandchild")
    # Not a group leader (shares our group): only that process is signalled.
    loner = subprocess.Popen(["sleep", "30"])
    assert stop_worker(loner.pid, process_start_time(loner.pid), grace=2)
    assert loner.wait(5) == -signal.SIGTERM
    # A recycled pid (other start time) is never signalled.
    assert stop_worker(os.getpid(), 1.0)


def test_model_names_are_readable_and_unique(store: StateStore) -> None:
    from milady_lab.training.worker import _model_name

    def name(model: str, dataset: str | None = "ds-20260101-000000-abcdef") -> str:
        with store.transaction() as conn:
            return _model_name(conn, {"model": model, "datasetId": dataset})

    assert name("smollm2-135m-instruct") == "smollm2-135m-instruct-ds-20260101-000000-abcdef-v1"
    assert name("HuggingFaceTB/SmolLM2-360M-Instruct", "d1") == "smollm2-360m-instruct-d1-v1"
    assert name("/models/My_Base.Q4.gguf", "d1") == "my-base.q4-d1-v1"
    assert name("/models/llama/", None) == "llama-data-v1"
    for n in (1, 2):
        store.insert_model({
            "id": f"model-{n}", "jobId": f"job-{n}", "name": f"llama-d1-v{n}", "createdAt": n,
            "adapterPath": "/x", "baseModel": "llama", "backend": "cpu",
        })  # fmt: skip
    assert name("/models/llama", "d1") == "llama-d1-v3"


def test_reconcile_sweeps_temp_folders_of_ended_jobs(
    manager: JobManager, settings: Settings, store: StateStore
) -> None:
    ended = _job(store, "failed")
    live = _job(store, "running", pid=os.getpid(), pidStartTime=process_start_time(os.getpid()))
    for job_id in (ended, live, "job-unknown"):
        (settings.models_dir / f".tmp-{job_id}").mkdir(parents=True)
    try:
        manager.reconcile()
        left = sorted(p.name for p in settings.models_dir.iterdir())
        assert left == [f".tmp-{live}"]
    finally:
        store.update_job(live, status="cancelled")  # not a worker: teardown must not stop it


def test_a_cancel_stays_a_cancel_when_another_process_looks_first(
    manager: JobManager, settings: Settings, store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the cancel's SIGTERM and its record, any other process reading the job
    (a server's poll, a CLI) finds the worker gone: it must record the cancel the user
    asked for, not a crash. (Seen when schemathesis cancelled a job the tests ran.)"""
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)  # dies on SIGTERM
    wait_for(lambda: process_start_time(sleeper.pid), 5, "the sleeper")
    job_id = _job(
        store, pid=sleeper.pid, pidStartTime=process_start_time(sleeper.pid), startedAt=now_ms()
    )
    other = JobManager(settings, StateStore(settings.state_db))
    seen: list[dict[str, Any]] = []
    real_stop = jobs.stop_worker

    def stop_then_someone_looks(pid: int, start_time: float | None) -> bool:
        stopped = real_stop(pid, start_time)
        sleeper.wait(5)
        seen.append(other.get(job_id))  # the worker is gone; the cancel is not recorded yet
        return stopped

    monkeypatch.setattr(jobs, "stop_worker", stop_then_someone_looks)
    done = manager.cancel(job_id)
    assert seen and seen[0]["status"] == "cancelled" and seen[0]["error"] is None
    assert done["status"] == "cancelled" and done["error"] is None
    kinds = [e["kind"] for e in store.events() if e.get("jobId") == job_id]
    assert kinds == ["job_cancelled"]


@pytest.mark.slow
def test_a_frozen_worker_is_stopped_and_failed(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    """A worker that is alive but no longer beats (here: SIGSTOP) is stopped, its job
    failed with a reason, and the queue moves on."""
    ds = add_dataset(settings, store)
    job = manager.start(
        {"datasetId": ds, "model": str(job_model_dir), "backend": "cpu",
         "iterations": 1_000_000, "batchSize": 1}
    )  # fmt: skip
    queued = manager.start({"datasetId": ds, "model": "nobody-here/not-cached", "iterations": 2})
    wait_for(lambda: manager.get(job["id"])["currentIteration"] > 0, 120, "training to start")
    pid = manager.raw(job["id"])["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        # With the default limit (minutes) a few silent seconds change nothing.
        time.sleep(1.0)
        assert manager.get(job["id"])["status"] == "running"
        watcher = JobManager(settings, store, heartbeat_timeout_s=3)
        failed = wait_status(watcher, job["id"], ("completed", "failed", "cancelled"), 60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert failed["status"] == "failed", failed
    assert failed["error"].startswith("worker stopped responding: no heartbeat for ")
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    # SIGTERM + SIGCONT: it woke, found the job no longer its own and left by itself.
    assert exit_status(pid) == 1
    assert [m for m in store.list_models() if m["jobId"] == job["id"]] == []
    assert not (settings.models_dir / f".tmp-{job['id']}").exists()
    after = wait_status(manager, queued["id"], ("completed", "failed", "cancelled"), 60)
    assert after["status"] == "failed" and "nobody-here/not-cached" in after["error"]
