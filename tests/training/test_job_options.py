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
from milady_lab.training.request import RecordedOptions
from milady_lab.training.spec import TrainSpec
from milady_lab.training.worker import train_spec

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
    # Recorded before loraLayers existed: it adapted every layer, and goes on so.
    assert opts.lora_layers is None
    assert JobOptions.from_body({"resumeFrom": src, "loraLayers": "all"}, store)
    with pytest.raises(InputError, match=r"loraLayers must match job .* \('all'\)"):
        JobOptions.from_body({"resumeFrom": src, "loraLayers": 8}, store)


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


def _spec(options: RecordedOptions, folder: Path) -> TrainSpec:
    return train_spec(
        options,
        job_id="job-1",
        backend="cpu",
        model="m",
        iterations=5,
        dataset_dir=folder,
        output_dir=folder,
        job_dir=folder,
    )


def test_recorded_options_round_trip_into_the_spec(
    settings: Settings, store: StateStore, tmp_path: Path
) -> None:
    """What a job records is what its worker trains with: the options go to the database
    as camelCase JSON and come back as the same ``TrainSpec`` fields."""
    ds = add_dataset(settings, store, n=10)
    body = {
        "datasetId": ds,
        "iterations": 5,
        "batchSize": 2,
        "loraRank": 4,
        "seed": 3,
        "targetModules": ["q_proj", "v_proj"],
        "lrSchedule": "linear",
        "saveBest": False,
        "loraLayers": 6,
        "promptGradientTokens": 64,
    }
    stored = JobOptions.from_body(body, store).to_record().to_dict()
    assert list(stored["targetModules"]) == ["q_proj", "v_proj"]
    assert (stored["globalBatchSize"], stored["loraAlpha"], stored["saveBest"]) == (2, 8.0, False)
    assert "objective" not in stored and "buildDataset" not in stored
    job_id = _fake_job(store, "queued", datasetId=ds, totalIterations=5, options=stored)
    job = store.get_job(job_id)
    assert job is not None
    spec = _spec(RecordedOptions.of_job(job), tmp_path)
    assert (spec.batch_size, spec.lora_rank, spec.lora_alpha, spec.seed) == (2, 4, 8.0, 3)
    assert spec.target_modules == ("q_proj", "v_proj") and spec.lr_schedule == "linear"
    assert spec.save_best is False and spec.last_dir == tmp_path / "last-adapter"
    assert spec.lora_layers == 6 and spec.prompt_gradient_tokens == 64
    whole = JobOptions.from_body({**body, "promptGradientTokens": "all"}, store).to_record()
    assert _spec(whole, tmp_path).prompt_gradient_tokens is None
    # Recorded before it existed: gradients through the whole example, as then; so does
    # its resume, unless told otherwise.
    assert _spec(RecordedOptions(), tmp_path).prompt_gradient_tokens is None
    every = JobOptions.from_body({**body, "loraLayers": "all"}, store).to_record()
    assert every["loraLayers"] == "all" and _spec(every, tmp_path).lora_layers is None
    assert _spec(RecordedOptions(), tmp_path).lora_layers is None  # recorded before it existed


def test_older_records_train_with_the_defaults_of_their_time(tmp_path: Path) -> None:
    """A job recorded before an option existed keeps ``TrainSpec``'s default for it (and
    ``loraAlpha`` = 2 × its rank); keys this version does not know are ignored."""
    old = RecordedOptions.of_job({"options": {"loraRank": 16, "batchSize": 8, "retired": 1}})
    spec = _spec(old, tmp_path)
    assert (spec.lora_rank, spec.lora_alpha, spec.batch_size) == (16, 32.0, 8)
    assert spec.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (spec.objective, spec.strategy, spec.learning_rate) == ("sft", "ddp", 2e-4)
    assert RecordedOptions.of_job({"options": None}) == RecordedOptions()
    # Epochs derived from many iterations over a small dataset exceed what a body may give.
    assert RecordedOptions.of_job({"options": {"epochs": 5e6}}).epochs == 5e6
