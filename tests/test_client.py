"""``milady_lab.client`` against a real Jupyter server running the extension.

Every route through the sync and the async client, errors carrying the server's
message, both auth schemes, the event iterator, ``discover()`` through the server's
runtime file, and ``trust_env=False`` keeping a proxy variable out of loopback calls.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rest_api.restkit import LiveServer, insert_model, live_server, make_occupied

from milady_lab.api import schema
from milady_lab.api.routes import BY_ID
from milady_lab.client import (
    AsyncTrainingClient,
    BuildFilters,
    StreamEvent,
    TrainingAnswerError,
    TrainingAPIError,
    TrainingClient,
    TrainingConnectionError,
    TrainingRequestError,
    discover,
)
from milady_lab.config import Settings
from milady_lab.state import StateStore


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, demo_db: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("client-lab")
    return {
        "home": base / "home",
        "trajectories": demo_db,
        "agent_config": base / "agent" / "milady.json",
        "cache": base / "cache",
    }


@pytest.fixture(scope="module")
def store(lab: dict[str, Path]) -> Iterator[StateStore]:
    s = StateStore(Settings.from_env(home=lab["home"]).state_db)
    yield s
    s.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, lab: dict[str, Path], store: StateStore
) -> Iterator[LiveServer]:
    """One server for the module; a fake running job keeps every new job queued."""
    with (
        make_occupied(store) as occupied,
        live_server(tmp_path_factory.mktemp("client-server"), lab) as srv,
    ):
        srv.occupied = occupied  # type: ignore[attr-defined]
        yield srv
        with store.transaction() as conn:  # nothing may start once the sleeper is gone
            conn.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'queued'")


@pytest.fixture
def client(server: LiveServer) -> Iterator[TrainingClient]:
    with TrainingClient(server.url, server.token) as c:
        yield c


def test_every_route_sync(client: TrainingClient, server: LiveServer, store, lab) -> None:
    status = client.status()
    assert status["available"] is True and status["activeJobId"] == server.occupied["id"]
    # milady-lab's answers fit the contract: the records themselves, attributes typed
    assert type(status) is schema.Status and status.active_job_id == server.occupied["id"]

    page = client.list_trajectories(limit=3, offset=1)
    assert (page["limit"], page["offset"], len(page["trajectories"])) == (3, 1, 3)
    assert sum(1 for _ in client.iter_trajectories(page_size=97)) == page["total"]
    detail = client.get_trajectory(page["trajectories"][0]["id"])
    assert detail["id"] == page["trajectories"][0]["id"] and "llmCalls" in detail
    assert type(detail) is schema.Trajectory
    assert all(type(call) is schema.LlmCall for call in detail.llm_calls)

    filters = {"source": ("chat", "discord"), "start_date": datetime.date(2000, 1, 1)}
    counts = client.preview_dataset(limit=30, **filters)
    dataset = client.build_dataset(limit=30, min_llm_calls_per_trajectory=1, **filters)
    assert dataset["trajectoryCount"] <= 30 and isinstance(dataset["createdAt"], int)
    assert dict(counts) == {
        k: dataset.get(k) for k in ("trajectoryCount", "exampleCount", "redactions")
    }
    assert dataset["options"]["source"] == ["chat", "discord"]
    assert dataset["options"]["startDate"] == "2000-01-01"
    assert dataset["id"] in [d["id"] for d in client.list_datasets()]

    job = client.start_job(dataset["id"], backend="cpu", iterations=2, batch_size=1)
    assert job["status"] == "queued" and job["datasetId"] == dataset["id"]
    assert type(job) is schema.Job and job.dataset_id == dataset.id and job.status == "queued"
    assert type(dataset) is schema.Dataset and dataset.options is not None
    assert all(type(j) is schema.Job for j in client.list_jobs())
    assert job["id"] in [j["id"] for j in client.list_jobs()]
    assert client.get_job(job["id"])["totalIterations"] == 2
    assert client.job_metrics(job["id"]) == []
    assert client.cancel_job(job["id"])["status"] == "cancelled"

    model = insert_model(store, lab["home"], "model-client-1")
    assert [m["id"] for m in client.list_models()] == [model["id"]]
    with pytest.raises(TrainingAPIError) as err:  # no agent config there yet
        client.activate_model(model["id"], provider_model="local/client-test", force=True)
    assert err.value.status == 400 and "create" in err.value.message
    result = client.activate_model(
        model["id"], provider_model="local/client-test", force=True, create=True
    )
    assert result.to_dict() == {"ok": True, "activeModel": "local/client-test"}
    assert type(result) is schema.ActivateAnswer and result.active_model == "local/client-test"
    assert [type(m) for m in client.list_models()] == [schema.Model]
    with pytest.raises(TrainingAPIError) as err:
        client.import_ollama(model["id"], ollama_url="http://127.0.0.1:9", base_model="x:1")
    assert err.value.status == 502
    with pytest.raises(TrainingAPIError) as err:
        client.benchmark_model(model["id"], maxExamples=0)
    assert err.value.status == 400 and "maxExamples" in err.value.message
    spec = client.openapi()
    assert "/api/training/jobs/{id}/cancel" in spec["paths"]


def test_errors_carry_the_servers_message(client: TrainingClient) -> None:
    with pytest.raises(TrainingAPIError) as err:
        client.list_trajectories(limit=501)
    assert err.value.status == 400
    assert "limit must be at most 500" in err.value.message
    assert "limit must be at most 500" in str(err.value)
    with pytest.raises(TrainingAPIError) as err:
        client.get_job("../../../etc/passwd")  # one path segment, quoted: a 404
    assert err.value.status == 404 and "no job" in err.value.message
    with pytest.raises(TrainingAPIError) as err:
        client.start_job(backend="tpu")
    assert err.value.status == 400 and "backend" in err.value.message
    done = next(j for j in client.list_jobs() if j["status"] == "cancelled")
    with pytest.raises(TrainingAPIError) as err:  # already ended: the documented 409
        client.cancel_job(done["id"])
    assert err.value.status == 409 and "already cancelled" in err.value.message


def test_auth_schemes_and_bad_token(server: LiveServer) -> None:
    for scheme in ("Bearer", "token"):
        with TrainingClient(server.url, server.token, auth_scheme=scheme) as c:
            assert c.status()["available"] is True
    with TrainingClient(server.url, "not-the-token") as c, pytest.raises(TrainingAPIError) as err:
        c.status()
    assert err.value.status == 403 and err.value.message
    with TrainingClient(server.url) as c, pytest.raises(TrainingAPIError) as err:
        c.list_jobs()
    assert err.value.status == 403


def test_events_iterator(client: TrainingClient, store: StateStore) -> None:
    head = client.head_event_seq()
    assert isinstance(head, int)
    store.emit("job_log", "loading the model", jobId="job-ev")
    store.emit("job_progress", "job job-ev at iteration 3", jobId="job-ev", currentIteration=3)
    store.emit("job_completed", "job job-ev completed", jobId="job-ev")
    events = list(client.events(head, timeout=1.0))
    assert [e["kind"] for e in events] == ["job_log", "job_progress", "job_completed"]
    assert all(isinstance(e["ts"], int) and e["jobId"] == "job-ev" for e in events)
    assert [e["seq"] for e in events] == [head + 1, head + 2, head + 3]
    # typed, and the fields a kind adds kept beside the record's
    assert all(type(e) is StreamEvent and e.job_id == "job-ev" for e in events)
    assert events[1]["currentIteration"] == 3 and events[1].extra == {"currentIteration": 3}
    assert events[1].to_dict()["currentIteration"] == 3 and "currentIteration" in events[1]
    assert events[0].extra == {} and "currentIteration" not in events[0]


def test_async_client_every_route(server: LiveServer, store, lab) -> None:
    async def run() -> dict[str, Any]:
        async with AsyncTrainingClient(server.url, server.token) as c:
            out: dict[str, Any] = {"status": await c.status()}
            page = await c.list_trajectories(limit=2)
            out["detail"] = await c.get_trajectory(page["trajectories"][0]["id"])
            out["preview"] = await c.preview_dataset(limit=10, status="completed")
            out["dataset"] = await c.build_dataset(limit=10, status="completed")
            out["datasets"] = await c.list_datasets()
            job = await c.start_job(out["dataset"]["id"], iterations=1, batch_size=1)
            out["job"] = await c.get_job(job["id"])
            out["metrics"] = await c.job_metrics(job["id"])
            out["cancelled"] = await c.cancel_job(job["id"])
            out["jobs"] = await c.list_jobs()
            out["models"] = await c.list_models()
            model = out["models"][0]["id"]
            out["activated"] = await c.activate_model(model, "local/async", force=True, create=True)
            for call in (
                c.import_ollama(model, ollama_url="http://example.com"),
                c.benchmark_model("no-such-model"),
            ):
                try:
                    await call
                except TrainingAPIError as exc:
                    out.setdefault("errors", []).append(exc.status)
            out["openapi"] = await c.openapi()
            out["events"] = [e async for e in c.events(0, timeout=0.5)]
            return out

    if not store.list_models():
        insert_model(store, lab["home"], "model-client-async")
    out = asyncio.run(run())
    assert out["status"]["available"] is True
    assert out["dataset"]["id"] in [d["id"] for d in out["datasets"]]
    assert out["preview"]["exampleCount"] == out["dataset"]["exampleCount"]
    assert out["job"]["status"] == "queued" and out["cancelled"]["status"] == "cancelled"
    assert type(out["job"]) is schema.Job and out["cancelled"].status == "cancelled"
    assert type(out["preview"]) is schema.DatasetPreview
    assert all(type(e) is StreamEvent for e in out["events"])
    assert out["metrics"] == [] and out["activated"]["ok"] is True
    assert out["errors"] == [400, 404]
    assert out["openapi"]["openapi"].startswith("3.")
    kinds = {e["kind"] for e in out["events"]}
    assert {"dataset_built", "job_queued", "job_cancelled", "model_activated"} <= kinds


def test_discover_finds_the_server(server: LiveServer, monkeypatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(server.runtime_dir))
    assert discover() == (server.url, server.token)
    with TrainingClient.for_notebook() as c:
        assert c.status()["available"] is True
    empty = server.runtime_dir.parent / "empty-runtime"
    empty.mkdir(exist_ok=True)
    with pytest.raises(TrainingConnectionError):
        discover(str(empty))


def test_trust_env_off_ignores_proxy_variables(server: LiveServer, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with TrainingClient(server.url, server.token) as c:
        assert c.status()["available"] is True
    with (
        TrainingClient(server.url, server.token, trust_env=True) as c,
        pytest.raises(TrainingConnectionError),
    ):
        c.status()


def test_unreachable_server_is_a_connection_error() -> None:
    from rest_api.restkit import free_port

    with TrainingClient(f"http://127.0.0.1:{free_port()}", "t", timeout=2) as c:
        with pytest.raises(TrainingConnectionError) as err:
            c.status()
        assert err.value.status == 0 and "cannot reach" in err.value.message


# -- requests from the route table, bodies checked before they are sent -----------------------
def _recording(
    answer: httpx.Response | None = None,
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer or httpx.Response(404, json={"error": "no such thing"})

    return httpx.MockTransport(handle), seen


def test_requests_follow_the_route_table() -> None:
    transport, seen = _recording()
    calls = {  # operation: (the call, its path, its body)
        "getJob": (lambda c: c.get_job("../x"), "jobs/..%2Fx", None),
        "cancelJob": (lambda c: c.cancel_job("job-1"), "jobs/job-1/cancel", None),
        "getJobMetrics": (lambda c: c.job_metrics("job-1", after=3), "jobs/job-1/metrics", None),
        "startJob": (
            lambda c: c.start_job("ds-1", batch_size=2, loraRank=4),
            "jobs",
            {"datasetId": "ds-1", "batchSize": 2, "loraRank": 4},
        ),
        "activateModel": (
            lambda c: c.activate_model("m-1", "ollama/x", force=True),
            "models/m-1/activate",
            {"providerModel": "ollama/x", "force": True},
        ),
        "setAuto": (
            lambda c: c.set_auto(min_new_trajectories=5, enabled=True),
            "auto",
            {"minNewTrajectories": 5, "enabled": True},
        ),
        "previewDataset": (
            lambda c: c.preview_dataset(limit=3, redact=False),
            "datasets/preview",
            {"limit": 3, "privacy": {"redact": False}},
        ),
    }
    with TrainingClient("http://lab.test", "t", transport=transport, slow_timeout=77) as c:
        for call, _, _ in calls.values():
            with pytest.raises(TrainingAPIError) as err:
                call(c)
            assert err.value.status == 404 and err.value.message == "no such thing"
    for (op_id, (_, path, body)), request in zip(calls.items(), seen, strict=True):
        assert request.method == BY_ID[op_id].method, op_id
        assert request.url.raw_path.decode().split("?")[0] == f"/api/training/{path}"
        assert (json.loads(request.content) if request.content else None) == body, op_id
        slow = op_id in ("cancelJob", "startJob", "activateModel", "previewDataset")
        assert request.extensions["timeout"]["read"] == (77 if slow else 30), op_id
        assert request.headers["Authorization"] == "Bearer t"
    assert seen[2].url.params["after"] == "3"


def test_a_body_the_struct_refuses_is_never_sent() -> None:
    transport, seen = _recording()
    with TrainingClient("http://lab.test", transport=transport) as c:
        for call, words in (
            (lambda: c.start_job(iterations=0), "iterations must be at least 1, got 0"),
            (lambda: c.benchmark_model("m-1", bogus=1), "unknown field(s) bogus"),
            (lambda: c.build_dataset(start_date="March"), "startDate must be a date"),
            (lambda: c.import_ollama("m-1", mode="gguf"), "mode must be one of"),
        ):
            with pytest.raises(TrainingRequestError) as err:
                call()
            assert err.value.status == 400 and words in err.value.message
        with pytest.raises(TypeError, match="unknown build filter"):
            c.build_dataset(colour="red")  # type: ignore[call-arg]
    assert seen == []


def test_build_filters_name_every_build_field() -> None:
    from milady_lab.datasets.request import KEYWORDS

    positional = {"limit", "min_llm_calls_per_trajectory", "privacy"}
    privacy = {"redact", "anonymize_handles"}
    assert set(BuildFilters.__annotations__) == set(KEYWORDS) - positional | privacy


# -- a server that sends fewer fields (a Milady agent) -----------------------------------------
AGENT_JOB = {"id": "job-a", "status": "running", "progress": 0.25, "phase": "running"}


def _agent_server(job_status: list[str]) -> httpx.MockTransport:
    """A Milady agent as far as the client sees it: jobs with fewer fields than milady-lab
    sends, ``{"error"}`` errors, no event stream."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/training/")
        if path == "jobs/job-a":
            status = job_status.pop(0) if len(job_status) > 1 else job_status[0]
            return httpx.Response(200, json={"job": {**AGENT_JOB, "status": status}})
        if path == "jobs":
            return httpx.Response(200, json={"jobs": [AGENT_JOB]})
        if path == "jobs/job-typed":
            return httpx.Response(200, json={"job": {**AGENT_JOB, "createdAt": "2026-12-01"}})
        if path == "status":
            return httpx.Response(200, text="<html>a proxy's login page</html>")
        return httpx.Response(404, json={"error": f"Not found: {path}"})

    return httpx.MockTransport(handle)


