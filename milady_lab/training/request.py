"""The body of ``POST /jobs`` as a msgspec struct: names, JSON types and bounds of every
job option, in one place that imports nothing of milady-lab but the API's field types;
and ``RecordedOptions``, the same fields as a job records them once resolved.

A leaf on purpose: ``options`` (which checks a body), ``controls`` (which reads the
bounds of the control fields), ``distributed`` (the device and node limits), the worker
and the CLI all take the fields from here, and none of them has to import another to
get them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from ..api.fields import ModelName
from ..api.records import Record

BACKENDS = ("mlx", "cuda", "cpu")
#: The choices of ``strategy``, ``lrSchedule`` and ``objective``.
Strategy = Literal["ddp", "fsdp"]
Schedule = Literal["constant", "cosine", "linear"]
Objective = Literal["sft", "dpo", "kto"]

MAX_ITERATIONS = 1_000_000
MAX_BATCH_SIZE = 1024
MAX_LORA_RANK = 512
MAX_TRAJECTORIES = 10_000_000
MAX_SEQ_LENGTH = 131_072
#: Processes on one machine (one per GPU; on CPU, at most one per core).
MAX_DEVICES = 64
MAX_NODES = 1024


class StartJobRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /jobs``: the one description of its fields (names, JSON types
    and bounds). ``openapi.json`` is generated from it (``milady_lab.api``); ``FIELDS``
    and the CLI flags derive from it; ``JobOptions.from_body`` checks a body with these
    bounds."""

    dataset_id: Annotated[
        str | None,
        msgspec.Meta(
            description=(
                "Dataset to train on (latest when omitted; one is built when there is none)"
            )
        ),
    ] = None
    backend: Annotated[
        Literal["mlx", "cuda", "cpu"] | None,
        msgspec.Meta(description="Training backend (the best one this machine has when omitted)"),
    ] = None
    model: Annotated[
        ModelName | None,
        msgspec.Meta(
            description=(
                "Base model: a friendly name, a local Hugging Face folder, a .gguf file or a hub id"
            )
        ),
    ] = None
    iterations: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_ITERATIONS)] | None,
        msgspec.Meta(description="Optimizer steps (default 100); or give epochs"),
    ] = None
    batch_size: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] | None,
        msgspec.Meta(
            description=("Examples per micro-batch (default per model size: 4 up to 3B, 2 from 7B)")
        ),
    ] = None
    learning_rate: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=1)] | None,
        msgspec.Meta(
            description=(
                "Peak learning rate (default per model size: 2e-4 up to 0.5B, 1e-4 "
                "at 1–3B, 5e-5 from 7B)"
            )
        ),
    ] = None
    max_trajectories: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_TRAJECTORIES)] | None,
        msgspec.Meta(
            description=(
                "Build a dataset of at most this many trajectories (when datasetId is omitted)"
            )
        ),
    ] = None
    resume_from: Annotated[
        str | None,
        msgspec.Meta(description="Resume a cancelled or failed job from its last checkpoint"),
    ] = None
    lora_rank: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_LORA_RANK)] | None,
        msgspec.Meta(description="LoRA rank (default per model size: 8 up to 0.5B, 16 above)"),
    ] = None
    eval_every: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_ITERATIONS)] | None,
        msgspec.Meta(description="Validation loss every N iterations"),
    ] = None
    #: 0: no checkpoints.
    checkpoint_every: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=MAX_ITERATIONS)] | None,
        msgspec.Meta(description="Checkpoint every N iterations (0: no checkpoints)"),
    ] = None
    # -- training controls (``controls.py``) --
    #: Alternative to ``iterations`` (exactly one of them); may be fractional.
    epochs: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None,
        msgspec.Meta(
            description=(
                "Passes over the training examples, instead of iterations (give one "
                "of the two; the other is derived and recorded). One iteration is "
                "one optimizer step over batchSize × gradientAccumulation examples"
            )
        ),
    ] = None
    max_seq_length: Annotated[
        Annotated[int, msgspec.Meta(ge=16, le=MAX_SEQ_LENGTH)] | None,
        msgspec.Meta(
            description=(
                "Tokens per example (default 2048). Longer examples lose tokens "
                "from the left of the prompt, never the reply; one whose reply "
                "alone is longer is dropped. The job reports truncatedExamples and "
                "droppedExamples"
            )
        ),
    ] = None
    gradient_accumulation: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] | None,
        msgspec.Meta(
            description=(
                "Micro-batches of batchSize per optimizer step (default 1); the "
                "update equals that of one batch of batchSize × "
                "gradientAccumulation"
            )
        ),
    ] = None
    warmup_steps: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=MAX_ITERATIONS)] | None,
        msgspec.Meta(
            description=(
                "Linear warmup steps of the learning rate (default 5 % of the iterations, 1 to 100)"
            )
        ),
    ] = None
    lr_schedule: Annotated[
        Schedule | None,
        msgspec.Meta(
            description=(
                "Learning rate after warmup: constant, or a cosine or linear decay "
                "to 10 % of learningRate at the last iteration (default cosine)"
            )
        ),
    ] = None
    lora_alpha: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None,
        msgspec.Meta(
            description=(
                "LoRA alpha (default 2 × loraRank); the adapter is scaled by loraAlpha / loraRank"
            )
        ),
    ] = None
    lora_dropout: Annotated[
        Annotated[float, msgspec.Meta(ge=0, lt=1)] | None,
        msgspec.Meta(description="Dropout on the LoRA input (default 0)"),
    ] = None
    #: ``attention``, ``all-linear`` or module names.
    target_modules: Annotated[
        Literal["attention", "all-linear"]
        | Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
            msgspec.Meta(min_length=1, max_length=64),
        ]
        | None,
        msgspec.Meta(
            description=(
                "Layers that get LoRA adapters: attention (q/k/v/o projections, the "
                "default), all-linear, or a list of module names (checked against "
                "the model's architecture where it is known)"
            )
        ),
    ] = None
    seed: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] | None,
        msgspec.Meta(
            description="Seed of the data order, LoRA initialisation and dropout (default 0)"
        ),
    ] = None
    #: Evaluations without a lower valLoss before the run stops (None: never).
    early_stopping_patience: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None,
        msgspec.Meta(
            description=(
                "Stop after this many evaluations (every evalEvery iterations) "
                "without a lower valLoss; the job completes with stoppedEarly true. "
                "Needs validation examples"
            )
        ),
    ] = None
    save_best: Annotated[
        bool | None,
        msgspec.Meta(
            description=(
                "Register the adapter with the lowest valLoss (default true); the "
                "last adapter stays in the job folder (lastAdapterPath)"
            )
        ),
    ] = None
    # Several devices and machines (``distributed.py``): processes per machine ("auto":
    # every GPU), how the model is spread, and torchrun's c10d rendezvous.
    devices: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_DEVICES)] | Literal["auto"] | None,
        msgspec.Meta(
            description=(
                'Processes per machine, one per GPU (default 1); "auto": every GPU '
                "torch sees (1 on cpu and mlx). More than 1 trains through "
                "torchrun; only cuda and cpu (gloo)"
            )
        ),
    ] = None
    strategy: Annotated[
        Strategy | None,
        msgspec.Meta(
            description=(
                "With several processes: ddp (each holds the whole model; default) "
                "or fsdp (FSDP2 shards the frozen base, LoRA weights and optimizer "
                "state)"
            )
        ),
    ] = None
    nodes: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_NODES)] | None,
        msgspec.Meta(
            description=(
                "Machines training this job together (default 1); each starts the "
                "same job with its own nodeRank"
            )
        ),
    ] = None
    node_rank: Annotated[
        Annotated[int, msgspec.Meta(ge=0, le=MAX_NODES - 1)] | None,
        msgspec.Meta(
            description="This machine's place among the nodes (0: it serves the rendezvous)"
        ),
    ] = None
    rdzv_endpoint: Annotated[
        Annotated[str, msgspec.Meta(min_length=1, max_length=300)] | None,
        msgspec.Meta(
            description=(
                "host:port of torchrun's c10d rendezvous on the machine with "
                "nodeRank 0 (only with nodes > 1)"
            )
        ),
    ] = None
    # Preference training (issue 27, ``preference.py``): DPO on a ``pairs`` dataset,
    # KTO on a ``labelled`` one; β and KTO's weights of desirable/undesirable examples.
    objective: Annotated[
        Objective | None,
        msgspec.Meta(
            description=(
                "sft (default): imitate the replies; dpo: prefer chosen over "
                "rejected (a dataset of kind pairs); kto: desirable over "
                "undesirable (a dataset of kind labelled). The reference policy is "
                "the base model with the adapter turned off"
            )
        ),
    ] = None
    beta: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=100)] | None,
        msgspec.Meta(
            description=(
                "dpo/kto: the strength of the pull back to the reference policy (default 0.1)"
            )
        ),
    ] = None
    desirable_weight: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=100)] | None,
        msgspec.Meta(description="kto: weight of desirable examples (default 1)"),
    ] = None
    undesirable_weight: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=100)] | None,
        msgspec.Meta(description="kto: weight of undesirable examples (default 1)"),
    ] = None


