"""The reads a handler answers on the event loop (no thread hop) answer exactly what the
thread path does, and hand over to it whenever a repair or slow work is needed."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from milady_lab.training.processes import process_start_time

from .restkit import insert_job, insert_model


async def test_trajectory_pages_equal_the_service_answer(api, ext: Any, demo_count: int) -> None:
    service = ext.service
    for limit, offset in ((100, 0), (7, 3), (50, demo_count // 2), (10, demo_count - 4)):
        first = await api("GET", "trajectories", params={"limit": limit, "offset": offset})
        again = await api("GET", "trajectories", params={"limit": limit, "offset": offset})
        assert first == again == (200, service.list_trajectories(limit, offset).to_dict())
        assert service.list_trajectories_now(limit, offset) is not None  # warm: on the loop
    code, body = await api("GET", "trajectories", params={"limit": 0})
    assert code == 400 and "limit" in body["message"]


async def test_finished_job_answers_on_the_loop_with_its_model(api, ext: Any, store) -> None:
    model = insert_model(store, ext.service.settings.home)
    failed = insert_job(store, "job-quick-failed", "failed", loss=float("nan"), error="boom")
    service = ext.service
    code, body = await api("GET", f"jobs/{model['jobId']}")
    assert (code, body) == (200, service.get_job(model["jobId"]).to_dict())
    assert service.get_job_now(model["jobId"]).to_dict() == body
    assert body["job"]["modelId"] == model["id"] and body["job"]["progress"] == 1.0
    code, body = await api("GET", f"jobs/{failed['id']}")
    slow = service.get_job(failed["id"])["job"]
    assert code == 200 and body["job"] == {**slow, "loss": None}  # NaN is not JSON: null
    assert set(service.get_job_now(failed["id"])["job"]) == set(slow)
    code, body = await api("GET", "jobs/job-nope-000")
    assert code == 404 and "no job" in body["message"]


async def test_running_job_with_a_live_worker_reads_on_the_loop(api, ext, occupied) -> None:
    assert ext.service.get_job_now(occupied["id"]) is not None
    code, body = await api("GET", f"jobs/{occupied['id']}")
    assert code == 200 and body["job"]["status"] == "running"


async def test_running_job_whose_worker_died_is_repaired(api, ext: Any, store) -> None:
    """Not answered on the loop: the thread path finds the dead worker and fails the job."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    started = process_start_time(proc.pid)
    proc.wait(10)
    insert_job(store, "job-quick-dead", "running", pid=proc.pid, pidStartTime=started,
               startedAt=0, heartbeatAt=None)  # fmt: skip
    assert ext.service.get_job_now("job-quick-dead") is None
    code, body = await api("GET", "jobs/job-quick-dead")
    assert code == 200 and body["job"]["status"] == "failed"
    assert "is gone" in body["job"]["error"]
