"""Job options and ids are checked before anything starts: 400, 404 and 409 cases,
and hostile ids that must never reach the filesystem. No worker is started here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError, InputError, NotFoundError
from milady_lab.state import StateStore, now_ms
from milady_lab.training.jobs import JobManager, new_id
from milady_lab.training.options import JobOptions, check_model

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import add_dataset


def _fake_job(store: StateStore, status: str, **fields: Any) -> str:
    job_id = new_id("job")
    store.insert_job(
        {
            "id": job_id,
            "status": status,
            "datasetId": None,
            "backend": "cpu",
            "model": "smollm2-135m-instruct",
            "createdAt": now_ms(),
            "totalIterations": 10,
            "options": {},
            **fields,
        }
    )
    return job_id


def test_defaults_and_coercion(settings: Settings, store: StateStore) -> None:
    ds = add_dataset(settings, store)
    opts = JobOptions.from_body(None, store)
    assert (opts.dataset_id, opts.backend, opts.model) == (ds, "cpu", "smollm2-135m-instruct")
    assert (opts.iterations, opts.batch_size, opts.learning_rate) == (100, 4, 2e-4)
    opts = JobOptions.from_body(
        {
            "iterations": "7",
            "batchSize": "2",
            "learningRate": "1e-3",
            "model": "LLAMA-3.2-3B",
            "checkpointEvery": 0,
        },
        store,
    )
    assert (opts.iterations, opts.batch_size, opts.learning_rate) == (7, 2, 1e-3)
    assert opts.model == "llama-3.2-3b" and opts.checkpoint_every == 0
    assert opts.to_record()["iterations"] == 7


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"numEpochs": 3}, "unknown field(s) numEpochs"),
        ([1, 2], "must be a JSON object"),
        ({"iterations": 0}, "iterations must be at least 1"),
        ({"iterations": "ten"}, "iterations must be an integer"),
        ({"iterations": 10**7}, "iterations must be at most"),
        ({"iterations": True}, "not a boolean"),
        ({"batchSize": 0}, "batchSize must be at least 1"),
        ({"batchSize": 4096}, "batchSize must be at most 1024"),
        ({"learningRate": 0}, "learningRate must be greater than 0"),
        ({"learningRate": "nan"}, "finite"),
        ({"learningRate": 2}, "learningRate must be at most 1"),
        ({"maxTrajectories": 0}, "maxTrajectories must be at least 1"),
        ({"datasetId": 7}, "datasetId must be a string"),
        ({"resumeFrom": ["job"]}, "resumeFrom must be a string"),
        ({"backend": "tpu"}, "backend must be one of mlx, cuda, cpu"),
        ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"model": "./missing-folder"}, "no such folder or .gguf file"),
        ({"model": "/etc/passwd"}, "neither a model folder nor a .gguf file"),
        ({"model": "a\x00b"}, "control characters"),
        ({"model": "../../x/y"}, "no such folder"),
    ],
)
def test_bad_options_are_input_errors(
    settings: Settings, store: StateStore, request_body: Any, message: str
) -> None:
    add_dataset(settings, store)
    with pytest.raises(InputError, match=None) as err:
        JobOptions.from_body(request_body, store)
    assert message in err.value.message


def test_cuda_without_gpu_is_an_input_error(settings: Settings, store: StateStore) -> None:
    from milady_lab.training.backends import available_backends

    if "cuda" in available_backends():
        pytest.skip("this machine has a GPU")
    add_dataset(settings, store)
    with pytest.raises(InputError, match="cuda"):
        JobOptions.from_body({"backend": "cuda"}, store)


def test_model_shapes(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert check_model(str(folder)) == str(folder.resolve())
    assert check_model(str(gguf)) == str(gguf.resolve())
    hub_id = "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert check_model(hub_id) == hub_id
    assert check_model(None) == "smollm2-135m-instruct"


def test_unknown_ids_are_404_and_touch_nothing(
    manager: JobManager, settings: Settings, store: StateStore
) -> None:
    add_dataset(settings, store)
    hostile = ["../../etc/passwd", "", "x" * 500, "a\x00b", "job-1' OR '1'='1", None, 7]
    for bad in hostile:
        with pytest.raises(NotFoundError):
            manager.get(bad)
        with pytest.raises(NotFoundError):
            manager.cancel(bad)
        if not isinstance(bad, str):  # absent (None) or not a string: 400, tested below
            continue
        with pytest.raises(NotFoundError):
            JobOptions.from_body({"datasetId": bad}, store)
        with pytest.raises(NotFoundError):
            JobOptions.from_body({"resumeFrom": bad}, store)
    with pytest.raises(NotFoundError, match="no dataset"):
        manager.start({"datasetId": "ds-nope"})
    assert store.list_jobs() == []
    assert not settings.jobs_dir.exists()


def test_resume_checks(settings: Settings, store: StateStore) -> None:
    ds = add_dataset(settings, store)
    done = _fake_job(store, "completed", datasetId=ds)
    with pytest.raises(ConflictError, match="only a cancelled or failed job"):
        JobOptions.from_body({"resumeFrom": done}, store)
    bare = _fake_job(store, "cancelled", datasetId=ds)
    with pytest.raises(ConflictError, match="no checkpoint"):
        JobOptions.from_body({"resumeFrom": bare}, store)
    # A cancelled job with a checkpoint on disk: options are inherited from it.
    ckpt = settings.jobs_dir / "x" / "checkpoints" / "4"
    ckpt.mkdir(parents=True)
    src = _fake_job(
        store,
        "cancelled",
        datasetId=ds,
        checkpointIteration=4,
        options={"batchSize": 2, "learningRate": 1e-3, "iterations": 10, "loraRank": 4},
    )
    marker = settings.jobs_dir / src / "checkpoint.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(f'{{"iteration": 4, "path": "{ckpt}"}}')
    opts = JobOptions.from_body({"resumeFrom": src}, store)
    assert (opts.dataset_id, opts.batch_size, opts.learning_rate) == (ds, 2, 1e-3)
    assert (opts.iterations, opts.lora_rank, opts.resume_from) == (10, 4, src)
    with pytest.raises(InputError, match="model must be"):
        JobOptions.from_body({"resumeFrom": src, "model": "llama-3.2-3b"}, store)
    with pytest.raises(InputError, match="iterations must be larger"):
        JobOptions.from_body({"resumeFrom": src, "iterations": 4}, store)


def test_dataset_choice(settings: Settings, store: StateStore) -> None:
    # No dataset at all: one must be built first (the manager builds it before queuing).
    assert JobOptions.from_body({}, store).build_dataset is True
    ds = add_dataset(settings, store, n=10)
    assert JobOptions.from_body({}, store).dataset_id == ds
    assert JobOptions.from_body({"maxTrajectories": 5}, store).build_dataset is True
    with pytest.raises(InputError, match="more than maxTrajectories=5"):
        JobOptions.from_body({"datasetId": ds, "maxTrajectories": 5}, store)
    assert JobOptions.from_body({"datasetId": ds, "maxTrajectories": 10}, store).dataset_id == ds


def test_no_dataset_and_none_buildable_is_an_input_error(manager: JobManager) -> None:
    trajectories = pytest.importorskip("milady_lab.trajectories")
    if not hasattr(trajectories, "open_source"):
        pytest.skip("trajectory sources not written yet")
    from milady_lab.service import TrainingService

    service = TrainingService(manager.settings, reconcile=False)
    with pytest.raises(InputError, match="could not build a dataset"):
        service.start_job({})  # the service builds the dataset a job needs
    assert manager.store.list_jobs() == []