#: Python attribute / CLI flag → REST body field, for every job option.
FIELD_NAMES = {f.name: f.encode_name for f in msgspec.structs.fields(StartJobRequest)}
#: Request keys (camelCase, as in the REST body) a job body may hold.
FIELDS = tuple(FIELD_NAMES.values())


class RecordedOptions(StartJobRequest, Record, forbid_unknown_fields=False, omit_defaults=True):
    """A job's options as recorded on it (``job["options"]``, camelCase in the database
    and the REST answer): the ``StartJobRequest`` fields with their resolved values (only
    what is set; ``objective`` only when it is not ``sft``), plus ``globalBatchSize``.

    The one stored form: ``JobOptions.to_record`` makes it, ``to_dict`` stores it,
    ``RecordedOptions.of_job`` reads it back (a resumed job's defaults, the worker's
    ``TrainSpec``, the run's ``Layout``). It reads like the JSON it is (``rec["seed"]``).
    Unknown keys are ignored and every field is optional: records written by an older
    version still decode.
    """

    #: The resolved model: a friendly name, a resolved path or a hub id.
    model: str | None = None
    #: ``attention``, ``all-linear`` or module names (a tuple once decoded).
    target_modules: str | tuple[str, ...] | None = None
    #: Given, or derived from the iterations (then beyond the bound a body may give).
    epochs: float | None = None
    #: Examples per optimizer step over every rank (the loss depends on it).
    global_batch_size: int | None = None

    @classmethod
    def of_job(cls, job: Mapping[str, Any]) -> RecordedOptions:
        """The options recorded on a job row (none for a job recorded without them)."""
        return msgspec.convert(job.get("options") or {}, cls)
