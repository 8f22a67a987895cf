"""The API's schema: every request body and every record or answer of the
``/api/training`` routes, as msgspec structs, in one module.

The one description of what the API takes and sends: the handlers decode bodies and
encode answers with these, the clients decode into them, the CLI's flags and the widgets'
forms derive from them, and ``openapi.json`` is generated from them (``make openapi``).
Attributes are snake_case; on the wire they are camelCase (``rename="camel"``).

A record also reads like the JSON it is: ``job["status"]``, ``job.get("valLoss")``,
``dict(job)`` and ``"stage" in job`` use the wire names, so code and notebooks written
against the JSON answers read the same records. ``to_dict()`` gives plain JSON values.
An optional field that is None is left out of the JSON.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

# -- field types several bodies share -----------------------------------------------------
#: A name a user types: not blank, no control characters.
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f]*[^\\s\\u0000-\\u001f\\u007f][^\\u0000-\\u001f\\u007f]*$"
#: ``http(s)://`` on this machine (localhost, 127.0.0.1, [::1]) with an optional port.
LOOPBACK_URL_PATTERN = (
    "^https?://(localhost|127\\.0\\.0\\.1|\\[::1\\])"
    "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$"
)


def _name_meta(max_length: int, description: str | None = None) -> Meta:
    rule = f"must be a non-blank string without control characters, at most {max_length} characters"
    return Meta(
        min_length=1,
        max_length=max_length,
        pattern=NAME_PATTERN,
        description=description,
        extra_json_schema={"x-error": rule},
    )


#: A model, Ollama or provider name (at most 200 characters).
Name = Annotated[str, _name_meta(200)]
#: A base model: a Hugging Face id or a local folder (at most 1000 characters).
ModelName = Annotated[str, _name_meta(1000)]
#: A URL on this machine (Ollama's): the SSRF rule, as a pattern.
LoopbackUrl = Annotated[
    str,
    Meta(
        pattern=LOOPBACK_URL_PATTERN,
        extra_json_schema={
            "x-error": "must be an http:// or https:// URL on a loopback host "
            "(localhost, 127.0.0.1 or [::1])"
        },
    ),
]
#: A calendar day, ``YYYY-MM-DD``.
Day = Annotated[
    datetime.date,
    Meta(
        extra_json_schema={
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "x-error": "must be a date as YYYY-MM-DD",
        }
    ),
]


# -- records and answers ---------------------------------------------------------------
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


class LengthEstimate(Record):
    """A dataset's example lengths against the length training gives them (estimated
    from characters: ``datasets.lengths``)."""

    tokens_p50: Annotated[int, Meta(ge=0, description="Median example length, in tokens")]
    tokens_p90: Annotated[int, Meta(ge=0)]
    tokens_max: Annotated[int, Meta(ge=0)]
    max_seq_length: Annotated[
        int, Meta(ge=1, description="The length compared with (the jobs' default)")
    ]
    over_max_seq_length: Annotated[
        float, Meta(ge=0, le=1, description="Share of training examples longer than it")
    ]
    train_tokens: Annotated[
        int, Meta(ge=0, description="Tokens one epoch trains (each example cut to the length)")
    ]
    chars_per_token: Annotated[float, Meta(gt=0)]
    tokens_per_second: Annotated[
        float | None,
        Meta(description="This home's recent jobs' measured speed (null: none trained yet)"),
    ] = None
    epoch_seconds: Annotated[
        int | None, Meta(description="One epoch at that speed, in seconds (null: unknown)")
    ] = None


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
                "agent's archive, steps text that is not JSON) and were left out"
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
    lengths: Annotated[
        LengthEstimate | None,
        Meta(description="How long the training examples are against maxSeqLength"),
    ] = None
    warnings: Annotated[
        list[str] | None,
        Meta(description="What to know before training on it (most examples too long)"),
    ] = None
    split: Annotated[
        Literal["time", "hash"] | None,
        Meta(
            description=(
                "How valid.jsonl was chosen: time (the newest trajectories' examples, "
                "from heldOutFrom on) or hash (by content hash, about 10%; also when a "
                "time split was asked for but the trajectories have fewer than two "
                "distinct start times, and for every dataset built before the choice "
                "existed)"
            )
        ),
    ] = None
    held_out_from: Annotated[
        Timestamp | None,
        Meta(
            description=(
                "split time: the trajectory start time (ms since epoch) from which "
                "examples are held out in valid.jsonl; older ones are in train.jsonl"
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
    shortened_examples: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description=(
                "Training examples that lost the oldest conversation turns of their "
                "prompt to fit maxSeqLength (the newest turn, the format instructions "
                "and the reply stay)"
            )
        ),
    ] = None
    dropped_turns: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(description="Conversation turns those shortenedExamples lost, all together"),
    ] = None
    truncated_examples: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description=(
                "Training examples cut from the left to maxSeqLength: those with no "
                "conversation turns to drop, or still too long without them"
            )
        ),
    ] = None
    dropped_examples: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        Meta(
            description=(
                "Training examples left out: their reply with the prompt's format "
                "instructions is longer than maxSeqLength"
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


#: What generates a benchmark's greedy replies: llama.cpp runs the GGUF that import-ollama
#: sends (what the agent will run), torch the adapter on its base.
BenchmarkEngine = Literal["llama.cpp", "torch"]


class BenchmarkCost(Record):
    """A benchmark's cost: seconds per phase and, with llama.cpp, the GGUF files it ran."""

    generation_seconds: Annotated[
        Annotated[float, Meta(ge=0)], Meta(description="Greedy decoding, every variant")
    ]
    scoring_seconds: Annotated[
        Annotated[float, Meta(ge=0)],
        Meta(description="torch's log-likelihood passes (prompt, reply NLL, preference pairs)"),
    ]
    conversion_seconds: Annotated[
        Annotated[float, Meta(ge=0)],
        Meta(description="Writing the GGUF files (0 when they were already written)"),
    ] = 0.0
    quantization: Annotated[
        str | None, Meta(description="llama.cpp: the GGUF weights' type (import-ollama's default)")
    ] = None
    gguf: Annotated[
        dict[str, str] | None,
        Meta(description="llama.cpp: per variant (scores, baseline, active), the GGUF file run"),
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
                "preferenceAccuracy: the held-out pairs scored (a pairs dataset); "
                "cutByCap: per variant, replies the generation cap stopped"
            )
        ),
    ] = None
    by_purpose: Annotated[
        JsonObject | None,
        Meta(
            description=(
                "per call purpose: examples, counts, each variant's scores and the "
                "fine-tuned model's paired differences (the gate looks at each purpose)"
            )
        ),
    ] = None
    macro: Annotated[
        JsonObject | None,
        Meta(
            description=(
                "per variant, each score averaged over the purposes (each purpose weighs "
                "the same), beside the pooled scores"
            )
        ),
    ] = None
    samples: Annotated[
        JsonObject | None,
        Meta(
            description=(
                "a few replies per purpose: the prompt's end, the agent's reply and each "
                "variant's (redacted), to see what the figures mean"
            )
        ),
    ] = None
    per_purpose: Annotated[
        JsonObject | None,
        Meta(
            description=(
                "per call purpose, per variant, the measure that fits the purpose beside "
                "its majority-class baseline (always the most common decision or action set "
                "of the references): kind (decision | reply | validity), examples, "
                "formatValid, placeholderEchoes; decisionAccuracy, decisionBaseline, "
                "majority (should_respond); actionAccuracy, actionBaseline, majority, "
                "minorityActionAccuracy and minorityExamples (the non-majority references), "
                "paramsAccuracy, unofferedActions (replies taking an action the prompt did "
                "not offer) for replies"
            )
        ),
    ] = None
    active_model_id: str | None = None
    dataset_id: Annotated[
        str | None, Meta(description="The dataset whose examples were scored")
    ] = None
    seed: int | None = None
    duration_seconds: Annotated[
        Annotated[float, Meta(ge=0)] | None, Meta(description="How long the benchmark ran, in s")
    ] = None
    engine: Annotated[
        BenchmarkEngine | None,
        Meta(description="What generated the greedy replies (torch scored the likelihoods)"),
    ] = None
    cost: Annotated[
        BenchmarkCost | None,
        Meta(description="Where the benchmark's time went, and the GGUF files llama.cpp ran"),
    ] = None


