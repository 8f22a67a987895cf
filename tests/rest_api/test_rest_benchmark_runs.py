"""A benchmark as a tracked operation over REST: ``POST /models/{id}/benchmark`` with
``wait: false`` answers 202 at once with the run, ``GET /models/{id}/benchmark`` polls it
to its end, its events carry its ``runId``; a second start while it runs is a 409, a
worker's failure is a failed run with its message, and a run whose server stopped reads
as failed after a restart. Real worker processes on the tiny Llama of tests/models."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from models.conftest import insert_model as insert_tiny_model
from models.conftest import tiny_adapter, tiny_base, tiny_dataset

from milady_lab.api.schema import BenchmarkRun
from milady_lab.client import AsyncTrainingClient, TrainingAPIError
from milady_lab.config import Settings
from milady_lab.models.evaluation.runs import INTERRUPTED
from milady_lab.service import TrainingService
from milady_lab.state import EvalStore, StateStore, now_ms

from .restkit import insert_model

__all__ = ["tiny_adapter", "tiny_base", "tiny_dataset"]  # fixtures shared with tests/models


@pytest.fixture
def client(jp_serverapp: Any, http_server_port: tuple[Any, int], jp_base_url: str):
    """milady-lab's async client to the test server (same event loop)."""
    url = f"http://127.0.0.1:{http_server_port[1]}{jp_base_url}"
    return AsyncTrainingClient(url, jp_serverapp.identity_provider.token)


async def _until_ended(client: AsyncTrainingClient, model_id: str) -> BenchmarkRun:
    deadline = time.monotonic() + 120
    run = await client.benchmark_run(model_id)
    while run.status == "running":
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.2)
        run = await client.benchmark_run(model_id)
    return run


@pytest.mark.slow
async def test_a_started_run_is_polled_to_its_stored_benchmark(
    api, client, store: StateStore, tiny_adapter: Path, tiny_base: Path, tiny_dataset: Path
) -> None:
    model = insert_tiny_model(store, tiny_adapter, tiny_base, tiny_dataset)
    code, body = await api("GET", f"models/{model['id']}/benchmark")
    assert code == 404 and "no benchmark run" in body["message"], body
    cursor = store.last_event_seq()

    code, started = await api(
        "POST", f"models/{model['id']}/benchmark", body={"maxExamples": 3, "wait": False}
    )
    assert code == 202, started
    assert started["status"] == "running" and started["modelId"] == model["id"]
    assert (started["done"], started["total"]) == (0, 6)  # 3 examples, base and fine-tuned
    assert started["startedAt"] <= now_ms()
    assert "result" not in started and "endedAt" not in started
    run_id = started["runId"]
    # The worker is still loading torch: a second start is refused, naming the run.
    code, body = await api(
        "POST", f"models/{model['id']}/benchmark", body={"maxExamples": 3, "wait": False}
    )
    assert code == 409 and run_id in body["message"], body
    async with client:
        with pytest.raises(TrainingAPIError) as err:
            await client.start_benchmark(model["id"], max_examples=3)
        assert err.value.status == 409 and run_id in err.value.message

        run = await _until_ended(client, model["id"])
    assert type(run) is BenchmarkRun and run.run_id == run_id
    assert run.status == "completed" and run.error is None, run
    assert run.done == run.total == 6 and run.ended_at is not None
    code, stored = await api("GET", f"models/{model['id']}/benchmarks")
    assert code == 200 and len(stored["benchmarks"]) == 1
    code, polled = await api("GET", f"models/{model['id']}/benchmark")
    assert code == 200 and polled["result"] == stored["benchmarks"][0]
    assert polled["result"]["examples"] == 3

    events = [e for e in store.events(cursor) if e.get("modelId") == model["id"]]
    progress = [e for e in events if e["kind"] == "benchmark_progress"]
    assert progress and all(e["runId"] == run_id for e in progress)
    assert (progress[-1]["done"], progress[-1]["total"]) == (6, 6)
    assert [e["runId"] for e in events if e["kind"] == "model_benchmarked"] == [run_id]


@pytest.mark.slow
async def test_a_worker_failure_is_a_failed_run_with_its_message(
    api, store: StateStore, tiny_adapter: Path, tiny_base: Path, tiny_dataset: Path, tmp_path
) -> None:
    broken = tmp_path / "broken-adapter"
    shutil.copytree(tiny_adapter, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    model = insert_tiny_model(store, broken, tiny_base, tiny_dataset)
    cursor = store.last_event_seq()

    code, started = await api(
        "POST", f"models/{model['id']}/benchmark", body={"maxExamples": 2, "wait": False}
    )
    assert code == 202, started
    deadline = time.monotonic() + 120
    run = started
    while run["status"] == "running":
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.2)
        code, run = await api("GET", f"models/{model['id']}/benchmark")
        assert code == 200, run
    assert run["status"] == "failed" and "endedAt" in run and "result" not in run
    assert run["error"].startswith("the benchmark worker failed"), run
    failed = [e for e in store.events(cursor) if e["kind"] == "benchmark_failed"]
    assert [(e["runId"], e["error"]) for e in failed] == [(run["runId"], run["error"])]
    code, stored = await api("GET", f"models/{model['id']}/benchmarks")
    assert (code, stored["benchmarks"]) == (200, [])


async def test_bad_starts_are_refused_before_any_run(api, store: StateStore, lab) -> None:
    model = insert_model(store, lab["home"], adapter_files=False)
    code, body = await api("POST", "models/no-such/benchmark", body={"wait": False})
    assert code == 404, body
    code, body = await api("GET", "models/no-such/benchmark")
    assert code == 404, body
    code, body = await api("POST", f"models/{model['id']}/benchmark", body={"wait": "no"})
    assert code == 400 and "wait" in body["message"], body
    # No dataset on record: a 400 at once, and no run is left behind.
    code, body = await api("POST", f"models/{model['id']}/benchmark", body={"wait": False})
    assert code == 400 and "datasetId" in body["message"], body
    code, body = await api("GET", f"models/{model['id']}/benchmark")
    assert code == 404, body


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_run_left_running_reads_failed_after_a_restart(tmp_path: Path, demo_db: Path) -> None:
    settings = Settings.from_env(home=tmp_path / "home", trajectories=demo_db)
    first = TrainingService(settings)
    model = insert_model(first.store, settings.home)
    left = BenchmarkRun(
        run_id="bench-left", model_id=model["id"], status="running", done=4, total=12,
        started_at=now_ms(),
    )  # fmt: skip
    with first.store.transaction() as conn:  # as a server that was stopped mid-run left it
        EvalStore(first.store).add_benchmark_run(left, (_dead_pid(), None), conn)
    cursor = first.store.last_event_seq()
    first.store.close()

    again = TrainingService(settings)  # the restart
    run = again.benchmark_run(model["id"])
    assert (run.status, run.error, run.done, run.total) == ("failed", INTERRUPTED, 4, 12)
    assert run.ended_at is not None and run.ended_at >= run.started_at
    events = [e for e in again.store.events(cursor) if e["kind"] == "benchmark_failed"]
    assert [(e["runId"], e["error"]) for e in events] == [("bench-left", INTERRUPTED)]
    assert again.benchmark_run(model["id"]) == run  # saved so: read twice, failed once
    assert len([e for e in again.store.events(cursor) if e["kind"] == "benchmark_failed"]) == 1
    again.store.close()
