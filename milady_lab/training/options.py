"""Checks for the options of a training job, all done before any process starts.

A body arrives from REST (JSON types), the CLI (strings) or the Python API. Every
field is checked here, cheaply: an unknown dataset or job id is a 404, a resume from a
job that cannot be resumed is a 409, anything else wrong is a 400. The expensive work
(resolving and converting the base model, reading the dataset) happens in the worker,
which reports its own failures on the job record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import msgspec

from .. import validation as v
from ..api.schema import Backend, JsonObject
from ..errors import ConflictError, InputError, NotFoundError
from ..state import StateStore
from .backends import best_backend, check_backend
from .controls import control_options, derived_length
from .distributed import check_layout, global_batch_size
from .request import (
    BACKENDS,
    FIELDS,
    MAX_ITERATIONS,
    MAX_TRAJECTORIES,
    Objective,
    RecordedOptions,
    Schedule,
    Strategy,
)

T = TypeVar("T")

#: Without a model-size default (``defaults.py`` gives batchSize, learningRate, loraRank).
DEFAULTS = {"iterations": 100, "batchSize": 4, "learningRate": 2e-4}

# A Hugging Face hub id: ``owner/name`` (owner optional for legacy ids is not accepted
# here: a bare word must be a friendly name, so typos get a helpful message).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


#: The dataset kind each objective trains on (``datasets.KINDS``).
OBJECTIVE_KINDS = {"sft": "sft", "dpo": "pairs", "kto": "labelled"}


@dataclass(frozen=True)
class JobOptions:
    """The validated options of one job; ``build_dataset`` means "build a dataset first"
    (of at most ``max_trajectories`` trajectories), which ``TrainingService`` does.

    A job body takes three forms: the REST body (``StartJobRequest``'s fields, checked
    here), these options, and what the job records (``to_record``: a
    ``RecordedOptions``, stored as camelCase JSON), from which the worker builds the
    engine's ``TrainSpec`` (``worker.train_spec``)."""

    dataset_id: str | None
    backend: str
    model: str
    #: None until the dataset is known when ``epochs`` is given (``for_dataset``).
    iterations: int | None
    batch_size: int
    learning_rate: float
    max_trajectories: int | None = None
    resume_from: str | None = None
    lora_rank: int | None = None
    lora_layers: int | Literal["all"] | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    devices: int = 1
    strategy: str = "ddp"
    nodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    build_dataset: bool = False
    epochs: float | None = None
    max_seq_length: int = 2048
    gradient_accumulation: int = 1
    warmup_steps: int | None = None
    lr_schedule: str = "cosine"
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "attention"
    seed: int = 0
    early_stopping_patience: int | None = None
    save_best: bool = True
    prompt_gradient_tokens: int | Literal["all"] = "all"
    objective: str = "sft"
    beta: float | None = None
    desirable_weight: float | None = None
    undesirable_weight: float | None = None

    @classmethod
    def from_body(cls, body: Any, store: StateStore) -> JobOptions:
        """Validate a request body against the current state (datasets, jobs, backends)."""
        b = v.body_object(body, FIELDS)
        resumed = _resumable_job(b.get("resumeFrom"), store)
        prior = _resumed_options(resumed)
        backend = _backend_choice(b.get("backend"), resumed, prior)
        model = _model_choice(b.get("model"), resumed, prior)
        numbers = _numbers(b, prior)
        controls = control_options(b, prior, model, resumed)
        objective = _objective(b, prior)
        dataset_id, build = _dataset_choice(
            b.get("datasetId"),
            prior.dataset_id,
            numbers.max_trajectories,
            store,
        )
        _check_kind(objective.objective, dataset_id, build, store)
        layout = check_layout(b, backend, prior if resumed is not None else None)
        opts = cls(
            dataset_id=dataset_id,
            backend=backend,
            model=model,
            resume_from=resumed["id"] if resumed is not None else None,
            build_dataset=build,
            iterations=numbers.iterations,
            eval_every=numbers.eval_every,
            checkpoint_every=numbers.checkpoint_every,
            max_trajectories=numbers.max_trajectories,
            batch_size=controls.batch_size,
            learning_rate=controls.learning_rate,
            lora_rank=controls.lora_rank,
            lora_layers=controls.lora_layers,
            epochs=controls.epochs,
            max_seq_length=controls.max_seq_length,
            gradient_accumulation=controls.gradient_accumulation,
            warmup_steps=controls.warmup_steps,
            lr_schedule=controls.lr_schedule,
            lora_alpha=controls.lora_alpha,
            lora_dropout=controls.lora_dropout,
            target_modules=controls.target_modules,
            seed=controls.seed,
            early_stopping_patience=controls.early_stopping_patience,
            save_best=controls.save_best,
            prompt_gradient_tokens=controls.prompt_gradient_tokens,
            objective=objective.objective,
            beta=objective.beta,
            desirable_weight=objective.desirable_weight,
            undesirable_weight=objective.undesirable_weight,
            devices=layout.devices,
            strategy=layout.strategy,
            nodes=layout.nodes,
            node_rank=layout.node_rank,
            rdzv_endpoint=layout.rdzv_endpoint,
        )
        if opts.objective != "sft" and opts.devices * opts.nodes > 1 and opts.strategy == "fsdp":
            raise InputError(
                f"objective {opts.objective!r} trains on several devices with strategy ddp, "
                "not fsdp (a preference step runs several forwards per backward, which "
                "fsdp's per-layer gathers do not pair up across ranks yet)"
            )
        if build:  # the length is derived once the dataset is built (``for_dataset``)
            return opts
        opts = opts.for_dataset(store.get_dataset(dataset_id) if dataset_id else None)
        if resumed is not None and resumed.get("checkpointIteration", 0) >= (opts.iterations or 0):
            raise InputError(
                f"job {resumed['id']} is checkpointed at iteration "
                f"{resumed['checkpointIteration']}; iterations must be larger to resume it"
            )
        return opts

    def for_dataset(self, dataset: Mapping[str, Any] | None) -> JobOptions:
        """These options with ``iterations``/``epochs`` derived from the
        dataset the job trains on (``controls.derived_length``)."""
        iterations, epochs = derived_length(self, dataset, DEFAULTS["iterations"])
        return replace(self, iterations=iterations, epochs=epochs)

    def to_record(self, dataset_id: str | None = None) -> RecordedOptions:
        """The options as recorded on the job (camelCase, only what was set), training
        on ``dataset_id`` when given (the dataset built for it)."""
        return RecordedOptions(
            dataset_id=dataset_id or self.dataset_id,
            backend=cast(Backend, self.backend),
            model=self.model,
            iterations=self.iterations,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            max_trajectories=self.max_trajectories,
            resume_from=self.resume_from,
            lora_rank=self.lora_rank,
            lora_layers=self.lora_layers,
            eval_every=self.eval_every,
            checkpoint_every=self.checkpoint_every,
            epochs=self.epochs,
            max_seq_length=self.max_seq_length,
            gradient_accumulation=self.gradient_accumulation,
            warmup_steps=self.warmup_steps,
            lr_schedule=cast(Schedule, self.lr_schedule),
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.target_modules,
            seed=self.seed,
            early_stopping_patience=self.early_stopping_patience,
            save_best=self.save_best,
            prompt_gradient_tokens=self.prompt_gradient_tokens,
            devices=self.devices,
            strategy=cast(Strategy, self.strategy),
            nodes=self.nodes,
            node_rank=self.node_rank,
            rdzv_endpoint=self.rdzv_endpoint,
            # The default is left out: SFT records stay as they were.
            objective=None if self.objective == "sft" else cast(Objective, self.objective),
            beta=self.beta,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
            global_batch_size=global_batch_size(
                self.batch_size, self.devices * self.nodes, self.gradient_accumulation
            ),
        )


