"""Milady's own expectations of ``/api/training``, replayed over HTTP against our server.

The Milady agent serves these routes itself and its app client talks to them; a user
pointing that client at milady-lab must get the same answers. Each expectation names
the agent file it comes from:

* milady-ai/milady ``src/api/training-routes.test.ts`` (the agent's route tests): status
  carries ``runningJobs`` and ``runtimeAvailable``; missing trajectory/job answer 404 with
  ``error``; a failed job start is a 400 with ``error``; an unknown job's cancel is a 404;
  ``ollamaUrl`` ``http://169.254.169.254:11434`` and ``http://127.0.0.1.evil.com:11434``
  are refused with "loopback host", ``file:///etc/passwd`` with exactly
  "ollamaUrl must use http:// or https://", ``http://[::1]:11434`` is accepted; benchmark
  is a POST without a body.
* milady-ai/milady ``src/api/training-routes.ts``: the URL rule is judged before the
  model is looked up (a hostile URL is a 400 whatever the id); errors are ``{"error"}``.
* milady-ai/milady ``apps/app/src/api-client.ts`` (``MiladyClient``): sends
  ``Authorization: Bearer <token>``; shows ``body.error`` else "HTTP <status>" (so every
  error status must carry ``error``); reads ``TrainingStatus`` (``runningJobs``,
  ``queuedJobs``, ``completedJobs``, ``failedJobs``, ``modelCount``, ``datasetCount``,
  ``runtimeAvailable``), ``TrainingDatasetRecord`` (``sampleCount``, ``jsonlPath``,
  ``metadataPath``, ``trajectoryCount``), ``TrainingJobRecord`` (``phase``, ``progress``,
  ``modelId``, ``datasetId``), ``TrainingModelRecord`` (``sourceModel``, ``ollamaModel``,
  ``modelPath``, ``adapterPath``, ``outputDir``, ``backend``, ``active``).
* elizaOS/eliza ``plugins/app-training/src/routes/training-routes.ts`` (the agent's six
  further routes and their answers), ``core/training-config.ts`` (``TrainingConfig``:
  ``autoTrain``, ``triggerThreshold``, ``triggerCooldownHours``, ``backends``),
  ``services/training-trigger.ts`` (the auto-status snapshot, ``serviceRegistered``),
  ``core/training-orchestrator.ts`` (``TrainingRunRecord``: ``runId``, ``status``,
  ``source``, ``startedAt``...), ``packages/agent/src/api/training-backend-check.ts``
  (``{"backends": {"mlx", "cuda", "cpu": bool}}``), and the app's
  ``CapabilitiesSection`` (reads ``config`` and ``serviceRegistered``; its settings
  action posts ``{"autoTrain": true}``).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from .restkit import insert_job, insert_model

SCHEME_MESSAGE = "ollamaUrl must use http:// or https://"
RUN_FIELDS = ("runId", "status", "source", "startedAt", "finishedAt", "datasetSize", "dryRun")


def _agent_error(code: int, body: Any, status: int) -> str:
    """What the agent's client shows: ``body.error`` (here always present and equal to
    Jupyter's ``message``)."""
    assert code == status, (code, body)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert body["error"] == body["message"], body
    return body["error"]


@pytest.fixture
def bearer(jp_serverapp: Any) -> dict[str, str]:
    """The agent client's header (``MiladyClient`` sends ``Authorization: Bearer``)."""
    return {"Authorization": f"Bearer {jp_serverapp.identity_provider.token}"}


async def agent(api: Any, bearer: dict[str, str], method: str, path: str, **kw: Any):
    return await api(method, path, token=None, headers=bearer, **kw)


