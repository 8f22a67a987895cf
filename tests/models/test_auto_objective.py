"""Auto-improve's ``objective`` (issue 27): the policy takes it (and β), a round builds
the dataset kind it trains on and passes the objective to its job; sft rounds as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_preferences import write_db

from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.models.auto import check_policy
from milady_lab.service import TrainingService


def test_policy_objective_and_beta() -> None:
    p = check_policy({"objective": "dpo", "beta": "0.2"}, {})
    assert (p["objective"], p["beta"]) == ("dpo", 0.2)
    assert check_policy({}, {})["objective"] == "sft"  # the default
    assert check_policy({"objective": None}, p)["objective"] == "sft"
    assert check_policy({"minNewTrajectories": 3}, p)["objective"] == "dpo"  # kept
    for bad in ({"objective": "ppo"}, {"beta": 0}, {"beta": "x"}):
        with pytest.raises(InputError):
            check_policy(bad, {})


@pytest.mark.parametrize(("objective", "kind"), [("dpo", "pairs"), ("kto", "labelled"),
                                                 ("sft", "sft")])  # fmt: skip
def test_a_round_builds_its_kind_and_passes_the_objective(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, objective: str, kind: str
) -> None:
    settings = Settings.from_env(
        home=tmp_path / "home", trajectories=write_db(tmp_path / "prefs.sqlite"),
        agent_config=tmp_path / "agent.json", cache=tmp_path / "cache",
    )  # fmt: skip
    svc = TrainingService(settings)
    started: list[dict[str, Any]] = []

    def start_job(body: dict[str, Any]) -> dict[str, Any]:  # what the round asks for
        started.append(body)
        return {"job": {"id": "job-x", "status": "queued"}}

    monkeypatch.setattr(svc, "start_job", start_job)
    try:
        svc.set_auto({"enabled": True, "minNewTrajectories": 1, "objective": objective,
                      "beta": 0.3, "backend": "cpu", "iterations": 2})  # fmt: skip
        assert svc.auto.tick()["kind"] == "auto_built"
        (ds,) = svc.list_datasets()["datasets"]
        assert ds["kind"] == kind
        assert svc.auto.tick()["kind"] == "auto_training"
        want = {"datasetId": ds["id"], "backend": "cpu", "iterations": 2}
        if objective != "sft":
            want |= {"objective": objective, "beta": 0.3}
        assert started == [want]
        assert svc.get_auto()["state"]["round"]["objective"] == objective
    finally:
        svc.close()