def _resumed_options(resumed: Mapping[str, Any] | None) -> RecordedOptions:
    """The options a resumed run keeps: it continues the same training (same base
    model, backend, LoRA shape and, unless told otherwise, data and hyper-parameters).
    None set for a new job."""
    if resumed is None:
        return RecordedOptions()
    prior = RecordedOptions.of_job(resumed)
    return msgspec.structs.replace(
        prior,
        dataset_id=_kept(prior.dataset_id, resumed.get("datasetId")),
        backend=_kept(prior.backend, resumed["backend"]),
        model=_kept(prior.model, resumed["model"]),
        iterations=_kept(prior.iterations, resumed["totalIterations"]),
    )


def _kept(recorded: T | None, default: T) -> T:
    """A recorded option, or ``default`` when the record lacks it (an older job)."""
    return default if recorded is None else recorded


def _backend_choice(value: Any, resumed: Mapping[str, Any] | None, prior: RecordedOptions) -> str:
    """The backend asked for (the resumed job's, the best one here by default)."""
    backend = v.choice(value, "backend", BACKENDS)
    why = "its checkpoints are in that backend's format"
    if resumed is not None:
        backend = _as_resumed(backend, "backend", prior.backend, resumed, why)
    if backend is None:
        backend = best_backend()
    check_backend(backend)  # InputError when this machine lacks it
    return backend