def test_a_record_missing_fields_still_decodes() -> None:
    """Decided: a record that lacks fields milady-lab's contract requires decodes (its
    missing fields None and absent from the mapping view), as the dicts of earlier
    versions did; a present field of another type is an error naming it."""
    with TrainingClient("http://agent.test", transport=_agent_server(["running"])) as c:
        job = c.get_job("job-a")
        assert isinstance(job, schema.Job) and job["status"] == "running" and job.progress == 0.25
        assert job.created_at is None and job.get("createdAt") is None
        assert "createdAt" not in job and "phase" in job
        assert job.to_dict() == AGENT_JOB and dict(job) == AGENT_JOB
        [listed] = c.list_jobs()
        assert isinstance(listed, schema.Job) and listed.id == "job-a"
        with pytest.raises(TrainingAnswerError) as err:
            c.get_job("job-typed")
        assert err.value.status == 200 and "$.job.createdAt" in err.value.message
        assert "milady-lab's JobAnswer" in err.value.message
        with pytest.raises(TrainingAnswerError, match="not JSON"):
            c.status()
        with pytest.raises(TrainingAPIError) as err:  # the agent's ``error`` key is the message
            c.get_job("job-404")
        assert (err.value.status, err.value.message) == (404, "Not found: jobs/job-404")


