"""Every request body of the ``/api/training`` routes, as msgspec structs.

Bodies are decoded once, at the edge (the handler, or the service for a Python caller),
into these: a wrong type, a value out of bounds or an unknown field is a 400 naming the
field. The job and dataset bodies live beside the code that checks them further
(``training.request``, ``datasets.request``: leaves that import nothing of the service)
and are gathered here, so this module lists every body the API takes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ..datasets.request import BuildDatasetRequest, PrivacyRequest
from ..training.request import StartJobRequest
from .fields import LoopbackUrl, ModelName, Name
from .records import Backend

__all__ = [
    "ActivateRequest",
    "AgentExportRequest",
    "AgentTrainingConfigRequest",
    "AgentTriggerRequest",
    "AutoPolicy",
    "BenchmarkRequest",
    "Body",
    "BuildDatasetRequest",
    "DeactivateRequest",
    "ImportOllamaRequest",
    "PrivacyRequest",
    "StartJobRequest",
]


class Body(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """A request body: camelCase fields, every one optional, unknown fields refused."""


class ImportOllamaRequest(Body):
    """The body of ``POST /models/{id}/import-ollama``."""

    model_name: Annotated[
        Name | None,
        Meta(
            description=("Name to register in Ollama (derived from the model's name when omitted)")
        ),
    ] = None
    base_model: Annotated[
        Name | None,
        Meta(
            description=(
                "Base model as Ollama names it: the `from` of mode 'adapter' (from "
                "the model's base when omitted); not needed by the default mode"
            )
        ),
    ] = None
    ollama_url: Annotated[
        str | None,
        Meta(
            description=(
                "Ollama URL; must be loopback (localhost, 127.x.x.x or [::1]); "
                "default http://localhost:11434"
            )
        ),
    ] = None
    mode: Annotated[
        Literal["model", "adapter"] | None,
        Meta(
            description=(
                "'model' (default): one self-contained GGUF of the fused model, "
                "with template and stop parameters; works on every Ollama from "
                "0.5.5 on. 'adapter': one GGUF LoRA created from baseModel, for "
                "Ollama versions that still accept adapters"
            )
        ),
    ] = None
    quantization: Annotated[
        Literal["f16", "q8_0", "f32"] | None,
        Meta(
            description=(
                "Tensor type of the uploaded GGUF (default f16); mode 'adapter' takes f16 or f32"
            )
        ),
    ] = None


class ActivateRequest(Body):
    """The body of ``POST /models/{id}/activate``."""

    provider_model: Annotated[
        Name | None,
        Meta(
            description=(
                "Provider model id for the agent (ollama/<name> of the imported model when omitted)"
            )
        ),
    ] = None
    force: Annotated[
        bool | None,
        Meta(
            description=(
                "Skip the gate: activate a model that is worse than the base or the "
                "active model, or was never benchmarked"
            )
        ),
    ] = None
    create: Annotated[
        bool | None,
        Meta(
            description=(
                "Create the agent config (MILADY_LAB_AGENT_CONFIG) when it does not "
                "exist; without it a missing config is a 400 naming the path"
            )
        ),
    ] = None
    ollama_url: Annotated[
        str | None,
        Meta(
            description=(
                "Ollama asked (GET /api/tags) whether it has an ollama/<name> "
                "provider model; must be loopback (localhost, 127.x.x.x or [::1]); "
                "default http://localhost:11434. A model it does not list, or no "
                "answer, is a warning, not a failure"
            )
        ),
    ] = None


class BenchmarkRequest(Body):
    """The body of ``POST /models/{id}/benchmark``."""

    max_examples: Annotated[
        Annotated[int, Meta(ge=1, le=1000)] | None,
        Meta(description="Held-out examples to score (default 32)"),
    ] = None
    dataset_id: Annotated[
        str | None,
        Meta(description="Dataset whose valid.jsonl is used (the model's own when omitted)"),
    ] = None
    seed: Annotated[Annotated[int, Meta(ge=0, le=2147483647)] | None, Meta(description="Seed")] = (
        None
    )


class DeactivateRequest(Body):
    """The body of ``POST /models/deactivate`` (no fields)."""


class AutoPolicy(Body):
    """The auto-improve policy: the body of ``PUT /auto`` (the fields to change) and,
    whole, its record."""

    enabled: bool | None = None
    min_new_trajectories: Annotated[int, Meta(ge=1, le=1000000000)] | None = None
    cooldown_hours: Annotated[float, Meta(ge=0, le=8760)] | None = None
    iterations: Annotated[int, Meta(ge=1, le=1000000)] | None = None
    backend: Backend | None = None
    model: ModelName | None = None
    activate: Literal["never", "if-better"] | None = None
    max_examples: Annotated[int, Meta(ge=1, le=1000)] | None = None
    ollama_url: Annotated[
        LoopbackUrl | None,
        Meta(description="Loopback Ollama URL an if-better model is imported into"),
    ] = None
    ollama_base_model: Name | None = None
    objective: Annotated[
        Literal["sft", "dpo", "kto"] | None,
        Meta(
            description=(
                "What a round trains: sft (default), or dpo/kto on a pairs/labelled "
                "dataset the round builds"
            )
        ),
    ] = None
    beta: Annotated[
        Annotated[float, Meta(le=100, gt=0)] | None,
        Meta(description="dpo/kto: β of the round's job (null: the job default)"),
    ] = None


class AgentTrainingConfigRequest(Body, forbid_unknown_fields=False):
    """Fields of the agent's TrainingConfig to change (the others kept). As in the agent, keys
    it does not know (perTaskOverrides, ...) and backends milady-lab has not (native,
    vertex, ...) are dropped; the first of mlx/cuda/cpu in backends pins the backend, none
    unpins it"""

    # The agent's body takes no nulls: a field is given or left out (UNSET).
    auto_train: bool | UnsetType = UNSET
    trigger_threshold: Annotated[
        Annotated[float, Meta(ge=1, le=1000000000)] | UnsetType, Meta(description="Floored")
    ] = UNSET
    trigger_cooldown_hours: Annotated[float, Meta(ge=0, le=8760)] | UnsetType = UNSET
    backends: list[Any] | UnsetType = UNSET


class AgentTriggerRequest(Body):
    """The body of the agent's ``POST /auto/trigger``."""

    task: Annotated[
        Literal[
            "should_respond",
            "context_routing",
            "action_planner",
            "response",
            "media_description",
            "",
        ]
        | None,
        Meta(description="Recorded with the run (milady-lab trains one model on every call)"),
    ] = None
    backend: Annotated[
        Literal["mlx", "cuda", "cpu", ""] | None,
        Meta(description="For this round only (must be available here: see GET /backends)"),
    ] = None
    dry_run: Annotated[bool | None, Meta(description="Only say whether a round would start")] = None


class AgentExportRequest(Body):
    """The body of the agent's ``POST /trajectories/export``."""

    limit: Annotated[
        Annotated[int, Meta(ge=1, le=10000000)] | None,
        Meta(description="Newest trajectories to export (default 100)"),
    ] = None
    output_path: Annotated[
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=4096,
                pattern="^[^\\u0000-\\u001f\\u007f]*\\S[^\\u0000-\\u001f\\u007f]*$",
            ),
        ]
        | None,
        Meta(
            description=(
                "Where to write the JSONL (default: "
                "exports/trajectories-<datasetId>.jsonl under the home); never "
                "overwritten"
            )
        ),
    ] = None