def _model_choice(value: Any, resumed: Mapping[str, Any] | None, prior: RecordedOptions) -> str:
    """The base model asked for (the resumed job's, the default one otherwise)."""
    model = v.text(value, "model", max_length=1000)
    why = "its adapter was trained on that base model"
    if resumed is not None:
        model = _as_resumed(model, "model", prior.model, resumed, why)
    return check_model(model)


def _as_resumed(
    value: str | None, field: str, kept: str | None, resumed: Mapping[str, Any], why: str
) -> str | None:
    """A resumed job keeps its ``field``; asking for another value is a 400 saying why."""
    if value is not None and value != kept:
        raise InputError(f"{field} must be {kept!r} to resume job {resumed['id']} ({why})")
    return kept


@dataclass(frozen=True)
class _Numbers:
    """The run-length and bookkeeping options, as checked."""

    #: None: derived from ``epochs`` or the default, once the dataset is known.
    iterations: int | None
    eval_every: int | None
    checkpoint_every: int | None  # 0: none
    max_trajectories: int | None


def _numbers(b: JsonObject, prior: RecordedOptions) -> _Numbers:
    """The run-length and bookkeeping options; a resumed job's values by default
    (``controls`` checks the training controls)."""

    def integer(key: str, minimum: int, old: int | None) -> int | None:
        return v.integer(b.get(key), key, default=old, minimum=minimum, maximum=MAX_ITERATIONS)

    return _Numbers(
        iterations=integer("iterations", 1, prior.iterations),
        eval_every=integer("evalEvery", 1, prior.eval_every),
        checkpoint_every=integer("checkpointEvery", 0, prior.checkpoint_every),
        max_trajectories=v.integer(
            b.get("maxTrajectories"), "maxTrajectories", minimum=1, maximum=MAX_TRAJECTORIES
        ),
    )


@dataclass(frozen=True)
class _Objective:
    """``objective`` and its parameters, as checked."""

    objective: str
    beta: float | None
    desirable_weight: float | None
    undesirable_weight: float | None


def _objective(b: JsonObject, prior: RecordedOptions) -> _Objective:
    """``objective`` and its parameters (a resumed job's by default); β and the KTO
    weights only with an objective that reads them."""
    objective = v.choice(b.get("objective"), "objective", tuple(OBJECTIVE_KINDS))
    objective = objective or prior.objective or "sft"

    def parameter(key: str, applies: tuple[str, ...], old: float | None) -> float | None:
        value = v.number(b.get(key), key, exclusive_minimum=0.0, maximum=100.0)
        if value is not None and objective not in applies:
            raise InputError(f"{key} applies to objective {' or '.join(applies)} only")
        return value if value is not None else old

    return _Objective(
        objective=objective,
        beta=parameter("beta", ("dpo", "kto"), prior.beta),
        desirable_weight=parameter("desirableWeight", ("kto",), prior.desirable_weight),
        undesirable_weight=parameter("undesirableWeight", ("kto",), prior.undesirable_weight),
    )


def _check_kind(objective: str, dataset_id: str | None, build: bool, store: StateStore) -> None:
    """DPO trains on a ``pairs`` dataset, KTO on a ``labelled`` one, SFT on chat examples."""
    wanted = OBJECTIVE_KINDS[objective]
    if build:
        if objective != "sft":
            raise InputError(
                f'objective {objective!r} needs a dataset of kind "{wanted}": build one '
                f'(POST /datasets/build with "kind": "{wanted}") and give its datasetId'
            )
        return
    ds = store.get_dataset(dataset_id) if dataset_id else None
    kind = (ds or {}).get("kind") or "sft"
    if kind != wanted:
        raise InputError(
            f"dataset {dataset_id} is of kind {kind!r}; objective {objective!r} trains on a "
            f'dataset of kind "{wanted}"'
        )


