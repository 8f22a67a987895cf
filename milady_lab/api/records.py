"""Every record and answer of the ``/api/training`` routes, as msgspec structs.

The one description of what the API sends: the handlers encode these, the clients
decode into them, ``openapi.json`` is generated from them (``make openapi``), and the
widgets read them. Attributes are snake_case; on the wire they are camelCase
(``rename="camel"``), and an optional field that is absent (None) is left out.

A record also reads like the JSON it is: ``job["status"]``, ``job.get("valLoss")``,
``dict(job)`` and ``"stage" in job`` use the wire names, so code and notebooks written
against the JSON answers read the same records. ``to_dict()`` gives plain JSON values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

#: Free-form JSON the API passes through (tool schemas, a job's recorded options,
#: benchmark intervals): named once, so every use says it is JSON, not an untyped bag.
JsonObject = dict[str, Any]
Backend = Literal["mlx", "cuda", "cpu"]
#: ms since the epoch.
Timestamp = Annotated[int, Meta(ge=0, description="ms since epoch")]


class Record(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """An answer or record of the API: typed attributes, and read-only mapping access by
    wire name (so it reads like the JSON it encodes to)."""

    def _wire(self) -> Mapping[str, str]:
        return _wire_names(type(self))

    def __getitem__(self, key: str) -> Any:
        name = self._wire().get(key)
        if name is None:
            raise KeyError(key)
        value = getattr(self, name)
        if value is None and _omitted(type(self), name):
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def keys(self) -> list[str]:
        """The wire names this record sends (absent optional fields left out)."""
        return [k for k in self._wire() if k in self]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]

    def values(self) -> list[Any]:
        return [self[k] for k in self.keys()]

    def to_dict(self) -> JsonObject:
        """The record as JSON values (what the route sends)."""
        return msgspec.to_builtins(self)


_MISSING = object()
_WIRE: dict[type, dict[str, str]] = {}
_OPTIONAL: dict[type, frozenset[str]] = {}


def _wire_names(cls: type) -> Mapping[str, str]:
    names = _WIRE.get(cls)
    if names is None:
        fields = msgspec.structs.fields(cls)
        names = _WIRE[cls] = {f.encode_name: f.name for f in fields}
        _OPTIONAL[cls] = frozenset(f.name for f in fields if not f.required)
    return names


def _omitted(cls: type, name: str) -> bool:
    _wire_names(cls)
    return name in _OPTIONAL[cls]


Mapping.register(Record)


class Error(Record):
    """Every error answer: ``message`` (Jupyter's key) and the same text as ``error``
    (the agent's)."""

    message: str
    error: Annotated[
        str, Meta(description="The same text as `message`: the key the Milady agent's client shows")
    ]
    reason: str | None = None


class Status(Record):
    """What ``GET /status`` says: the backend, whether training can run here, the counters."""

    available: bool
    backend: Backend
    runtime_available: bool
    active_job_id: str | None
    backends: list[Backend] | None = None
    trajectory_source: str | None = None
    runtime_reason: str | None = None
    running_jobs: Annotated[
        Annotated[int, Meta(ge=0)] | None, Meta(description="The agent's counter: jobs running")
    ] = None
    queued_jobs: Annotated[
        Annotated[int, Meta(ge=0)] | None, Meta(description="The agent's counter: jobs queued")
    ] = None
    completed_jobs: Annotated[
        Annotated[int, Meta(ge=0)] | None, Meta(description="The agent's counter: jobs completed")
    ] = None
    failed_jobs: Annotated[
        Annotated[int, Meta(ge=0)] | None, Meta(description="The agent's counter: jobs failed")
    ] = None
    dataset_count: Annotated[
        Annotated[int, Meta(ge=0)] | None, Meta(description="The agent's counter: datasets built")
    ] = None
    model_count: Annotated[
        Annotated[int, Meta(ge=0)] | None, Meta(description="The agent's counter: models trained")
    ] = None
    trajectory_source_found_by: Annotated[
        str | None,
        Meta(
            description=(
                "How the trajectory source was found: MILADY_LAB_TRAJECTORIES, the "
                "agent's config (database.postgres, database.pglite.dataDir, the "
                "default PGlite folder), POSTGRES_URL, PGLITE_DATA_DIR, or none "
                "(the home's trajectories.sqlite)"
            )
        ),
    ] = None
    home: Annotated[str | None, Meta(description="The lab's home folder (MILADY_LAB_HOME)")] = None


class TrajectorySummary(Record):
    """One trajectory as a listing shows it (no LLM calls): every field present, null
    when the agent did not record it."""

    id: str
    agent_id: str | None
    source: str | None
    status: str | None
    start_time: int | None
    end_time: int | None
    duration_ms: int | None
    llm_call_count: int | None
    provider_access_count: int | None
    total_prompt_tokens: int | None
    total_completion_tokens: int | None
    total_reward: float | None
    ai_judge_reward: float | None
    scenario_id: Annotated[
        str | None,
        Meta(description="The scenario this trajectory is a rollout of (the agent's scenario_id)"),
    ]
    batch_id: Annotated[
        str | None, Meta(description="The batch of rollouts it ran in (the agent's batch_id)")
    ]
    archetype: str | None
    episode_length: int | None
    archived: Annotated[
        bool | None,
        Meta(
            description=(
                "Moved by the agent's 30-day prune into trajectory_archive and its .jsonl.gz files"
            )
        ),
    ]


class TrajectoryPage(Record):
    """One page of trajectories, newest first."""

    trajectories: list[TrajectorySummary]
    total: Annotated[int, Meta(ge=0)]
    offset: Annotated[int, Meta(ge=0)]
    limit: Annotated[int, Meta(ge=1, le=500)]


class LlmCall(Record):
    """One LLM call the agent made, as recorded in its trajectory: every field present,
    null when not recorded."""

    trajectory_id: str | None
    step_id: str
    model: str | None
    purpose: str | None
    action_type: str | None
    system_prompt: str | None
    user_prompt: str | None
    response: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: int | None
    timestamp: int | None
    tool_calls: Annotated[
        list[JsonObject] | None,
        Meta(
            description=(
                "Tool calls the model made in its reply: {name, arguments, id?} "
                "(read from toolCalls/tool_calls, OpenAI or flat form)."
            )
        ),
    ]
    tool_results: Annotated[
        list[JsonObject] | None,
        Meta(
            description=("Function results the call was given: {content, name?, id?, arguments?}.")
        ),
    ]
    tools: Annotated[
        list[JsonObject] | None,
        Meta(description="Tool schemas the model was offered, OpenAI function form."),
    ]
    call_index: Annotated[int, Meta(ge=0, description="The call's place within its step")]
    call_id: str | None
    temperature: float | None
    max_tokens: int | None


class ProviderAccess(Record):
    """One provider the agent read while composing a call."""

    trajectory_id: str | None
    step_id: str
    provider_id: str | None
    provider_name: str | None
    purpose: str | None
    timestamp: int | None
    data: Annotated[Any, Meta(description="What the provider gave, as recorded")] = None


class Trajectory(TrajectorySummary, kw_only=True):
    """A trajectory with its LLM calls and provider accesses."""

    llm_calls: list[LlmCall]
    provider_accesses: list[ProviderAccess]


class TrajectoryDetail(Record):
    """The answer of ``GET /trajectories/{id}``."""

    trajectory: Trajectory


class Dataset(Record):
    """A built dataset: its counts, files and the options it was built with."""

    id: str
    created_at: Timestamp
    trajectory_count: Annotated[int, Meta(ge=0)]
    example_count: Annotated[int, Meta(ge=0)]
    train_count: Annotated[int, Meta(ge=0)] | None = None
    valid_count: Annotated[int, Meta(ge=0)] | None = None
    path: str | None = None
    options: JsonObject | None = None
    redactions: Annotated[
        dict[str, Annotated[int, Meta(ge=1)]] | None,
        Meta(
            description=(
                'Secrets and contacts replaced, per kind (e.g. {"openai_key": 2, '
                '"email": 5}); the values themselves are never kept'
            )
        ),
    ] = None
    sample_count: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="The agent's name for exampleCount (equal to it)"),
    ] = None
    jsonl_path: Annotated[
        str | None, Meta(description="The agent's training file: the dataset's train.jsonl")
    ] = None
    valid_path: Annotated[str | None, Meta(description="The dataset's valid.jsonl")] = None
    metadata_path: Annotated[str | None, Meta(description="The dataset's metadata.json")] = None
    skipped_rows: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description=(
                "Rows of the source that could not be read (a corrupt line in the "
                "agent's archive) and were left out"
            )
        ),
    ] = None
    kind: Annotated[
        Literal["sft", "pairs", "labelled"] | None,
        Meta(
            description=("What the dataset's lines are (sft when built before preference datasets)")
        ),
    ] = None
    pair_count: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="kind pairs: the chosen/rejected pairs written"),
    ] = None
    label_counts: Annotated[
        dict[str, Annotated[int, Meta(ge=0)]] | None,
        Meta(
            description=(
                "kind labelled: lines per rule (formatRejected, actionNotOffered, "
                "rewardDesirable, rewardUndesirable, statusFailed, checksPassed)"
            )
        ),
    ] = None