class BenchmarkRun(Record):
    """A benchmark as a tracked operation: ``POST /models/{id}/benchmark`` with ``wait:
    false`` starts one and answers at once; ``GET /models/{id}/benchmark`` polls the
    model's newest. Kept in the state store, so a server that stopped mid-run leaves it
    failed ("interrupted"), never running forever."""

    run_id: str
    model_id: str
    status: Literal["running", "completed", "failed"]
    done: Annotated[
        Annotated[int, Meta(ge=0)],
        Meta(description="Examples scored so far, over every variant (base, fine-tuned, active)"),
    ]
    total: Annotated[
        Annotated[int, Meta(ge=0)],
        Meta(description="Examples to score in all (held-out examples x variants)"),
    ]
    started_at: Timestamp
    ended_at: Timestamp | None = None
    result: Annotated[
        BenchmarkAnswer | None,
        Meta(description="completed: the benchmark, as stored (GET /models/{id}/benchmarks)"),
    ] = None
    error: Annotated[
        str | None, Meta(description="failed: why (the worker's message, or interrupted)")
    ] = None


class Event(Record):
    """One event of ``GET /events`` (and of the state store's event log). An event also
    carries the fields its kind adds, beside these: a job_progress the metric's
    (``currentIteration``, ``loss``, ...), a job_failed and a benchmark_failed its
    ``error``, an auto-improve decision its data."""

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
    run_id: Annotated[
        str | None,
        Meta(
            description=(
                "benchmark_progress, model_benchmarked, benchmark_failed: the benchmark "
                "run (BenchmarkRun.runId)"
            )
        ),
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


# -- request bodies ---------------------------------------------------------------------
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
    engine: Annotated[
        BenchmarkEngine | None,
        Meta(
            description=(
                "What generates the greedy replies: torch (the default) runs the adapter on "
                "its base, a batch at a time; llama.cpp runs the fused GGUF in "
                "import-ollama's default quantization, as the agent will (one reply at a "
                "time: slower than torch on a shared 2-core CPU). torch scores the "
                "likelihoods either way"
            )
        ),
    ] = None
    wait: Annotated[
        bool,
        Meta(
            description=(
                "true (default): answer the scores when the benchmark is done (minutes); "
                "false: answer 202 at once with the started BenchmarkRun, then poll "
                "GET /models/{id}/benchmark or follow the events"
            )
        ),
    ] = True


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


# -- the job body (POST /jobs) ---------------------------------------------------------
BACKENDS = ("mlx", "cuda", "cpu")
#: The choices of ``strategy``, ``lrSchedule`` and ``objective``.
Strategy = Literal["ddp", "fsdp"]
Schedule = Literal["constant", "cosine", "linear"]
Objective = Literal["sft", "dpo", "kto"]

MAX_ITERATIONS = 1_000_000
MAX_BATCH_SIZE = 1024
MAX_LORA_RANK = 512
MAX_LORA_LAYERS = 1024
MAX_PROMPT_GRADIENT_TOKENS = 1_000_000
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
        Meta(
            description=(
                "Dataset to train on (latest when omitted; one is built when there is none)"
            )
        ),
    ] = None
    backend: Annotated[
        Literal["mlx", "cuda", "cpu"] | None,
        Meta(description="Training backend (the best one this machine has when omitted)"),
    ] = None
    model: Annotated[
        ModelName | None,
        Meta(
            description=(
                "Base model: a friendly name, a local Hugging Face folder, a .gguf file or a hub id"
            )
        ),
    ] = None
    iterations: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_ITERATIONS)] | None,
        Meta(description="Optimizer steps (default 100); or give epochs"),
    ] = None
    batch_size: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_BATCH_SIZE)] | None,
        Meta(
            description=("Examples per micro-batch (default per model size: 4 up to 3B, 2 from 7B)")
        ),
    ] = None
    learning_rate: Annotated[
        Annotated[float, Meta(gt=0, le=1)] | None,
        Meta(
            description=(
                "Peak learning rate (default per model size: 2e-4 up to 0.5B, 1e-4 "
                "at 1–3B, 5e-5 from 7B)"
            )
        ),
    ] = None
    max_trajectories: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_TRAJECTORIES)] | None,
        Meta(
            description=(
                "Build a dataset of at most this many trajectories (when datasetId is omitted)"
            )
        ),
    ] = None
    resume_from: Annotated[
        str | None,
        Meta(description="Resume a cancelled or failed job from its last checkpoint"),
    ] = None
    lora_rank: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_LORA_RANK)] | None,
        Meta(description="LoRA rank (default per model size: 8 up to 0.5B, 16 above)"),
    ] = None
    lora_layers: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_LORA_LAYERS)] | Literal["all"] | None,
        Meta(
            description=(
                "Adapters on the model's last N transformer layers, or all (the "
                "default; mlx-lm's num_layers). The backward pass stops at the lowest "
                "adapted layer: fewer layers train faster, and learn less in as many "
                "iterations. A number at or above the model's layer count adapts every layer"
            )
        ),
    ] = None
    prompt_gradient_tokens: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_PROMPT_GRADIENT_TOKENS)] | Literal["all"] | None,
        Meta(
            description=(
                "The gradient flows back through each reply and the last N tokens of "
                "its prompt (SFT; default 128); the prompt's older tokens run first "
                "without gradient, as a cache the rest reads. The loss is the same; "
                "the backward pass, most of a step, covers N + the reply's tokens. all: "
                "through the whole example"
            )
        ),
    ] = None
    eval_every: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_ITERATIONS)] | None,
        Meta(description="Validation loss every N iterations"),
    ] = None
    #: 0: no checkpoints.
    checkpoint_every: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_ITERATIONS)] | None,
        Meta(description="Checkpoint every N iterations (0: no checkpoints)"),
    ] = None
    # -- training controls (``controls.py``) --
    #: Alternative to ``iterations`` (exactly one of them); may be fractional.
    epochs: Annotated[
        Annotated[float, Meta(gt=0, le=100_000)] | None,
        Meta(
            description=(
                "Passes over the training examples, instead of iterations (give one "
                "of the two; the other is derived and recorded). One iteration is "
                "one optimizer step over batchSize × gradientAccumulation examples"
            )
        ),
    ] = None
    max_seq_length: Annotated[
        Annotated[int, Meta(ge=16, le=MAX_SEQ_LENGTH)] | None,
        Meta(
            description=(
                "Tokens per example (default: per model size, 512 up to 0.5B parameters, "
                "else 2048). A longer example first loses "
                "the oldest conversation turns inside its prompt (the newest stays), "
                "then tokens from the left of the prompt, never the prompt's format "
                "instructions nor the reply; one whose reply with those instructions "
                "is longer is dropped. The job reports shortenedExamples, "
                "droppedTurns, truncatedExamples and droppedExamples"
            )
        ),
    ] = None
    gradient_accumulation: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_BATCH_SIZE)] | None,
        Meta(
            description=(
                "Micro-batches of batchSize per optimizer step (default 1); the "
                "update equals that of one batch of batchSize × "
                "gradientAccumulation"
            )
        ),
    ] = None
    warmup_steps: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_ITERATIONS)] | None,
        Meta(
            description=(
                "Linear warmup steps of the learning rate (default 5 % of the iterations, 1 to 100)"
            )
        ),
    ] = None
    lr_schedule: Annotated[
        Schedule | None,
        Meta(
            description=(
                "Learning rate after warmup: constant, or a cosine or linear decay "
                "to 10 % of learningRate at the last iteration (default cosine)"
            )
        ),
    ] = None
    lora_alpha: Annotated[
        Annotated[float, Meta(gt=0, le=100_000)] | None,
        Meta(
            description=(
                "LoRA alpha (default 2 × loraRank); the adapter is scaled by loraAlpha / loraRank"
            )
        ),
    ] = None
    lora_dropout: Annotated[
        Annotated[float, Meta(ge=0, lt=1)] | None,
        Meta(description="Dropout on the LoRA input (default 0)"),
    ] = None
    #: ``attention``, ``all-linear`` or module names.
    target_modules: Annotated[
        Literal["attention", "all-linear"]
        | Annotated[
            list[Annotated[str, Meta(min_length=1, max_length=100)]],
            Meta(min_length=1, max_length=64),
        ]
        | None,
        Meta(
            description=(
                "Layers that get LoRA adapters: attention (q/k/v/o projections, the "
                "default), all-linear, or a list of module names (checked against "
                "the model's architecture where it is known)"
            )
        ),
    ] = None
    seed: Annotated[
        Annotated[int, Meta(ge=0, le=2**32 - 1)] | None,
        Meta(description="Seed of the data order, LoRA initialisation and dropout (default 0)"),
    ] = None
    #: Evaluations without a lower valLoss before the run stops (None: never).
    early_stopping_patience: Annotated[
        Annotated[int, Meta(ge=1, le=100_000)] | None,
        Meta(
            description=(
                "Stop after this many evaluations (every evalEvery iterations) "
                "without a lower valLoss; the job completes with stoppedEarly true. "
                "Needs validation examples"
            )
        ),
    ] = None
    save_best: Annotated[
        bool | None,
        Meta(
            description=(
                "Register the adapter with the lowest valLoss (default true); the "
                "last adapter stays in the job folder (lastAdapterPath)"
            )
        ),
    ] = None
    # Several devices and machines (``distributed.py``): processes per machine ("auto":
    # every GPU), how the model is spread, and torchrun's c10d rendezvous.
    devices: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_DEVICES)] | Literal["auto"] | None,
        Meta(
            description=(
                'Processes per machine, one per GPU (default 1); "auto": every GPU '
                "torch sees (1 on cpu and mlx). More than 1 trains through "
                "torchrun; only cuda and cpu (gloo)"
            )
        ),
    ] = None
    strategy: Annotated[
        Strategy | None,
        Meta(
            description=(
                "With several processes: ddp (each holds the whole model; default) "
                "or fsdp (FSDP2 shards the frozen base, LoRA weights and optimizer "
                "state)"
            )
        ),
    ] = None
    nodes: Annotated[
        Annotated[int, Meta(ge=1, le=MAX_NODES)] | None,
        Meta(
            description=(
                "Machines training this job together (default 1); each starts the "
                "same job with its own nodeRank"
            )
        ),
    ] = None
    node_rank: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_NODES - 1)] | None,
        Meta(description="This machine's place among the nodes (0: it serves the rendezvous)"),
    ] = None
    rdzv_endpoint: Annotated[
        Annotated[str, Meta(min_length=1, max_length=300)] | None,
        Meta(
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
        Meta(
            description=(
                "sft (default): imitate the replies; dpo: prefer chosen over "
                "rejected (a dataset of kind pairs); kto: desirable over "
                "undesirable (a dataset of kind labelled). The reference policy is "
                "the base model with the adapter turned off"
            )
        ),
    ] = None
    beta: Annotated[
        Annotated[float, Meta(gt=0, le=100)] | None,
        Meta(
            description=(
                "dpo/kto: the strength of the pull back to the reference policy (default 0.1)"
            )
        ),
    ] = None
    desirable_weight: Annotated[
        Annotated[float, Meta(gt=0, le=100)] | None,
        Meta(description="kto: weight of desirable examples (default 1)"),
    ] = None
    undesirable_weight: Annotated[
        Annotated[float, Meta(gt=0, le=100)] | None,
        Meta(description="kto: weight of undesirable examples (default 1)"),
    ] = None


# -- the dataset body (POST /datasets/build and /preview) -------------------------------
#: Most values one list filter (source, status, purpose, model) may hold.
MAX_CHOICES = 100
_Name = Annotated[str, Meta(min_length=1, max_length=200)]
_Names = _Name | Annotated[list[_Name], Meta(min_length=1, max_length=MAX_CHOICES)]
_Count = Annotated[int, Meta(ge=1, le=10**9)]


class PrivacyRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """``privacy``: what the privacy pass does (``privacy.options.PrivacyOptions``)."""

    redact: bool = True
    anonymize_handles: bool = False


class BuildDatasetRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """The build/preview body. ``privacy`` stays last (messages list filters before it)."""

    limit: Annotated[
        _Count | None,
        Meta(description="Most qualifying trajectories to include (no cap when omitted)"),
    ] = None
    min_llm_calls_per_trajectory: Annotated[
        _Count | None,
        Meta(description="Usable LLM calls a trajectory needs to qualify (default 1)"),
    ] = None
    source: Annotated[
        _Names | None,
        Meta(
            description=(
                "Only trajectories whose source is this value (or any value of this "
                'list), e.g. "chat"'
            )
        ),
    ] = None
    status: Annotated[
        _Names | None,
        Meta(
            description=(
                "Only trajectories whose status is this value (or any value of this "
                'list), e.g. "completed"'
            )
        ),
    ] = None
    start_date: Annotated[
        Day | None,
        Meta(description="Only trajectories started on or after this day"),
    ] = None
    end_date: Annotated[
        Day | None,
        Meta(description="Only trajectories started on or before this day"),
    ] = None
    time_zone: Annotated[
        Annotated[str, Meta(min_length=1, max_length=64)] | None,
        Meta(
            description=(
                "IANA time zone the startDate/endDate days are in, such as "
                "Europe/Lisbon (UTC when omitted)"
            )
        ),
    ] = None
    search: Annotated[
        Annotated[str, Meta(min_length=1, max_length=1000)] | None,
        Meta(
            description=(
                "Only trajectories with an LLM call whose system prompt, user "
                "prompt or reply contains this text (ignoring case)"
            )
        ),
    ] = None
    #: Calls whose ``purpose`` or ``actionType`` is this value (or any of the list).
    purpose: Annotated[
        _Names | None,
        Meta(
            description=(
                "Only LLM calls whose purpose or actionType is this value (or any "
                'value of this list), e.g. "should_respond"; trajectories qualify '
                "on these calls"
            )
        ),
    ] = None
    #: Calls made by this model (or any of the list).
    model: Annotated[
        _Names | None,
        Meta(description="Only LLM calls made by this model (or any model of this list)"),
    ] = None
    #: Trajectories whose ``rewardField`` is at least this.
    min_reward: Annotated[
        float | None,
        Meta(
            description=(
                "Only trajectories whose rewardField is at least this (400 when the "
                "source never fills that reward)"
            )
        ),
    ] = None
    reward_field: Annotated[
        Literal["totalReward", "aiJudgeReward"] | None,
        Meta(description="The reward minReward and topFraction use (default totalReward)"),
    ] = None
    #: The best fraction of the trajectories that pass every other filter, by reward.
    top_fraction: Annotated[
        Annotated[float, Meta(gt=0, le=1)] | None,
        Meta(
            description=(
                "Keep the best fraction (by rewardField) of the trajectories that "
                "pass every other filter, at least one; limit then caps them, "
                "newest first"
            )
        ),
    ] = None
    #: Rollouts of this scenario (or any of the list): the agent's ``scenario_id``.
    scenario_id: Annotated[
        _Names | None,
        Meta(
            description=(
                "Only rollouts of this scenario (or any of this list): the agent's scenario_id"
            )
        ),
    ] = None
    #: Trajectories of this batch (or any of the list): the agent's ``batch_id``.
    batch_id: Annotated[
        _Names | None,
        Meta(
            description=(
                "Only trajectories of this batch (or any of this list): the agent's batch_id"
            )
        ),
    ] = None
    #: Whether trajectories the agent archived (older than 30 days) count; default true.
    include_archived: Annotated[
        bool | None,
        Meta(
            description=(
                "Whether trajectories the agent archived (older than 30 days) count; default true"
            )
        ),
    ] = None
    #: ``sft`` (default): chat examples; ``pairs``: DPO lines (prompt, chosen, rejected)
    #: from calls sharing a prompt context; ``labelled``: KTO lines (messages, label).
    kind: Annotated[
        Literal["sft", "pairs", "labelled"] | None,
        Meta(
            description=(
                "What the dataset holds: sft (default) chat examples; pairs: DPO "
                "lines {prompt, chosen, rejected} from calls sharing a prompt "
                "context (rollouts of one scenarioId/batchId answering the same "
                "turn, or an identical prompt), chosen the higher reward; labelled: "
                "KTO lines {messages, label} from labelThreshold and the agent's "
                "verifiable failures (format rejected, action not offered, "
                "error/timeout)"
            )
        ),
    ] = None
    #: ``pairs``: the least reward difference between chosen and rejected (default: any).
    min_reward_gap: Annotated[
        Annotated[float, Meta(ge=0)] | None,
        Meta(
            description=(
                "kind pairs: the least reward difference between chosen and "
                "rejected (default: any difference)"
            )
        ),
    ] = None
    #: ``labelled``: a reward at least this is desirable, below it undesirable.
    label_threshold: Annotated[
        float | None,
        Meta(
            description=(
                "kind labelled: a trajectory reward at least this is desirable, "
                "below it undesirable (without it only verifiable signals label)"
            )
        ),
    ] = None
    split: Annotated[
        Literal["time", "hash"] | None,
        Meta(
            description=(
                "How valid.jsonl is held out: time (default) trains on older "
                "trajectories and validates on the newest (about 10% of the examples; "
                "a trajectory's examples stay together), falling back to hash when "
                "the trajectories have fewer than two distinct start times; hash "
                "holds out about 10% by content hash"
            )
        ),
    ] = None
    privacy: Annotated[
        PrivacyRequest | None,
        Meta(
            description=(
                "What the privacy pass does to each system prompt, user prompt and "
                "reply before de-duplication and writing (default: redact on, "
                "handles kept)"
            )
        ),
    ] = None
