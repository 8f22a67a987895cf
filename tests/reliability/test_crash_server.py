"""kill -9 a real ``jupyter server`` (with the extension) while a tiny model trains and a
dataset build is in flight, restart it, and check that nothing is lost or left running.

* The worker runs in its own session, so it survives the server; the restarted server
  follows it (same worker, live progress) and the job completes with its model.
* A worker that dies while no server runs is failed, with a reason, by the next server.

A worker killed while a server runs, seen failed within seconds by another process
(``milady-lab jobs show ID --json``), is ``tests/training/test_jobs.py::
test_restart_follows_live_worker_and_sigkill_fails_it``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_api.restkit import LiveServer, live_server
from training.jobkit import cleanup_jobs

from milady_lab.config import Settings
from milady_lab.state import StateStore
from milady_lab.training.jobs import JobManager, group_alive

from .relkit import dataset_violations, store_violations, wait_gone

pytestmark = pytest.mark.slow


def _api(server: LiveServer, method: str, path: str, body: Any = None, timeout: float = 60):
    r = httpx.request(
        method,
        f"{server.url}api/training/{path}",
        json=body,
        timeout=timeout,
        headers={"Authorization": f"token {server.token}"},
        trust_env=False,
    )
    return r.status_code, r.json()


def _wait(pred, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def _job(server: LiveServer, job_id: str) -> dict[str, Any]:
    code, body = _api(server, "GET", f"jobs/{job_id}")
    assert code == 200, body
    return body["job"]


def _build_quietly(server: LiveServer) -> None:
    """A build request whose server dies under it."""
    with contextlib.suppress(httpx.HTTPError):
        _api(server, "POST", "datasets/build", {}, timeout=30)


def _kill9(server: LiveServer) -> None:
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


@pytest.fixture
def lab(tmp_path: Path, demo_db: Path, quiet_env: None) -> dict[str, Path]:
    return {
        "home": tmp_path / "home",
        "trajectories": demo_db,
        "agent_config": tmp_path / "agent" / "milady.json",
        "cache": tmp_path / "cache",
    }


@pytest.fixture
def settings(lab: dict[str, Path]) -> Settings:
    return Settings.from_env(**{k: str(v) for k, v in lab.items()})


@pytest.fixture
def no_worker_left(settings: Settings):
    yield
    store = StateStore(settings.state_db)
    try:
        cleanup_jobs(JobManager(settings, store))
    finally:
        store.close()


def test_server_killed_mid_training_and_mid_build(
    tmp_path: Path, lab, settings: Settings, job_model_dir: Path, no_worker_left
) -> None:
    rng = random.Random(8)
    job_body = {"model": str(job_model_dir), "backend": "cpu", "batchSize": 1, "learningRate": 1e-3}

    # -- 1. server A: a job trains; a build is in flight; kill -9 the server --------------
    with live_server(tmp_path / "a", lab) as a:
        code, built = _api(a, "POST", "datasets/build", {"limit": 40})
        assert code == 201, built
        ds_id = built["dataset"]["id"]
        code, started = _api(a, "POST", "jobs", {**job_body, "datasetId": ds_id, "iterations": 25})
        assert code == 201, started
        job_id = started["job"]["id"]
        _wait(lambda: _job(a, job_id)["currentIteration"] >= 1, 120, "training to start")
        pid = StateStore(settings.state_db).get_job(job_id)["pid"]
        os.killpg(pid, signal.SIGSTOP)  # frozen across the restart: it cannot finish early
        try:
            inflight = threading.Thread(target=_build_quietly, args=(a,), daemon=True)
            inflight.start()
            time.sleep(rng.uniform(0.05, 0.4))
            _kill9(a)
            assert group_alive(pid), "the worker must not die with the server"

            # -- 2. server B on the same home follows the live worker --------------------------
            with live_server(tmp_path / "b", lab) as b:
                job = _job(b, job_id)
                assert job["status"] == "running", job
                assert StateStore(settings.state_db).get_job(job_id)["pid"] == pid
                before = job["currentIteration"]
                os.killpg(pid, signal.SIGCONT)
                done = _wait(
                    lambda: (j := _job(b, job_id))["status"] != "running" and j,
                    180,
                    "the followed job to end",
                )
                assert done["status"] == "completed", (done, b.log_tail())
                assert done["currentIteration"] == 25 > before
                code, models = _api(b, "GET", "models")
                assert [m["jobId"] for m in models["models"]] == [job_id]
                wait_gone(pid, 30)

                # -- 3. a worker that dies while no server runs is failed on restart --------
                code, started = _api(
                    b, "POST", "jobs", {**job_body, "datasetId": ds_id, "iterations": 100_000}
                )
                assert code == 201, started
                job2 = started["job"]["id"]
                _wait(lambda: _job(b, job2)["currentIteration"] >= 1, 120, "job 2 to train")
                pid2 = StateStore(settings.state_db).get_job(job2)["pid"]
                _kill9(b)
        finally:
            if group_alive(pid):
                os.killpg(pid, signal.SIGCONT)

    assert group_alive(pid2)
    os.killpg(pid2, signal.SIGKILL)
    wait_gone(pid2)
    with live_server(tmp_path / "c", lab) as c:
        t0 = time.monotonic()
        failed = _job(c, job2)
        assert failed["status"] == "failed", failed
        assert f"worker process {pid2} is gone" in failed["error"]
        assert "killed by SIGKILL" in failed["error"] or "signal 9" in failed["error"]
        assert time.monotonic() - t0 < 5

        code, status = _api(c, "GET", "status")
        assert status["activeJobId"] is None

        # -- invariants after two server kills and a worker kill --------------------------
        store = StateStore(settings.state_db)
        assert store_violations(settings) == []
        assert dataset_violations(settings, store) == []
        assert [
            j["status"] for j in store.list_jobs() if j["status"] in ("queued", "running")
        ] == []
        models = store.list_models()
        assert [m["jobId"] for m in models] == [job_id]  # only the completed job has a model
        assert sorted(p.name for p in settings.models_dir.iterdir()) == [models[0]["id"]]
        store.close()