def test_wait_for_job_polls_a_server_without_events() -> None:
    transport = _agent_server(["running", "completed"])
    with TrainingClient("http://agent.test", transport=transport) as c:
        job = c.wait_for_job("job-a", timeout=30)
    assert isinstance(job, schema.Job) and job.status == "completed"


def test_async_client_decodes_the_same_records() -> None:
    async def run() -> tuple[schema.Job, list[schema.Job]]:
        transport = _agent_server(["running"])
        async with AsyncTrainingClient("http://agent.test", transport=transport) as c:
            with pytest.raises(TrainingAnswerError):
                await c.get_job("job-typed")
            return await c.get_job("job-a"), await c.list_jobs()

    job, jobs = asyncio.run(run())
    assert isinstance(job, schema.Job) and job.to_dict() == AGENT_JOB
    assert [j.id for j in jobs] == ["job-a"] and job.created_at is None


# -- a benchmark as a run: started (202), then polled ------------------------------------------
_SCORES = {"coherence": 0.5, "consistency": 0.25, "helpfulness": 0.75}
_RESULT = {"modelId": "m-1", "scores": _SCORES, "completedAt": 9, "examples": 3}


def _benchmark_server(seen: list[tuple[str, str, Any]]) -> httpx.MockTransport:
    """A server with one run of m-1: started by the POST, completed at the first GET."""
    run = {"runId": "bench-1", "modelId": "m-1", "status": "running", "done": 0, "total": 0,
           "startedAt": 5}  # fmt: skip

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path.removeprefix("/api/training/"), body))
        if request.method == "POST":
            return httpx.Response(202, json=run)
        done = {"done": 6, "total": 6, "status": "completed", "endedAt": 8, "result": _RESULT}
        return httpx.Response(200, json={**run, **done})

    return httpx.MockTransport(handle)