class DatasetList(Record):
    """The answer of ``GET /datasets``."""

    datasets: list[Dataset]


class DatasetAnswer(Record):
    """The answer of ``POST /datasets/build``."""

    dataset: Dataset


class Job(Record, kw_only=True):
    """A fine-tuning job: where it is, its losses and speed, the model it registered."""

    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    dataset_id: str | None
    backend: Backend
    model: str
    created_at: Timestamp
    completed_at: Timestamp | None
    progress: Annotated[float, Meta(ge=0, le=1)]
    current_iteration: Annotated[int, Meta(ge=0)]
    total_iterations: Annotated[int, Meta(ge=1)]
    loss: float | None
    stage: Annotated[
        Literal["loading", "training", "evaluating", "saving", "registering"] | None,
        Meta(
            description=(
                "What a running job is doing: loading (base model, data), training, "
                "evaluating (validation loss; alternates with training), saving "
                "(the adapter), registering (the model record). null until a worker "
                "takes the job; a finished job keeps the last stage it reached. "
                "Each change is a job_stage event"
            )
        ),
    ] = None
    started_at: Timestamp | None = None
    val_loss: float | None = None
    error: str | None = None
    tokens_per_second: float | None = None
    trained_tokens: int | None = None
    peak_memory: int | None = None
    options: JsonObject | None = None
    resume_from: str | None = None
    checkpoint_iteration: int | None = None
    model_id: Annotated[
        str | None,
        Meta(description="The model the job registered: null until it completed (the agent's)"),
    ]
    best_iteration: Annotated[
        int | None,
        Meta(
            description=(
                "Iteration of the lowest valLoss so far (the adapter registered when saveBest)"
            )
        ),
    ] = None
    best_val_loss: float | None = None
    stopped_early: Annotated[
        bool | None,
        Meta(description="The run ended before totalIterations because valLoss stopped improving"),
    ] = None
    stop_reason: str | None = None
    truncated_examples: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="Training examples cut from the left to maxSeqLength"),
    ] = None
    dropped_examples: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description=(
                "Training examples left out: their reply alone is longer than maxSeqLength"
            )
        ),
    ] = None
    last_adapter_path: Annotated[
        str | None, Meta(description="The run's last adapter, when the registered one is the best")
    ] = None
    phase: Annotated[
        str | None, Meta(description="The agent's phase of the job (here: its status)")
    ] = None