def check_model(model: str | None) -> str:
    """A cheap shape check of the ``model`` option; the worker resolves it for real.

    Accepted: a friendly name from the base-model table, an existing folder or
    ``.gguf`` file, or a hub id (``owner/name``). Paths that do not exist and bare
    unknown words are rejected here so a typo never costs a worker start.
    """
    from .base_models import DEFAULT_MODEL

    if model is None:
        return DEFAULT_MODEL
    friendly = known_model_names()
    if model.strip().lower() in friendly:
        return model.strip().lower()
    if len(model) > 1024 or "\x00" in model:
        raise InputError("model must be a name, path or hub id of at most 1024 characters")
    try:
        resolved = _local_model_path(model)
    except (OSError, ValueError) as exc:  # e.g. a name too long for the filesystem
        raise InputError(f"model {model[:80]!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if resolved is not None:
        return resolved
    if _HUB_ID.fullmatch(model) and ".." not in model:
        return model
    names = ", ".join(sorted(friendly)) or "(none)"
    raise InputError(
        f"unknown model {model[:80]!r}: use one of {names}, a local model folder, "
        "a .gguf file or a Hugging Face hub id (owner/name)"
    )


def _local_model_path(model: str) -> str | None:
    """The resolved folder or .gguf file ``model`` names, or None when it is not a path."""
    looks_like_path = model.startswith(("/", ".", "~")) or model.endswith(".gguf") or "\\" in model
    try:
        path = Path(model).expanduser()
    except RuntimeError:  # "~name/..." for a user this machine does not know
        raise InputError(f"model {model[:80]!r}: no such user's home folder") from None
    if not looks_like_path and (_HUB_ID.fullmatch(model) or not path.exists()):
        return None
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):
        return str(path.resolve())
    if path.exists():
        raise InputError(f"model {model!r} is neither a model folder nor a .gguf file")
    raise InputError(f"model {model!r}: no such folder or .gguf file")


def known_model_names() -> set[str]:
    """The friendly base-model names (the default included), lower case."""
    from .base_models import DEFAULT_MODEL, FRIENDLY_MODELS

    return {DEFAULT_MODEL, *FRIENDLY_MODELS}


def _named_record(
    value: Any,
    field: str,
    kind: str,
    lookup: Callable[[str], Mapping[str, Any] | None],
    not_found: str = "",
) -> Mapping[str, Any]:
    """The stored record ``field`` names by id: 400 when it is no string, 404 (with
    ``not_found`` after the id) when no such ``kind`` exists."""
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string (a {kind} id)")
    if not v.is_valid_id(value):
        raise NotFoundError(f"no {kind} with id {value[:80]!r}{not_found}")
    record = lookup(value)
    if record is None:
        raise NotFoundError(f"no {kind} with id {value!r}{not_found}")
    return record


def _resumable_job(value: Any, store: StateStore) -> Mapping[str, Any] | None:
    """The job named by ``resumeFrom``: 404 when unknown, 409 when it cannot be resumed."""
    if value is None:
        return None
    job = _named_record(value, "resumeFrom", "job", store.get_job, " to resume from")
    if job["status"] not in ("cancelled", "failed"):
        raise ConflictError(
            f"job {value} is {job['status']}; only a cancelled or failed job can be resumed"
        )
    if not job.get("checkpointIteration") or checkpoint_path(store, job) is None:
        raise ConflictError(f"job {value} has no checkpoint to resume from")
    return job


def checkpoint_path(store: StateStore, job: Mapping[str, Any]) -> Path | None:
    """The folder of a job's last checkpoint, as its worker recorded it, if still on disk."""
    marker = store.path.parent / "jobs" / job["id"] / "checkpoint.json"
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        path = Path(info["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_dir() else None


def _dataset_choice(
    dataset_id: Any, prior: str | None, max_trajectories: int | None, store: StateStore
) -> tuple[str | None, bool]:
    """Which dataset to train on, or ``(None, True)`` when one must be built first."""
    if dataset_id is not None:
        ds = _named_record(dataset_id, "datasetId", "dataset", store.get_dataset)
        if max_trajectories is not None and ds["trajectoryCount"] > max_trajectories:
            raise InputError(
                f"dataset {dataset_id} holds {ds['trajectoryCount']} trajectories, more than "
                f"maxTrajectories={max_trajectories}; omit datasetId to build a smaller one"
            )
        return dataset_id, False
    if prior is not None and max_trajectories is None and store.get_dataset(prior) is not None:
        return prior, False
    if max_trajectories is not None:
        return None, True
    latest = store.list_datasets()
    if latest:
        return latest[0]["id"], False
    return None, True
