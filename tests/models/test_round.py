"""One round, two callers (issue 24): ``make demo`` and auto-improve both run
``models/round.py``, so on the same trajectories and tiny model they take the same steps
and both leave the agent pointed at the model they trained; a round whose job fails ends
``auto_failed`` with the job's reason in either."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from test_datasets import make_db

from milady_lab import demo_pipeline
from milady_lab.config import Settings
from milady_lab.models.round import RoundSettings, RoundState, Step, run_round
from milady_lab.service import TrainingService

from .conftest import agent_reply
from .ollama_standin import OllamaStandIn


def _rows(n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(3)
    return [
        (f"t-{i}", 1_700_000_000_000 + i, [
            {"callId": f"c-{i}", "model": "m", "purpose": "response",
             "systemPrompt": "You are Milady. Answer in <response> XML.",
             "userPrompt": f"hello friend {i} how are you", "response": agent_reply(rng)}
        ])
        for i in range(n)
    ]  # fmt: skip


def _primary(config: Path) -> str:
    return json.loads(config.read_text())["agents"]["defaults"]["model"]["primary"]


@pytest.mark.slow
def test_the_demo_and_auto_improve_take_the_same_round(
    tmp_path: Path,
    tiny_base: Path,
    ollama: OllamaStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    db = make_db(tmp_path / "traj.sqlite", _rows(30))

    # auto-improve, by itself: one round, ticked to its end
    settings = Settings.from_env(
        home=tmp_path / "auto", trajectories=db, agent_config=tmp_path / "agent.json",
        cache=tmp_path / "cache",
    )  # fmt: skip
    settings.agent_config.write_text("{}\n")
    svc = TrainingService(settings)
    try:
        svc.set_auto({
            "enabled": True, "minNewTrajectories": 10, "iterations": 2, "backend": "cpu",
            "model": str(tiny_base), "activate": "if-better", "maxExamples": 4,
            "ollamaUrl": ollama.url, "ollamaBaseModel": "tiny:1",
        })  # fmt: skip
        svc.auto.run_once(0.5, 240)
        auto_round = svc.get_auto()["state"]["lastRound"]
        logged = [e["kind"] for e in svc.events() if e["kind"] not in ("auto_policy",)]
        auto_model = svc.list_models()["models"][0]
    finally:
        svc.close()

    # make demo, on the same trajectories, in a home of its own
    monkeypatch.setenv("MILADY_LAB_HOME", str(tmp_path / "demo"))
    monkeypatch.setenv("MILADY_LAB_TRAJECTORIES", str(db))
    monkeypatch.setenv("MILADY_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MILADY_LAB_AGENT_CONFIG", raising=False)  # its scratch config
    code = demo_pipeline.main([
        "--iterations", "2", "--model", str(tiny_base), "--backend", "cpu",
        "--benchmark-examples", "4", "--ollama-url", ollama.url, "--ollama-base-model", "tiny:1",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out

    steps = ["built", "training", "trained", "benchmarked", "activated"]
    assert [s.removeprefix("auto_") for s in auto_round["steps"]] == steps, auto_round
    shown = re.search(r"^round demo-\d+: (.+)$", out, re.MULTILINE)
    assert shown is not None, out
    assert shown.group(1).split(" → ") == steps
    # auto-improve logs every step as an event but ``trained`` (the job's events tell it)
    auto_events = [k for k in logged if k.startswith("auto_")]
    assert auto_events == ["auto_built", "auto_training", "auto_benchmarked", "auto_activated"]

    # both trained, benchmarked, imported and activated their model the same way
    assert _primary(settings.agent_config) == f"ollama/{auto_model['ollamaName']}"
    demo_home = TrainingService(Settings.from_env(), reconcile=False)
    try:
        (demo_model,) = demo_home.list_models()["models"]
        assert demo_model["active"] and demo_model["benchmark"]["scores"]["formatValid"] is not None
        scratch = demo_home.settings.home / "agent" / "milady.json"
    finally:
        demo_home.close()
    assert _primary(scratch) == f"ollama/{demo_model['ollamaName']}"
    assert f"activated ollama/{demo_model['ollamaName']} in {scratch}" in out
    assert "| formatValid |" in out  # the demo's benchmark table


def test_a_round_whose_job_fails_ends_failed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env(
        home=tmp_path / "home", trajectories=make_db(tmp_path / "traj.sqlite", _rows(12)),
        agent_config=tmp_path / "agent.json", cache=tmp_path / "cache",
    )  # fmt: skip
    svc = TrainingService(settings)
    monkeypatch.setattr(svc, "start_job", lambda body: {"job": {"id": "job-x"}})
    monkeypatch.setattr(
        svc, "get_job", lambda job_id: {"job": {"id": job_id, "status": "failed",
                                                "error": "out of memory"}},
    )  # fmt: skip
    seen: list[Step] = []
    try:
        rnd = run_round(svc, RoundSettings(), RoundState(id="r-1"), seen.append, poll_s=0)
    finally:
        svc.close()
    assert rnd.steps == ["auto_built", "auto_training", "auto_failed"]
    assert [s.kind for s in seen] == rnd.steps
    assert rnd.outcome == "auto_failed"
    assert rnd.message == "training job job-x failed: out of memory"
    assert rnd.dataset_id == seen[0].fields["datasetId"]  # built for real