# -- errors: every status the API answers carries ``error`` ----------------------------------------
async def test_every_error_status_carries_error(api, bearer, ext, store, lab, monkeypatch) -> None:
    _agent_error(*await agent(api, bearer, "POST", "datasets/build", body=b"{nope"), 400)
    _agent_error(*await api("GET", "status", token=None), 403)
    _agent_error(*await api("GET", "status", token="wrong-token"), 403)
    _agent_error(*await agent(api, bearer, "GET", "jobs/job-404"), 404)
    _agent_error(*await agent(api, bearer, "DELETE", "jobs"), 405)
    insert_job(store, "job-done", "completed")
    _agent_error(*await agent(api, bearer, "POST", "jobs/job-done/cancel"), 409)
    monkeypatch.setattr(ext, "max_body_bytes", 1024)
    _agent_error(*await agent(api, bearer, "POST", "jobs", body=b" " * 4096), 413)
    model = insert_model(store, lab["home"])
    code, body = await agent(
        api, bearer, "POST", f"models/{model['id']}/import-ollama",
        body={"ollamaUrl": "http://127.0.0.1:9", "baseModel": "smollm2:135m"},
    )  # fmt: skip
    assert "Ollama" in _agent_error(code, body, 502)

    def broken() -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(ext.service, "list_datasets", broken)
    shown = _agent_error(*await agent(api, bearer, "GET", "datasets"), 500)
    assert "secret" not in shown


async def test_unknown_paths_answer_json_404(api, bearer) -> None:
    for method, path in (("GET", "nope"), ("POST", "models/x/nope"), ("PUT", "a/b/c"),
                         ("DELETE", "auto/runs/x/y"), ("GET", "")):  # fmt: skip
        code, body = await agent(api, bearer, method, path, body={} if method != "GET" else None)
        assert "no such training route" in _agent_error(code, body, 404), (method, path)
    code, body = await api("GET", "nope", token=None)  # unknown and unauthenticated: 403
    _agent_error(code, body, 403)


async def test_missing_records_and_failed_starts(api, bearer) -> None:
    _agent_error(*await agent(api, bearer, "GET", "trajectories/trajectory-404"), 404)
    _agent_error(*await agent(api, bearer, "POST", "jobs/job-404/cancel"), 404)
    _agent_error(*await agent(api, bearer, "POST", "jobs", body={"backend": "tpu"}), 400)
    _agent_error(*await agent(api, bearer, "POST", "models/model-404/benchmark"), 404)


# -- the ollamaUrl rule: wording, scheme, judged before the id ------------------------------------
async def test_ssrf_refusals_in_the_agents_words(api, bearer, store, lab) -> None:
    model = insert_model(store, lab["home"])
    for model_id in (model["id"], "model-404"):  # the URL is judged before the id
        route = f"models/{model_id}/import-ollama"
        for url in ("http://169.254.169.254:11434", "http://127.0.0.1.evil.com:11434"):
            code, body = await agent(api, bearer, "POST", route, body={"ollamaUrl": url})
            assert "loopback host" in _agent_error(code, body, 400), (model_id, url)
        code, body = await agent(
            api, bearer, "POST", route, body={"ollamaUrl": "file:///etc/passwd"}
        )
        assert _agent_error(code, body, 400) == SCHEME_MESSAGE
    # The bracketed IPv6 loopback passes the rule: an unknown model is then a 404.
    code, body = await agent(
        api,
        bearer,
        "POST",
        "models/model-404/import-ollama",
        body={"ollamaUrl": "http://[::1]:11434"},
    )
    _agent_error(code, body, 404)


# -- the records' agent fields ---------------------------------------------------------------------
async def test_status_has_the_agents_counters(api, bearer, store, lab, occupied) -> None:
    insert_job(store, "job-a", "failed")
    insert_job(store, "job-b", "queued")  # behind the ``occupied`` running job
    insert_model(store, lab["home"])  # and its completed job
    code, status = await agent(api, bearer, "GET", "status")
    assert code == 200 and status["runtimeAvailable"] is True
    assert status["runningJobs"] == 1 and status["queuedJobs"] == 1
    assert status["completedJobs"] == 1 and status["failedJobs"] == 1
    assert status["modelCount"] == 1 and status["datasetCount"] == 0
    code, _ = await agent(api, bearer, "POST", "datasets/build", body={"limit": 30})
    assert code == 201
    _, status = await agent(api, bearer, "GET", "status")
    assert status["datasetCount"] == 1
    assert status["activeJobId"] == occupied["id"] and status["available"] is True  # ours


