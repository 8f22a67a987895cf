"""Fixtures for the panel tests: a state home over demo trajectories, a real service,
and a tiny Llama to train for real in a few seconds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from training.conftest import smollm2_dir, tiny_llama_dir

from milady_lab.config import Settings
from milady_lab.demo import write_demo_db
from milady_lab.service import TrainingService
from milady_lab.widgets import LocalData

__all__ = ["smollm2_dir", "tiny_llama_dir"]  # fixtures shared with tests/training

DEMO_COUNT = 120
DEMO_SEED = 11


@pytest.fixture(scope="session")
def widget_demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo trajectory database for the session (sources open it read-only)."""
    return write_demo_db(
        tmp_path_factory.mktemp("demo") / "trajectories.sqlite",
        count=DEMO_COUNT,
        seed=DEMO_SEED,
        shape="regular",
    )


@pytest.fixture
def settings(tmp_path: Path, widget_demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Workers inherit these: one thread each, the machine is shared.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    home = tmp_path / "home"
    home.mkdir()
    return Settings.from_env(
        home=home,
        trajectories=widget_demo_db,
        agent_config=tmp_path / "milady.json",
        cache=tmp_path / "cache",
    )


@pytest.fixture
def service(settings: Settings) -> Iterator[TrainingService]:
    svc = TrainingService(settings)
    yield svc
    stop_jobs(svc)
    svc.close()


@pytest.fixture
def backend(service: TrainingService) -> LocalData:
    return LocalData(service)


def stop_jobs(svc: TrainingService) -> None:
    """Cancel what a test left running and make sure no worker survives it."""
    for job in svc.store.list_jobs(("queued", "running")):
        with contextlib.suppress(Exception):
            svc.cancel_job(job["id"])
    for job in svc.store.list_jobs():
        pid = job.get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def tiny_model(tiny_llama_dir: Path) -> Path:
    """The training tests' tiny Llama (SmolLM2's tokenizer): trains in seconds."""
    return tiny_llama_dir


def register_model(svc: TrainingService, **extra: Any) -> dict[str, Any]:
    """A model record as a completed job leaves it (for the ModelManager tests)."""
    from milady_lab.state import now_ms

    rec = {
        "id": f"m-{now_ms()}",
        "jobId": "job-x",
        "name": "smollm2-135m-instruct-demo-v1",
        "createdAt": now_ms(),
        "active": False,
        "adapterPath": str(svc.settings.models_dir / "nowhere"),
        "baseModel": "smollm2-135m-instruct",
        "backend": "cpu",
        "finalLoss": 1.234,
        **extra,
    }
    svc.store.insert_model(rec)
    return rec


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