class JobList(Record):
    """The answer of ``GET /jobs``."""

    jobs: list[Job]


class JobAnswer(Record):
    """The answer of the routes about one job."""

    job: Job


class Metric(Record):
    """One logged training step (and evaluation) of a job."""

    seq: int
    job_id: str
    iteration: int
    ts: Timestamp
    loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    trained_tokens: int | None = None
    peak_memory: int | None = None
    rewards_chosen: Annotated[
        float | None,
        Meta(
            description=(
                "dpo/kto: mean beta x (policy - reference) log-prob of chosen/desirable completions"
            )
        ),
    ] = None
    rewards_rejected: Annotated[
        float | None, Meta(description="dpo/kto: the same for rejected/undesirable completions")
    ] = None
    reward_margin: Annotated[float | None, Meta(description="rewardsChosen - rewardsRejected")] = (
        None
    )
    reward_accuracy: Annotated[
        float | None, Meta(description="dpo: share of pairs whose chosen reward is higher")
    ] = None
    logps_chosen: Annotated[
        float | None, Meta(description="dpo/kto: mean policy log-probability of chosen completions")
    ] = None
    logps_rejected: Annotated[
        float | None,
        Meta(description="dpo/kto: mean policy log-probability of rejected completions"),
    ] = None
    kl_estimate: Annotated[
        float | None, Meta(description="kto: the KL estimate (reference point) of the step")
    ] = None
    val_reward_margin: Annotated[
        float | None,
        Meta(description="dpo/kto: rewardMargin on the validation set, at evaluations"),
    ] = None