async def test_dataset_job_and_model_records(api, bearer, store, lab, occupied) -> None:
    code, built = await agent(
        api, bearer, "POST", "datasets/build", body={"limit": 100, "minLlmCallsPerTrajectory": 2}
    )
    assert code == 201
    dataset = built["dataset"]
    assert dataset["sampleCount"] == dataset["exampleCount"] > 0
    assert isinstance(dataset["createdAt"], int)  # our documented shape stays
    lines = Path(dataset["jsonlPath"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == dataset["trainCount"] and json.loads(lines[0])["messages"]
    assert Path(dataset["validPath"]).is_file()
    assert json.loads(Path(dataset["metadataPath"]).read_text())["id"] == dataset["id"]
    _, listed = await agent(api, bearer, "GET", "datasets")
    assert listed["datasets"][0]["sampleCount"] == dataset["exampleCount"]

    insert_job(store, "job-q", "queued", datasetId=dataset["id"])  # behind ``occupied``
    _, job = await agent(api, bearer, "GET", "jobs/job-q")
    assert job["job"]["phase"] == "queued" and job["job"]["modelId"] is None
    assert job["job"]["datasetId"] == dataset["id"] and job["job"]["progress"] == 0
    model = insert_model(store, lab["home"])
    _, jobs = await agent(api, bearer, "GET", "jobs")
    done = next(j for j in jobs["jobs"] if j["id"] == model["jobId"])
    assert done["phase"] == "completed" and done["modelId"] == model["id"]
    _, models = await agent(api, bearer, "GET", "models")
    rec = models["models"][0]
    assert rec["sourceModel"] == model["baseModel"] and rec["ollamaModel"] is None
    assert rec["modelPath"] == rec["adapterPath"] == model["adapterPath"]
    assert rec["outputDir"] == str(Path(model["adapterPath"]).parent)
    assert rec["backend"] == "cpu" and rec["active"] is False


# -- the agent's six further routes ---------------------------------------------------------------
async def test_backends(api, bearer) -> None:
    from milady_lab.training.backends import available_backends

    code, body = await agent(api, bearer, "GET", "backends")
    assert code == 200 and set(body["backends"]) == {"mlx", "cuda", "cpu"}
    assert body["backends"]["cpu"] is True
    assert all(isinstance(ok, bool) for ok in body["backends"].values())
    assert [n for n, ok in body["backends"].items() if ok] == sorted(
        available_backends(), key=["mlx", "cuda", "cpu"].index
    )


async def test_auto_config_is_the_auto_improve_policy(api, bearer) -> None:
    code, body = await agent(api, bearer, "GET", "auto/config")
    assert code == 200
    config = body["config"]
    assert config["autoTrain"] is False and config["triggerThreshold"] == 100
    assert config["triggerCooldownHours"] == 12 and len(config["backends"]) == 1
    # What the agent's settings action sends, then a whole agent config with its own keys.
    code, body = await agent(api, bearer, "POST", "auto/config", body={"autoTrain": True})
    assert code == 200 and body["config"]["autoTrain"] is True
    agent_config = {
        "autoTrain": True,
        "triggerThreshold": 7.9,
        "triggerCooldownHours": 0.5,
        "backends": ["native", "cpu"],
        "perTaskOverrides": {"response": {}},
    }
    code, body = await agent(api, bearer, "POST", "auto/config", body=agent_config)
    assert code == 200, body
    assert body["config"] == {"autoTrain": True, "triggerThreshold": 7,
                              "triggerCooldownHours": 0.5, "backends": ["cpu"]}  # fmt: skip
    _, ours = await agent(api, bearer, "GET", "auto")  # the same policy, milady-lab's view
    assert ours["policy"]["enabled"] is True and ours["policy"]["minNewTrajectories"] == 7
    assert ours["policy"]["cooldownHours"] == 0.5 and ours["policy"]["backend"] == "cpu"
    for bad in ({"autoTrain": "yes"}, {"triggerThreshold": "ten"}, {"backends": "cpu"},
                {"triggerCooldownHours": -1}, [1]):  # fmt: skip
        code, err = await agent(api, bearer, "POST", "auto/config", body=bad)
        _agent_error(code, err, 400)
    _, body = await agent(api, bearer, "GET", "auto/config")
    assert body["config"]["triggerThreshold"] == 7  # the refused bodies changed nothing


async def test_auto_status(api, bearer) -> None:
    await agent(api, bearer, "POST", "auto/config", body={"triggerThreshold": 50})
    code, body = await agent(api, bearer, "GET", "auto/status")
    assert code == 200
    assert body["serviceRegistered"] is True  # the server's watcher runs
    assert body["autoTrainEnabled"] is False and body["triggerThreshold"] == 50
    assert body["cooldownHours"] == 12 and body["lastTrain"] == {}
    assert set(body["counters"]) == set(body["perTaskThresholds"]) >= {"response"}
    assert body["perTaskThresholds"]["response"] == 50
    assert body["perTaskCooldownMs"]["response"] == 12 * 3_600_000


async def _ended_run(api, bearer, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        code, body = await agent(api, bearer, "GET", "auto/runs")
        assert code == 200
        run = next((r for r in body["runs"] if r["runId"] == run_id), None)
        assert run is not None, body
        if run["finishedAt"] is not None:
            return run
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.2)


async def test_trigger_answers_at_once_and_the_run_is_listed(api, bearer, store) -> None:
    # A threshold no demo database reaches: the manual round is refused, nothing trains.
    await agent(api, bearer, "POST", "auto/config", body={"triggerThreshold": 10**8})
    started = time.monotonic()
    code, body = await agent(api, bearer, "POST", "auto/trigger", body={"task": "response"})
    assert code == 201, body
    assert time.monotonic() - started < 5  # the round runs in the background
    assert body["status"] == "queued" and body["runId"] == body["run"]["runId"]
    assert all(k in body["run"] for k in RUN_FIELDS) and body["run"]["source"] == "manual"
    run = await _ended_run(api, bearer, body["runId"])
    assert run["status"] == "skipped" and "< 100000000" in run["reason"]
    assert run["task"] == "response" and run["startedAt"].endswith("Z")
    # A dry run with a low threshold: a round would start, none does.
    await agent(api, bearer, "POST", "auto/config", body={"triggerThreshold": 1})
    code, body = await agent(api, bearer, "POST", "auto/trigger", body={"dryRun": True})
    assert code == 201
    run = await _ended_run(api, bearer, body["runId"])
    assert run["status"] == "skipped" and run["dryRun"] is True and "dry run" in run["reason"]
    assert store.list_datasets() == [] and store.list_jobs() == []
    code, body = await agent(api, bearer, "GET", "auto/runs", params={"limit": 1})
    assert code == 200 and [r["runId"] for r in body["runs"]] == [run["runId"]]
    for bad in ({"task": "dance"}, {"backend": "native"}, {"dryRun": "yes"}, {"x": 1}):
        code, err = await agent(api, bearer, "POST", "auto/trigger", body=bad)
        _agent_error(code, err, 400)
    _agent_error(*await agent(api, bearer, "GET", "auto/runs", params={"limit": 0}), 400)


async def test_trajectory_export(api, bearer, tmp_path: Path) -> None:
    target = tmp_path / "out" / "export.jsonl"
    code, body = await agent(
        api, bearer, "POST", "trajectories/export", body={"limit": 25, "outputPath": str(target)}
    )
    assert code == 201, body
    assert body["outputPath"] == str(target) and body["trajectoriesConsidered"] <= 25
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == body["exportedExamples"] > 0
    assert all(json.loads(line)["messages"] for line in lines)
    code, again = await agent(
        api, bearer, "POST", "trajectories/export", body={"outputPath": str(target)}
    )
    assert "exists" in _agent_error(code, again, 409)  # never overwritten
    code, body = await agent(api, bearer, "POST", "trajectories/export")
    assert code == 201 and Path(body["outputPath"]).is_file()
    for bad in ({"limit": 0}, {"trajectoryIds": ["a"]}, {"outputPath": 5}):
        code, err = await agent(api, bearer, "POST", "trajectories/export", body=bad)
        _agent_error(code, err, 400)