def test_start_benchmark_and_benchmark_run() -> None:
    async def run_async() -> tuple[schema.BenchmarkRun, schema.BenchmarkRun]:
        transport = _benchmark_server(seen)
        async with AsyncTrainingClient("http://lab.test", transport=transport) as c:
            return await c.start_benchmark("m-1", max_examples=3), await c.benchmark_run("m-1")

    seen: list[tuple[str, str, Any]] = []
    with TrainingClient("http://lab.test", transport=_benchmark_server(seen)) as c:
        sync = c.start_benchmark("m-1", max_examples=3, seed=2), c.benchmark_run("m-1")
        with pytest.raises(TrainingRequestError, match="unknown field"):
            c.start_benchmark("m-1", bogus=1)
    async_ = asyncio.run(run_async())
    assert seen == [
        ("POST", "models/m-1/benchmark", {"maxExamples": 3, "seed": 2, "wait": False}),
        ("GET", "models/m-1/benchmark", None),
        ("POST", "models/m-1/benchmark", {"maxExamples": 3, "wait": False}),
        ("GET", "models/m-1/benchmark", None),
    ]
    for started, polled in (sync, async_):
        assert type(started) is schema.BenchmarkRun and type(polled) is schema.BenchmarkRun
        assert (started.run_id, started.status, started.result) == ("bench-1", "running", None)
        assert (polled.status, polled.done, polled.total) == ("completed", 6, 6)
        assert type(polled.result) is schema.BenchmarkAnswer and polled.result.to_dict() == _RESULT