class MetricList(Record):
    """The answer of ``GET /jobs/{id}/metrics``."""

    job_id: str
    metrics: list[Metric]


class Model(Record, kw_only=True):
    """A registered model: the adapter a job trained, and where it went since."""

    id: str
    job_id: str
    name: str
    created_at: Timestamp
    active: bool
    adapter_path: str | None = None
    base_model: str | None = None
    base_model_path: str | None = None
    backend: str | None = None
    dataset_id: str | None = None
    final_loss: float | None = None
    ollama_name: str | None = None
    imported_at: Timestamp | None = None
    provider_model: str | None = None
    activated_at: Timestamp | None = None
    benchmark: BenchmarkAnswer | None = None
    best_iteration: Annotated[
        int | None, Meta(description="The iteration whose adapter this is (lowest valLoss)")
    ] = None
    best_val_loss: float | None = None
    # The agent's names: always sent, null when the field they name is (its client reads null).
    source_model: Annotated[str | None, Meta(description="The agent's name for baseModel")]
    ollama_model: Annotated[str | None, Meta(description="The agent's name for ollamaName")]
    model_path: Annotated[str | None, Meta(description="The trained artefact (the adapter)")]
    output_dir: Annotated[str | None, Meta(description="The folder holding the adapter")]


class ModelList(Record):
    """The answer of ``GET /models``."""

    models: list[Model]


class ImportedModel(Record):
    """The model an import registered in Ollama."""

    id: str
    ollama_name: str
    imported_at: Timestamp


class ImportReport(Record):
    """What an Ollama import uploaded."""

    mode: Literal["model", "adapter"]
    quantization: str
    bytes: Annotated[int, Meta(ge=0, description="size of the uploaded GGUF")]
    digest: Annotated[str, Meta(description="sha256:<hex> of the uploaded blob")]


class ImportOllamaAnswer(Record):
    """The answer of ``POST /models/{id}/import-ollama``."""

    model: ImportedModel
    report: ImportReport | None = msgspec.field(default=None, name="import")


class ActivateAnswer(Record):
    """The answer of ``POST /models/{id}/activate``."""

    ok: Literal[True]
    active_model: str
    warnings: Annotated[
        list[str] | None,
        Meta(
            description=(
                "Present when something may keep the agent from using the model (an "
                "ollama/… model Ollama does not list, or Ollama not answering); "
                "also recorded in the activation history"
            )
        ),
    ] = None


class Scores(Record):
    """The benchmark scores of one variant, each in [0, 1], higher is better."""

    coherence: Annotated[float, Meta(ge=0, le=1)]
    consistency: Annotated[float, Meta(ge=0, le=1)]
    helpfulness: Annotated[float, Meta(ge=0, le=1)]
    format_valid: Annotated[float, Meta(ge=0, le=1)] | None = None
    action_accuracy: Annotated[float, Meta(ge=0, le=1)] | None = None
    preference_accuracy: Annotated[
        Annotated[float, Meta(ge=0, le=1)] | None,
        Meta(
            description=(
                "When the model's dataset is of kind pairs: the share of held-out "
                "pairs where this variant gives the chosen reply a higher summed "
                "log-probability than the rejected one"
            )
        ),
    ] = None


