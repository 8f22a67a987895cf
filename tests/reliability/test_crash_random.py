"""kill -9 at random moments during a dataset build, a model registration (the worker's
completion transaction) and an activation (the agent config write), many times over,
checking the invariants after every kill.

Each victim is a real process running the real code (``TrainingService`` calls, the
worker's own ``_complete``), forked from a fork server that imported milady-lab once,
so an iteration costs a fork instead of an interpreter start. A few build iterations
kill a real ``milady-lab datasets build`` CLI process instead. The default run makes
~10 kills per scenario; ``make test-soak`` makes ≥ 100.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.datasets import build as ds
from milady_lab.service import TrainingService
from milady_lab.state import StateStore, now_ms

from .relkit import (
    CLI,
    ForkServer,
    config_violations,
    dataset_violations,
    store_violations,
    wait_gone,
)

SEED = 20260808


def _settings(tmp_path: Path, demo_db: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings.from_env(
        home=home,
        trajectories=demo_db,
        agent_config=tmp_path / "agent" / "milady.json",
        cache=tmp_path / "cache",
    )


def _args(s: Settings, **extra: Any) -> dict[str, Any]:
    return {
        "home": s.home,
        "trajectories": s.trajectories,
        "agent_config": s.agent_config,
        "cache": s.cache,
        **extra,
    }


def _build_window(s: Settings) -> float:
    """Seconds one full build takes here: kills land anywhere within ~2 builds."""
    svc = TrainingService(s, reconcile=False)
    t = time.perf_counter()
    svc.build_dataset({})
    svc.close()
    return max(0.2, time.perf_counter() - t)


# -- dataset builds --------------------------------------------------------------------------
def _kill_builds(tmp_path: Path, demo_db: Path, n: int, figures: Any, name: str) -> None:
    s = _settings(tmp_path, demo_db)
    window = 2.5 * _build_window(s)
    rng = random.Random(SEED)
    violations: list[str] = []
    t0 = time.monotonic()
    cli_kills = 0
    checked: set[str] = set()
    with ForkServer() as fs:
        for i in range(n):
            if i % 5 == 4:  # every fifth victim is the real CLI, killed mid-build
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        CLI,
                        "--home",
                        str(s.home),
                        "--trajectories",
                        s.trajectories,
                        "datasets",
                        "build",
                        "--json",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(rng.uniform(0.5, 3.0))  # imports, then the build
                proc.kill()
                proc.wait(10)
                cli_kills += 1
            else:
                pid = fs.start("build", _args(s), seed=rng.randrange(2**32))
                time.sleep(rng.uniform(0, window))
                fs.kill(pid)
                wait_gone(pid)
            store = StateStore(s.state_db)
            try:
                found = store_violations(s) + dataset_violations(s, store, checked)
            finally:
                store.close()
            violations += [f"kill {i}: {v}" for v in found]
    # The next build sweeps what the kills left: no temp folder (its lock died with its
    # process) and every complete orphan folder recovered; all of it consistent.
    ds.SWEEP_MIN_AGE_S, old = 0.0, ds.SWEEP_MIN_AGE_S
    try:
        svc = TrainingService(s, reconcile=False)
        svc.build_dataset({"limit": 5})
        left = [e.name for e in s.datasets_dir.iterdir() if e.name.startswith(".tmp-")]
        violations += [f"after sweep: {e} left" for e in left]
        violations += [f"after sweep: {v}" for v in dataset_violations(s, svc.store)]
        listed = {d["id"] for d in svc.store.list_datasets()}
        on_disk = {e.name for e in s.datasets_dir.iterdir()}
        violations += [f"after sweep: unlisted folder {e}" for e in on_disk - listed]
        svc.close()
    finally:
        ds.SWEEP_MIN_AGE_S = old
    figures.add(
        name, n, len(violations), time.monotonic() - t0, cliKills=cli_kills, datasets=len(listed)
    )
    assert violations == []


def test_kill_dataset_build_at_random_points(tmp_path, demo_db, figures) -> None:
    _kill_builds(tmp_path, demo_db, 10, figures, "kill -9 mid dataset build")


@pytest.mark.soak
def test_soak_kill_dataset_build(tmp_path, demo_db, figures) -> None:
    _kill_builds(tmp_path, demo_db, 120, figures, "soak: kill -9 mid dataset build")


# -- model registration ------------------------------------------------------------------------
def _registration_violations(s: Settings) -> list[str]:
    """After a restart (reconcile): every job completed with exactly one complete model,
    or failed with a reason and none; no temp or unregistered adapter folder left."""
    svc = TrainingService(s)  # a new server / CLI process: reconciles
    try:
        out = []
        models = svc.store.list_models()
        by_job: dict[str, list[dict[str, Any]]] = {}
        for m in models:
            by_job.setdefault(m["jobId"], []).append(m)
            adapter = Path(m["adapterPath"])
            files = sorted(p.name for p in adapter.iterdir()) if adapter.is_dir() else []
            if files != ["adapter_config.json", "adapter_model.safetensors"]:
                out.append(f"model {m['id']} registered with adapter files {files}")
            elif (adapter / "adapter_model.safetensors").stat().st_size != 256 * 1024:
                out.append(f"model {m['id']}: a partial adapter file")
        for job in svc.list_jobs()["jobs"]:
            mine = by_job.get(job["id"], [])
            if job["status"] == "completed":
                if len(mine) != 1:
                    out.append(f"completed job {job['id']} has {len(mine)} models")
            elif job["status"] == "failed":
                if mine:
                    out.append(f"failed job {job['id']} has a model")
                if "is gone" not in (job.get("error") or ""):
                    out.append(f"failed job {job['id']} without a reason: {job['error']!r}")
            else:
                out.append(f"job {job['id']} left {job['status']} after its worker died")
        known = {Path(m["adapterPath"]).name for m in models}
        for entry in s.models_dir.iterdir() if s.models_dir.is_dir() else []:
            if entry.name not in known:
                out.append(f"models/{entry.name} left behind (partial or unregistered)")
        return out + store_violations(s)
    finally:
        svc.close()


def _kill_registrations(tmp_path: Path, demo_db: Path, n: int, figures: Any, name: str) -> None:
    s = _settings(tmp_path, demo_db)
    TrainingService(s).close()
    rng = random.Random(SEED + 1)
    violations: list[str] = []
    t0 = time.monotonic()
    with ForkServer() as fs:
        for i in range(n):
            pid = fs.start("register", _args(s), seed=rng.randrange(2**32))
            time.sleep(rng.uniform(0, 0.25))
            fs.kill(pid)
            violations += [f"kill {i}: {v}" for v in _registration_violations(s)]
    store = StateStore(s.state_db)
    completed = len(store.list_jobs(("completed",)))
    failed = len(store.list_jobs(("failed",)))
    store.close()
    figures.add(
        name, n, len(violations), time.monotonic() - t0, completedJobs=completed, failedJobs=failed
    )
    assert violations == []
    assert failed >= 1  # every kill interrupted one registration at least


def test_kill_model_registration_at_random_points(tmp_path, demo_db, figures) -> None:
    _kill_registrations(tmp_path, demo_db, 10, figures, "kill -9 mid model registration")


@pytest.mark.soak
def test_soak_kill_model_registration(tmp_path, demo_db, figures) -> None:
    _kill_registrations(tmp_path, demo_db, 120, figures, "soak: kill -9 mid model registration")


# -- activation --------------------------------------------------------------------------------
USER_CONFIG = {
    "keep": "me",
    "agents": {"defaults": {"model": {"primary": "anthropic/claude"}, "other": [1, 2]}},
    "env": {"HOME_KEY": "x"},
    "plugins": {"list": ["a", "b"] * 50},
}


def _models(store: StateStore, home: Path, n: int) -> list[str]:
    ids = []
    for i in range(n):
        job_id, model_id = f"job-act-{i}", f"model-act-{i}"
        store.insert_job(
            {
                "id": job_id,
                "status": "completed",
                "backend": "cpu",
                "model": "m",
                "createdAt": now_ms(),
                "totalIterations": 1,
                "options": {},
            }
        )
        store.insert_model(
            {
                "id": model_id,
                "jobId": job_id,
                "name": f"m-v{i}",
                "createdAt": now_ms(),
                "active": False,
                "adapterPath": str(home / "models" / model_id),
                "baseModel": "m",
                "backend": "cpu",
            }
        )
        ids.append(model_id)
    return ids


def _kill_activations(tmp_path: Path, demo_db: Path, n: int, figures: Any, name: str) -> None:
    s = _settings(tmp_path, demo_db)
    s.agent_config.parent.mkdir(parents=True)
    s.agent_config.write_text(json.dumps(USER_CONFIG, indent=4) + "\n")
    store = StateStore(s.state_db)
    models = _models(store, s.home, 3)
    providers = [f"ollama/prov-{k}" for k in range(5)]
    keep = {k: v for k, v in USER_CONFIG.items() if k != "agents"}
    rng = random.Random(SEED + 2)
    violations: list[str] = []
    t0 = time.monotonic()
    with ForkServer() as fs:
        for i in range(n):
            pid = fs.start(
                "activation",
                _args(s, models=models, providers=providers),
                seed=rng.randrange(2**32),
            )
            time.sleep(rng.uniform(0, 0.2))
            fs.kill(pid)
            found = config_violations(s.agent_config, keep, {*providers, "anthropic/claude"})
            cfg = json.loads(s.agent_config.read_text())
            if cfg["agents"]["defaults"].get("other") != [1, 2]:
                found.append("agents.defaults.other lost")
            active = [m for m in store.list_models() if m["active"]]
            if len(active) > 1:
                found.append(f"{len(active)} active models")
            found += store_violations(s)
            violations += [f"kill {i}: {v}" for v in found]
    # One more activation after all the kills: it works, and no temp file is left behind.
    svc = TrainingService(s, reconcile=False)
    body = {"providerModel": "ollama/final", "force": True}
    assert svc.activate_model(models[0], body)["ok"] is True
    strays = [
        p.name
        for p in s.agent_config.parent.iterdir()
        if p.name not in ("milady.json", "milady.json.lock")
    ]
    violations += [f"left in the agent's folder: {p}" for p in strays]
    svc.close()
    store.close()
    figures.add(name, n, len(violations), time.monotonic() - t0)
    assert violations == []


def test_kill_activation_at_random_points(tmp_path, demo_db, figures) -> None:
    _kill_activations(tmp_path, demo_db, 10, figures, "kill -9 mid activation")


@pytest.mark.soak
def test_soak_kill_activation(tmp_path, demo_db, figures) -> None:
    _kill_activations(tmp_path, demo_db, 150, figures, "soak: kill -9 mid activation")
