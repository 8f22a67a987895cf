"""The launcher's objective and β (issue 27): a pairs dataset picks dpo, a labelled one
kto; a dpo and a kto job started from the launcher train and its info line shows the
preference figures (reward margin, chosen/rejected log-probabilities; no browser: widgets
driven in Python)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_preferences import write_db
from training.jobkit import _build_tiny_llama

from milady_lab.config import Settings
from milady_lab.service import TrainingService
from milady_lab.widgets import JobLauncher, LocalData

from .test_panels import status_of


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A home over trajectories with scenario groups and rewards (``test_preferences``)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    (tmp_path / "home").mkdir()
    return Settings.from_env(
        home=tmp_path / "home",
        trajectories=write_db(tmp_path / "prefs.sqlite"),
        agent_config=tmp_path / "milady.json",
        cache=tmp_path / "cache",
    )


def test_objective_follows_the_dataset_kind_and_shapes_the_body(
    backend: LocalData, service: TrainingService
) -> None:
    from milady_lab.training.options import JobOptions
    from milady_lab.training.preference import DEFAULT_BETA

    sft = service.build_dataset({})["dataset"]
    pairs = service.build_dataset({"kind": "pairs"})["dataset"]
    labelled = service.build_dataset({"kind": "labelled"})["dataset"]
    jl = JobLauncher(backend, autostart=False)
    c = jl.controls
    assert c.beta.value == DEFAULT_BETA
    labels = dict((v, k) for k, v in jl.dataset.options)
    assert "pairs)" in labels[pairs["id"]] and "labelled examples)" in labels[labelled["id"]]
    for ds, objective in ((pairs, "dpo"), (labelled, "kto"), (sft, "sft")):
        jl.dataset.value = ds["id"]
        assert c.objective.value == objective
        assert c.beta.layout.display == ("none" if objective == "sft" else "")
    assert "objective" not in jl.body() and "beta" not in jl.body()  # sft: as before
    jl.dataset.value = labelled["id"]
    c.beta.value = 0.3
    body = jl.body()
    assert (body["objective"], body["beta"]) == ("kto", 0.3)
    opts = JobOptions.from_body({**body, "backend": "cpu"}, service.store)
    assert (opts.objective, opts.beta, opts.dataset_id) == ("kto", 0.3, labelled["id"])
    jl.close()


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "kind"), [("dpo", "pairs"), ("kto", "labelled")])
def test_a_preference_job_started_from_the_launcher(
    backend: LocalData, service: TrainingService, tmp_path: Path, objective: str, kind: str
) -> None:
    model = _build_tiny_llama(tmp_path / "tiny")
    built = {"kind": kind} | ({"labelThreshold": 0.5} if kind == "labelled" else {})
    dataset = service.build_dataset(built)["dataset"]
    jl = JobLauncher(backend, autostart=False)
    jl.dataset.value = dataset["id"]
    assert jl.controls.objective.value == objective
    jl.backend_choice.value = "cpu"
    jl.model.value = str(model)
    jl.iterations.value, jl.batch_size.value, jl.learning_rate.value = 3, 2, 1e-3
    jl.controls.beta.value = 0.2
    jl.start_button.click()
    jl.wait()
    assert status_of(jl)[0] == "ok", status_of(jl)
    job_id = jl.job_id
    assert job_id is not None
    deadline = time.monotonic() + 60
    while (jl.job or {}).get("status") != "completed":
        assert time.monotonic() < deadline, service.get_job(job_id)
        assert (jl.job or {}).get("status") not in ("failed", "cancelled"), jl.job
        jl.poll_once()
        time.sleep(0.3)
    job = service.get_job(job_id)["job"]
    assert job["options"]["objective"] == objective and job["options"]["beta"] == 0.2
    assert [p[0] for p in jl.train_points] == [1.0, 2.0, 3.0]
    # The preference figures (a KTO batch may hold one side only: some step shows each).
    assert {"logpsChosen", "logpsRejected"} <= set(jl.figures)
    if objective == "dpo":
        assert "rewardMargin" in jl.figures
        assert "margin " in jl.info.value
    assert "logp+ " in jl.info.value or "logp- " in jl.info.value
    assert job["modelId"] in {m["id"] for m in service.list_models()["models"]}
    jl.close()