class BenchmarkAnswer(Record):
    """One benchmark of a model against its base (and the active model)."""

    model_id: str
    scores: Scores
    completed_at: Timestamp
    baseline: Scores | None = None
    active: Annotated[
        Scores | None,
        Meta(description="Scores of the active model on the same examples (null when none)"),
    ] = None
    examples: Annotated[int, Meta(ge=0)] | None = None
    intervals: Annotated[
        JsonObject | None,
        Meta(
            description=("95% bootstrap interval [low, high] (or null) of each score, per variant")
        ),
    ] = None
    differences: Annotated[
        JsonObject | None,
        Meta(
            description=(
                "fine-tuned minus baseline/active per score: {delta, low, high} "
                "(paired 95% bootstrap)"
            )
        ),
    ] = None
    counts: Annotated[
        JsonObject | None,
        Meta(
            description=(
                "examples counted by formatValid and actionAccuracy; "
                "preferenceAccuracy: the held-out pairs scored (a pairs dataset)"
            )
        ),
    ] = None
    by_purpose: Annotated[
        JsonObject | None,
        Meta(description="per call purpose: examples, counts and each variant's scores"),
    ] = None
    active_model_id: str | None = None
    dataset_id: Annotated[
        str | None, Meta(description="The dataset whose examples were scored")
    ] = None
    seed: int | None = None
    duration_seconds: Annotated[
        Annotated[float, Meta(ge=0)] | None, Meta(description="How long the benchmark ran, in s")
    ] = None


class Event(Record):
    """One event of ``GET /events`` (and of the state store's event log)."""

    seq: Annotated[int, Meta(ge=1)]
    kind: str
    ts: Timestamp
    message: str
    job_id: Annotated[
        str | None,
        Meta(
            description=(
                "null when the event concerns none (e.g. an auto-improve decision "
                "before a step ran)"
            )
        ),
    ] = None
    dataset_id: Annotated[
        str | None,
        Meta(
            description=(
                "null when the event concerns none (e.g. an auto-improve decision "
                "before a step ran)"
            )
        ),
    ] = None
    model_id: Annotated[
        str | None,
        Meta(
            description=(
                "null when the event concerns none (e.g. an auto-improve decision "
                "before a step ran)"
            )
        ),
    ] = None
    stage: Annotated[
        str | None, Meta(description="job_stage: the stage the job entered (see Job.stage)")
    ] = None
    done: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description=(
                "benchmark_progress: examples scored so far, over every variant "
                "(base, fine-tuned, active)"
            )
        ),
    ] = None
    total: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="benchmark_progress: examples to score in all"),
    ] = None
    phase: Annotated[
        str | None,
        Meta(
            description=(
                "model_import_progress: merging (the adapter into its base, default "
                "mode), converting (to GGUF), uploading (hashing, then the blob to "
                "Ollama), creating (the Ollama model), done; each phase starts with "
                "an event, then one every 5 %"
            )
        ),
    ] = None
    percent: Annotated[
        Annotated[float, Meta(ge=0, le=100)] | None,
        Meta(description="model_import_progress: how far the import is"),
    ] = None


class DatasetPreview(Record):
    """What a build with these options would give (``POST /datasets/preview``)."""

    trajectory_count: Annotated[
        Annotated[int, Meta(ge=0)],
        Meta(description="Trajectories a build with these options would include"),
    ]
    example_count: Annotated[
        Annotated[int, Meta(ge=0)], Meta(description="Examples it would write")
    ]
    redactions: Annotated[
        dict[str, Annotated[int, Meta(ge=1)]] | None,
        Meta(description="Secrets and contacts the build would replace, per kind"),
    ] = None
    pair_count: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="kind pairs: the chosen/rejected pairs it would write"),
    ] = None
    label_counts: Annotated[
        dict[str, Annotated[int, Meta(ge=0)]] | None,
        Meta(description="kind labelled: the lines it would write per rule"),
    ] = None


class BenchmarkList(Record):
    """The answer of ``GET /models/{id}/benchmarks``."""

    model_id: str
    benchmarks: list[BenchmarkAnswer]


class DeactivateAnswer(Record):
    """The answer of ``POST /models/deactivate``."""

    ok: Literal[True]
    deactivated_model: str
    active_model_id: Annotated[
        str | None, Meta(description="The model active again (null: none is)")
    ]
    restored: Literal["exact", "keys"]


