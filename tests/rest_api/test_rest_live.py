"""Against a real ``jupyter server`` process: install-time enabling, the whole flow over
HTTP only (demo data → dataset → job → event stream → model), and schemathesis fuzzing
the live server against its own ``openapi.json``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milady_lab.client import TrainingAPIError, TrainingClient
from milady_lab.config import Settings
from milady_lab.state import StateStore
from milady_lab.training.jobs import JobManager, group_alive

from .restkit import insert_model, live_server, make_occupied

VENV_BIN = Path(sys.executable).parent


def test_extension_is_enabled_by_the_installed_config() -> None:
    """``jupyter server extension list`` (the venv's own config) shows it enabled and OK."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert "jupyter_server_ext \x1b[32menabled" in text or "jupyter_server_ext enabled" in text, (
        text
    )
    assert "jupyter_server_ext" in text.split("Validating jupyter_server_ext", 1)[1].split("\n")[1]
    assert "OK" in text.split("Validating jupyter_server_ext", 1)[1].split("\n")[1]


# -- shared by the live tests --
@pytest.fixture
def live_lab(tmp_path: Path, demo_db: Path, tmp_path_factory: pytest.TempPathFactory):
    return {
        "home": tmp_path / "home",
        "trajectories": demo_db,
        "agent_config": tmp_path / "agent" / "milady.json",
        "cache": tmp_path_factory.getbasetemp() / "live-cache",
    }


def stop_all_jobs(home: Path) -> None:
    """Leave no worker behind: cancel queued jobs first (so none starts), then running."""
    settings = Settings.from_env(home=home)
    store = StateStore(settings.state_db)
    try:
        with store.transaction() as conn:
            conn.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'queued'")
        manager = JobManager(settings, store)
        for rec in store.list_jobs(("running",)):
            with contextlib.suppress(Exception):
                manager.cancel(rec["id"])
        for rec in store.list_jobs():
            pid = rec.get("pid")
            if pid and group_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, 9)
    finally:
        store.close()


