"""The body of ``POST /jobs`` as a msgspec struct: names, JSON types and bounds of every
job option, in one place that imports nothing of milady-lab.

A leaf on purpose: ``options`` (which checks a body), ``controls`` (which reads the
bounds of the control fields), ``distributed`` (the device and node limits), the worker
and the CLI all take the fields from here, and none of them has to import another to
get them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

BACKENDS = ("mlx", "cuda", "cpu")

MAX_ITERATIONS = 1_000_000
MAX_BATCH_SIZE = 1024
MAX_LORA_RANK = 512
MAX_TRAJECTORIES = 10_000_000
MAX_SEQ_LENGTH = 131_072
#: Processes on one machine (one per GPU; on CPU, at most one per core).
MAX_DEVICES = 64
MAX_NODES = 1024


class JobRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /jobs``: the one description of its fields (names, JSON types
    and bounds). ``openapi.json``'s ``StartJobRequest`` is tested against it
    (``tests/rest_api/test_openapi_bodies.py``); ``FIELDS`` and the CLI flags derive
    from it; ``JobOptions.from_body`` checks a body with these bounds."""

    dataset_id: str | None = None
    backend: Literal["mlx", "cuda", "cpu"] | None = None
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)] | None = None
    iterations: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITERATIONS)] | None = None
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] | None = None
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    max_trajectories: Annotated[int, msgspec.Meta(ge=1, le=MAX_TRAJECTORIES)] | None = None
    resume_from: str | None = None
    lora_rank: Annotated[int, msgspec.Meta(ge=1, le=MAX_LORA_RANK)] | None = None
    eval_every: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITERATIONS)] | None = None
    #: 0: no checkpoints.
    checkpoint_every: Annotated[int, msgspec.Meta(ge=0, le=MAX_ITERATIONS)] | None = None
    # -- training controls (``controls.py``) --
    #: Alternative to ``iterations`` (exactly one of them); may be fractional.
    epochs: Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None = None
    max_seq_length: Annotated[int, msgspec.Meta(ge=16, le=MAX_SEQ_LENGTH)] | None = None
    gradient_accumulation: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] | None = None
    warmup_steps: Annotated[int, msgspec.Meta(ge=0, le=MAX_ITERATIONS)] | None = None
    lr_schedule: Literal["constant", "cosine", "linear"] | None = None
    lora_alpha: Annotated[float, msgspec.Meta(gt=0, le=100_000)] | None = None
    lora_dropout: Annotated[float, msgspec.Meta(ge=0, lt=1)] | None = None
    #: ``attention``, ``all-linear`` or module names.
    target_modules: (
        Literal["attention", "all-linear"]
        | Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]],
            msgspec.Meta(min_length=1, max_length=64),
        ]
        | None
    ) = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] | None = None
    #: Evaluations without a lower valLoss before the run stops (None: never).
    early_stopping_patience: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    save_best: bool | None = None
    # Several devices and machines (``distributed.py``): processes per machine ("auto":
    # every GPU), how the model is spread, and torchrun's c10d rendezvous.
    devices: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEVICES)] | Literal["auto"] | None = None
    strategy: Literal["ddp", "fsdp"] | None = None
    nodes: Annotated[int, msgspec.Meta(ge=1, le=MAX_NODES)] | None = None
    node_rank: Annotated[int, msgspec.Meta(ge=0, le=MAX_NODES - 1)] | None = None
    rdzv_endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=300)] | None = None
    # Preference training (issue 27, ``preference.py``): DPO on a ``pairs`` dataset,
    # KTO on a ``labelled`` one; β and KTO's weights of desirable/undesirable examples.
    objective: Literal["sft", "dpo", "kto"] | None = None
    beta: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    desirable_weight: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None
    undesirable_weight: Annotated[float, msgspec.Meta(gt=0, le=100)] | None = None


#: Python attribute / CLI flag → REST body field, for every job option.
FIELD_NAMES = {f.name: f.encode_name for f in msgspec.structs.fields(JobRequest)}
#: Request keys (camelCase, as in the REST body) a job body may hold.
FIELDS = tuple(FIELD_NAMES.values())