class Activation(Record):
    """One activation of a model in the agent's config (its history)."""

    seq: int
    model_id: str
    provider_model: str
    activated_at: Annotated[int, Meta(ge=0)]
    config_path: str | None = None
    previous_mode: int | None = None
    previous_active_id: str | None = None
    forced: bool | None = None
    gate: JsonObject | None = None
    rolled_back_at: int | None = None
    warnings: Annotated[
        list[str] | None, Meta(description="The activation's warnings (see ActivateAnswer)")
    ] = None


class ActivationList(Record):
    """The answer of ``GET /activations``."""

    activations: list[Activation]


class AutoAnswer(Record):
    """Auto-improve as ``GET/PUT /auto`` shows it: policy, state, lease, recent events."""

    policy: JsonObject
    state: JsonObject
    events: list[Event]
    lease: JsonObject | None = None


class AgentTrainingConfig(Record):
    """The agent's TrainingConfig (elizaOS/eliza core/training-config.ts), mapped onto the
    auto-improve policy: autoTrain = enabled, triggerThreshold = minNewTrajectories,
    triggerCooldownHours = cooldownHours, backends = where a round trains (the pinned
    backend, else the best one here)"""

    auto_train: bool
    trigger_threshold: Annotated[int, Meta(ge=1)]
    trigger_cooldown_hours: Annotated[float, Meta(ge=0)]
    backends: list[Backend]


class AgentConfigAnswer(Record):
    """The answer of the agent's ``GET/POST /auto/config``."""

    config: AgentTrainingConfig


class AgentAutoStatus(Record):
    """The agent's TriggerStatusSnapshot (services/training-trigger.ts). milady-lab's one
    pipeline is the agent's `response` task; its counter is the new trajectories at the last
    check"""

    auto_train_enabled: bool
    trigger_threshold: int
    cooldown_hours: float
    counters: JsonObject
    last_train: dict[str, JsonObject]
    per_task_thresholds: JsonObject
    per_task_cooldown_ms: JsonObject
    service_registered: Annotated[
        bool, Meta(description="Whether the auto-improve watcher runs in this server")
    ]
    round: Annotated[JsonObject | None, Meta(description="The round under way (milady-lab's)")] = (
        None
    )
    last_decision: JsonObject | None = None


class AgentRun(Record, kw_only=True):
    """The agent's TrainingRunRecord (core/training-orchestrator.ts) of one auto-improve round,
    milady-lab's ids beside it"""

    run_id: str
    status: Literal["queued", "running", "succeeded", "failed", "skipped"]
    source: Literal["threshold", "cron", "manual"]
    dataset_size: Annotated[int, Meta(ge=0)]
    started_at: Annotated[str | None, Meta(description="ISO 8601")]
    dry_run: bool
    reason: str | None = None
    task: str | None = None
    backend: str | None = None
    finished_at: Annotated[str | None, Meta(description="ISO 8601; null while it runs")]
    artifact_path: str | None = None
    pulled_trajectories: int | None = None
    filtered_trajectories: int | None = None
    redaction_count: int | None = None
    anonymization_count: int | None = None
    notes: list[str] | None = None
    stage: str | None = None
    outcome: str | None = None
    dataset_id: str | None = None
    job_id: str | None = None
    model_id: str | None = None


class AgentRunList(Record):
    """The answer of the agent's ``GET /auto/runs``."""

    runs: list[AgentRun]


class AgentTriggerAnswer(Record):
    """The answer of the agent's ``POST /auto/trigger``."""

    run_id: str
    status: str
    run: AgentRun


class AgentBackends(Record):
    """The answer of the agent's ``GET /backends``."""

    backends: JsonObject
    available: list[Backend] | None = None
    best: Backend | None = None


class AgentExportAnswer(Record):
    """The answer of the agent's ``POST /trajectories/export``."""

    exported_examples: Annotated[int, Meta(ge=0)]
    trajectories_considered: Annotated[int, Meta(ge=0)]
    output_path: str
    dataset_id: str | None = None
