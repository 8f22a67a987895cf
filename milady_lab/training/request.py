"""A job's options as the training layer reads them: the ``POST /jobs`` body
(``StartJobRequest``, its names and limits, defined with the rest of the API in
``api.schema``) and ``RecordedOptions``, the same fields as a job records them once
resolved.

A leaf on purpose: ``options`` (which checks a body), ``controls`` (which reads the
bounds of the control fields), ``distributed`` (the device and node limits), the worker
and the CLI all take the fields from here, and none of them has to import another to
get them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..api.schema import (
    BACKENDS,
    MAX_BATCH_SIZE,
    MAX_DEVICES,
    MAX_ITERATIONS,
    MAX_LORA_RANK,
    MAX_NODES,
    MAX_SEQ_LENGTH,
    MAX_TRAJECTORIES,
    Objective,
    Record,
    Schedule,
    StartJobRequest,
    Strategy,
)

#: The job body's names and limits, here beside the stored form (``api.schema`` holds them).
__all__ = [
    "BACKENDS",
    "FIELDS",
    "FIELD_NAMES",
    "MAX_BATCH_SIZE",
    "MAX_DEVICES",
    "MAX_ITERATIONS",
    "MAX_LORA_RANK",
    "MAX_NODES",
    "MAX_SEQ_LENGTH",
    "MAX_TRAJECTORIES",
    "Objective",
    "RecordedOptions",
    "Schedule",
    "StartJobRequest",
    "Strategy",
]

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
