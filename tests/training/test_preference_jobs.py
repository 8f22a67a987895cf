"""Preference training end to end (issue 27): trajectories with scenario groups and
rewards → a ``pairs`` and a ``labelled`` dataset (REST) → a ``dpo`` and a ``kto`` job
through REST and through the CLI, on a tiny Llama → the preference metrics in their
metrics → registered models imported into the Ollama stand-in like any other (the
launcher's jobs: ``tests/widgets/test_launcher_preference.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from models.ollama_standin import OllamaStandIn
from rest_api.restkit import live_server
from test_preferences import write_db

from milady_lab.client import TrainingClient
from milady_lab.state import StateStore

from .jobkit import _build_tiny_llama, cleanup_jobs

pytestmark = pytest.mark.slow

CLI = "import sys; from milady_lab.cli import main; sys.exit(main())"
#: Every step of either objective reports these (``training/preference.py``).
PREFERENCE_KEYS = {"loss", "rewardMargin", "rewardsChosen", "rewardsRejected", "logpsChosen",
                   "logpsRejected"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_tiny_llama(tmp_path_factory.mktemp("pref-tiny-llama"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pref-lab")
    return {
        "home": base / "home",
        "trajectories": write_db(base / "prefs.sqlite"),
        "agent_config": base / "agent" / "milady.json",
        "cache": base / "cache",
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, lab: dict[str, Path]) -> Iterator[Any]:
    server_dir = tmp_path_factory.mktemp("pref-server")
    with (
        live_server(server_dir, lab, env={"OMP_NUM_THREADS": "1"}) as server,
        TrainingClient(server.url, server.token, timeout=60) as c,
    ):
        try:
            yield c
        finally:
            from milady_lab.config import Settings
            from milady_lab.training.jobs import JobManager

            settings = Settings.from_env(home=lab["home"])
            store = StateStore(settings.state_db)
            cleanup_jobs(JobManager(settings, store))
            store.close()


def _wait_done(client: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := client.get_job(job_id))["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return job


def _present(metric: dict[str, Any]) -> set[str]:
    return {k for k, val in metric.items() if val is not None}


def _check_metrics(metrics: list[dict[str, Any]], iterations: int) -> None:
    assert [m["iteration"] for m in metrics] == list(range(1, iterations + 1))
    for m in metrics:
        assert _present(m) >= PREFERENCE_KEYS, m


def _check_kto(metrics: list[dict[str, Any]]) -> None:
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    assert all(m["klEstimate"] >= 0 and m["loss"] > 0 for m in metrics)
    # A KTO batch may hold one label only: each side is reported where the batch has it.
    seen = set().union(*map(_present, metrics))
    assert (PREFERENCE_KEYS - {"rewardMargin"}) <= seen
    assert all("rewardMargin" in _present(m) for m in metrics
               if {"logpsChosen", "logpsRejected"} <= _present(m))  # fmt: skip


def test_dpo_and_kto_through_rest_and_the_cli_then_ollama(
    client: Any, lab: dict[str, Path], tiny_model: Path
) -> None:
    pairs = client.build_dataset(kind="pairs")
    labelled = client.build_dataset(kind="labelled", label_threshold=0.5)
    assert pairs["kind"] == "pairs" and pairs["pairCount"] == 8
    assert labelled["kind"] == "labelled" and sum(labelled["labelCounts"].values()) > 0
    datasets = {"dpo": pairs["id"], "kto": labelled["id"]}

    # Each objective through REST.
    rest: dict[str, dict[str, Any]] = {}
    for objective, beta in (("dpo", 0.2), ("kto", 0.5)):
        started = client.start_job(
            datasets[objective], backend="cpu", model=str(tiny_model), iterations=3,
            batch_size=2, learning_rate=1e-3, evalEvery=3, objective=objective, beta=beta,
        )  # fmt: skip
        rest[objective] = job = _wait_done(client, started["id"])
        assert job["status"] == "completed", job
        assert job["options"]["objective"] == objective and job["options"]["beta"] == beta
    _check_metrics(client.job_metrics(rest["dpo"]["id"]), 3)
    _check_kto(client.job_metrics(rest["kto"]["id"]))

    # Each through the CLI, on the same home, following the job with its bar.
    flags = ["--backend", "cpu", "--iterations", "3", "--batch-size", "2",
             "--learning-rate", "1e-3", "--eval-every", "3"]  # fmt: skip
    cli: dict[str, dict[str, Any]] = {}
    for objective, extra in (("kto", ["--beta", "0.5", "--desirable-weight", "1.5"]),
                             ("dpo", ["--beta", "0.1"])):  # fmt: skip
        argv = [sys.executable, "-c", CLI, "--home", str(lab["home"]), "--trajectories",
                str(lab["trajectories"]), "--cache", str(lab["cache"]), "jobs", "start",
                "--dataset-id", datasets[objective], "--model", str(tiny_model), "--objective",
                objective, *extra, *flags, "--wait", "--json"]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
        assert out.returncode == 0, out.stderr
        cli[objective] = job = json.loads(out.stdout[out.stdout.index("{") :])["job"]
        assert job["status"] == "completed" and job["options"]["objective"] == objective
    assert cli["kto"]["options"]["desirableWeight"] == 1.5
    _check_kto(client.job_metrics(cli["kto"]["id"]))
    _check_metrics(client.job_metrics(cli["dpo"]["id"]), 3)

    # All four registered; a DPO and a KTO model import into Ollama like any other.
    models = {m["jobId"]: m for m in client.list_models()}
    assert set(models) == {j["id"] for j in (*rest.values(), *cli.values())}
    ollama = OllamaStandIn().start()
    try:
        for objective, job in (("dpo", rest["dpo"]), ("kto", cli["kto"])):
            name = f"milady-{objective}"
            done = client.import_ollama(models[job["id"]]["id"], model_name=name,
                                        ollama_url=ollama.url)  # fmt: skip
            assert done["ollamaName"] == name and done["id"] == models[job["id"]]["id"]
            assert name in ollama.models
    finally:
        ollama.stop()


def test_the_cli_bar_shows_the_preference_figures() -> None:
    import io

    from tqdm import tqdm

    from milady_lab.cli.jobs import update_bar

    bar = tqdm(total=3, disable=False, file=io.StringIO())
    job = {"id": "job-1", "status": "running", "stage": "training", "currentIteration": 2}
    job.update(loss=0.61, tokensPerSecond=90.0)
    update_bar(bar, job, {"rewardMargin": 0.25, "logpsChosen": -12.5, "logpsRejected": -14.0})
    want = "status=running, loss=0.6100, margin=0.250, logp+=-12.500, logp-=-14.000, tok/s=90"
    assert bar.postfix == want
    update_bar(bar, job)  # an SFT job: as before
    assert bar.postfix == "status=running, loss=0.6100, tok/s=90"
    bar.close()