@pytest.fixture(scope="session")
def tiny_model_dir(request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """The backends' ``tiny_llama_dir`` when present, else the job tests' tiny Llama."""
    with contextlib.suppress(pytest.FixtureLookupError):
        return Path(request.getfixturevalue("tiny_llama_dir"))
    from training.jobkit import _build_tiny_llama

    return _build_tiny_llama(tmp_path_factory.mktemp("rest-tiny-llama"))


# -- the whole flow, HTTP only --
@pytest.mark.slow
def test_full_flow_over_http(tmp_path: Path, live_lab, tiny_model_dir: Path) -> None:
    with (
        live_server(tmp_path / "server", live_lab) as server,
        TrainingClient(server.url, server.token, timeout=60) as client,
    ):
        try:
            assert client.status()["runtimeAvailable"] is True
            page = client.list_trajectories(limit=5)
            assert page["total"] > 0 and len(page["trajectories"]) == 5

            dataset = client.build_dataset(limit=60)
            assert dataset["exampleCount"] > 0
            assert [d["id"] for d in client.list_datasets()] == [dataset["id"]]

            cursor = client.head_event_seq()
            job = client.start_job(
                dataset["id"], backend="cpu", model=str(tiny_model_dir),
                iterations=4, batch_size=2, learning_rate=1e-3,
            )  # fmt: skip
            assert job["status"] in ("queued", "running")

            kinds: list[str] = []
            deadline = time.monotonic() + 240
            for event in client.events(cursor, timeout=240):
                if event.get("jobId") != job["id"]:
                    continue
                kinds.append(event["kind"])
                assert isinstance(event["ts"], int) and isinstance(event["message"], str)
                if event["kind"] in ("job_completed", "job_failed", "job_cancelled"):
                    break
                assert time.monotonic() < deadline
            final = client.get_job(job["id"])
            assert kinds[-1] == "job_completed", (kinds, final, server.log_tail())
            assert "job_started" in kinds
            assert final["status"] == "completed" and final["progress"] == 1.0
            assert final["completedAt"] >= final["createdAt"]

            metrics = client.job_metrics(job["id"])
            assert metrics and all(isinstance(m["iteration"], int) for m in metrics)
            models = client.list_models()
            assert [m["jobId"] for m in models] == [job["id"]]
            assert final["modelId"] == models[0]["id"]
            assert models[0]["active"] is False
        finally:
            stop_all_jobs(live_lab["home"])


# -- schemathesis against the live server --
SCHEMATHESIS_CONFIG = """
# Links come from the spec only: inferred ones would cancel the job that keeps the
# queue blocked (GET /jobs -> cancel), and the fuzzer's queued jobs would then train.
[phases.stateful]
inference.algorithms = ["location-headers"]

# The event stream is read for a moment (timeout) rather than forever.
[[operations]]
include-operation-id = "streamEvents"
parameters = { timeout = 0.2 }
max-stream-events = 200

# Valid-looking data the service refuses for reasons a schema cannot express: a model
# name that does not exist, cuda on a machine without a GPU, a build where no
# trajectory qualifies, a startDate after the endDate, a blank or control-character
# filter. These answer 400 with a message, by design.
[[operations]]
include-operation-id = "startJob"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

[[operations]]
include-operation-id = "buildDataset"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-operation-id = "previewDataset"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

# The auto-improve policy's model is checked like a job's (an unknown name is a 400).
[[operations]]
include-operation-id = "setAuto"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

# The benchmark answers when its worker is done (the spec's synchronous POST): minutes
# when a fuzzed job got to train the default base model.
[[operations]]
include-operation-id = "benchmarkModel"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]
checks.max_response_time = 900

[[operations]]
include-operation-id = "importOllama"
# No Ollama runs here: 502 is the documented answer for an unreachable upstream.
checks.not_a_server_error.expected-statuses = ["2xx", "4xx", "502"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "502"]

[[operations]]
include-operation-id = "activateModel"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

# The agent's routes: a backend this machine lacks, a build where no trajectory
# qualifies, an outputPath that cannot be written (400) or exists (409).
[[operations]]
include-operation-id = "triggerAuto"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

[[operations]]
include-operation-id = "exportTrajectories"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"]

[[operations]]
include-operation-id = "cancelJob"
# A job an earlier generated call cancelled: the documented 409 (a cancel changes nothing).
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409"]
"""


@pytest.fixture
def fuzz_server(tmp_path: Path, live_lab) -> Iterator[Any]:
    """A live server whose queue is blocked by a sleeping "running" job, with one model."""
    home = live_lab["home"]
    store = StateStore(Settings.from_env(home=home).state_db)
    with make_occupied(store) as occupied:
        insert_model(store, home, adapter_files=False)  # import/benchmark: fast 409s
        with live_server(tmp_path / "server", live_lab) as server:
            server.occupied = occupied  # type: ignore[attr-defined]
            yield server
        stop_all_jobs(home)
    store.close()


#: Schemathesis reuses ids it saw in answers (``GET /jobs``) in later requests, links or
#: not: it cancelled the job that keeps the queue blocked, and the fuzzer's jobs trained.
#: Its cancels go to an id that does not exist instead (a 404, as for any unknown id).
#: A trajectory export's ``outputPath`` is moved into the test's folder (the fuzzer's
#: paths would otherwise be files anywhere this user may write).
SCHEMATHESIS_HOOKS = """
import hashlib

import schemathesis

OCCUPIED = {occupied!r}
EXPORTS = {exports!r}


@schemathesis.hook
def before_call(ctx, case, kwargs):
    params = case.path_parameters
    if params and params.get("id") == OCCUPIED and case.path.endswith("/cancel"):
        params["id"] = "job-00000000000000-000000"
    body = case.body
    if case.path.endswith("/trajectories/export") and isinstance(body, dict):
        if isinstance(body.get("outputPath"), str):
            name = hashlib.sha256(body["outputPath"].encode("utf-8", "replace")).hexdigest()
            body["outputPath"] = EXPORTS + "/" + name[:16] + ".jsonl"
"""


def test_schemathesis_against_live_server(tmp_path: Path, fuzz_server) -> None:
    """Every check, generated requests for every operation: no 5xx, every answer conforms."""
    st = shutil.which("schemathesis", path=str(VENV_BIN)) or shutil.which("schemathesis")
    assert st, "schemathesis is not installed"
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    hooks = tmp_path / "st_hooks.py"
    hooks.write_text(
        SCHEMATHESIS_HOOKS.format(
            occupied=fuzz_server.occupied["id"], exports=str(tmp_path / "exports")
        )
    )
    report = tmp_path / "st-report"
    budget = int(os.environ.get("MILADY_LAB_FUZZ_SECONDS", "100"))
    cmd = [
        st, f"--config-file={config}", "run", f"{fuzz_server.url}api/training/openapi.json",
        "-H", f"Authorization: Bearer {fuzz_server.token}",
        # Jupyter answers a missing token with 403 (the documented refusal), while this
        # check insists on 401 for a missing Authorization header; every other check runs.
        "--checks", "all", "--exclude-checks", "missing_required_header",
        "--max-examples", "60", "--max-time", str(budget),
        # One worker: CPython 3.11's ast module keeps one recursion counter for all threads,
        # and two workers parsing lambdas at once (hypothesis does) failed a CI run with
        # "SystemError: AST constructor recursion depth mismatch" inside schemathesis.
        "--request-timeout", "240", "--seed", "20261124", "--workers", "1",
        "--report", "junit", "--report-dir", str(report), "--suppress-health-check", "all",
    ]  # fmt: skip
    env = {
        **os.environ,
        "NO_COLOR": "1",
        "SCHEMATHESIS_TELEMETRY": "false",
        "SCHEMATHESIS_HOOKS": str(hooks),
    }
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=budget + 480, env=env, check=False
    )
    tail = (out.stdout + out.stderr)[-12000:]
    assert out.returncode == 0, tail + "\n--- server log ---\n" + fuzz_server.log_tail(40)
    # The queue stayed blocked: nothing the fuzzer started trained.
    with TrainingClient(fuzz_server.url, fuzz_server.token) as client:
        assert client.status()["available"] is True
        running = [j for j in client.list_jobs() if j["status"] == "running"]
        assert [j["id"] for j in running] == [fuzz_server.occupied["id"]], running
        with pytest.raises(TrainingAPIError) as err:
            client.get_job("../../etc/passwd")
        assert err.value.status == 404


def test_events_stream_over_real_http(tmp_path: Path, live_lab) -> None:
    """SSE through a real socket: live delivery, Last-Event-ID resume, clean end."""
    with (
        live_server(tmp_path / "server", live_lab) as server,
        TrainingClient(server.url, server.token) as client,
    ):
        store = StateStore(Settings.from_env(home=live_lab["home"]).state_db)
        try:
            head = client.head_event_seq()
            assert isinstance(head, int)
            store.emit("job_log", "hello from a worker", jobId="job-x")
            store.emit("job_progress", "iteration 3", jobId="job-x", iteration=3)
            seen = list(client.events(head, timeout=1.5))
            assert [e["kind"] for e in seen] == ["job_log", "job_progress"]
            assert seen[1]["iteration"] == 3 and seen[0]["seq"] == head + 1
            again = list(client.events(seen[0]["seq"], timeout=0.5))
            assert [e["kind"] for e in again] == ["job_progress"]
            raw = json.dumps([e.to_dict() for e in seen])
            assert server.token not in raw
        finally:
            store.close()
    ours = [
        line for line in server.log.read_text(errors="replace").splitlines() if "milady" in line
    ]
    assert ours and not any(server.token in line for line in ours)
