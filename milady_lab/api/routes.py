"""The route table: every operation of ``/api/training``, its path, body and answer.

One table, read by everything that speaks HTTP: the server's handlers take the body and
answer types from it, the clients build their requests from it, and ``openapi.json``
is generated from it with the structs (``python -m milady_lab.api.openapi``, or
``make openapi``). Adding a route is one ``Operation`` here plus its handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from . import schema

BAD_FIELDS = (
    "Bad input: body not JSON or not an object, unknown field, wrong type, out-of-range value"
)
BAD_BODY = f"{BAD_FIELDS}, unknown backend, non-loopback ollamaUrl"
TOO_LARGE = "Request body over 10 MB"
UNKNOWN_ID = "Unknown id"
CONFLICT = "Conflicts with the current state"
SOURCE_DOWN = "The trajectory source could not be read"
#: Every route answers 403 without a valid token.
FORBIDDEN = "No valid token (or a cookie-authenticated POST without the XSRF token)"
#: The largest ``offset``/``after`` a query takes (beyond any count or seq).
MAX_QUERY_INT = 2**62


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter, with its JSON schema."""

    name: str
    where: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    description: str | None = None


@dataclass(frozen=True)
class Operation:
    """One route: ``method`` on ``path`` (under ``/api/training/``)."""

    id: str
    method: Literal["GET", "POST", "PUT"]
    path: str
    tag: str
    summary: str
    description: str | None = None
    body: type[msgspec.Struct] | None = None
    answer: type[msgspec.Struct] | None = None
    status: int = 200
    answered: str = "OK"
    #: Other success answers by status, each (description, struct): a route whose body
    #: may ask for an answer at once (``202``) instead of the finished work.
    also: Mapping[int, tuple[str, type[msgspec.Struct]]] = field(default_factory=dict)
    errors: Mapping[int, str] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    #: ``text/event-stream`` for the event stream (its events are ``answer``).
    media: str = "application/json"

    def url(self, **path_args: str) -> str:
        """The path with its ``{name}`` parts filled (each already URL-quoted)."""
        return self.path.format(**path_args)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "getStatus",
        "GET",
        "status",
        "status",
        "Training service status",
        answer=schema.Status,
        answered="Status",
    ),
    Operation(
        "listTrajectories",
        "GET",
        "trajectories",
        "trajectories",
        "Trajectories, newest first",
        answer=schema.TrajectoryPage,
        answered="One page",
        errors={400: BAD_BODY},
        params=(
            Param(
                "limit", "query", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}
            ),
            Param(
                "offset",
                "query",
                {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT, "default": 0},
            ),
        ),
    ),
    Operation(
        "getTrajectory",
        "GET",
        "trajectories/{id}",
        "trajectories",
        "One trajectory with its LLM calls and provider accesses",
        answer=schema.TrajectoryDetail,
        answered="The trajectory",
        errors={404: UNKNOWN_ID},
        params=(Param("id", "path", {"type": "string", "minLength": 1}, "Trajectory id"),),
    ),
    Operation(
        "listDatasets",
        "GET",
        "datasets",
        "datasets",
        "Built datasets, newest first",
        answer=schema.DatasetList,
        answered="Datasets",
    ),
    Operation(
        "buildDataset",
        "POST",
        "datasets/build",
        "datasets",
        "Build a dataset from the trajectories",
        body=schema.BuildDatasetRequest,
        answer=schema.DatasetAnswer,
        status=201,
        answered="The new dataset",
        errors={
            400: BAD_BODY,
            413: TOO_LARGE,
            502: SOURCE_DOWN,
            507: "Not enough disk space to write the dataset; nothing was kept",
            503: (
                "The build process ended without an answer (killed: out of "
                "memory?); nothing was kept"
            ),
        },
    ),
    Operation(
        "previewDataset",
        "POST",
        "datasets/preview",
        "datasets",
        ("Count what a build with these options would give, without writing anything"),
        description=(
            "Reads and filters the trajectories exactly as a build does. No "
            "trajectory qualifying is not an error here: the counts are 0."
        ),
        body=schema.BuildDatasetRequest,
        answer=schema.DatasetPreview,
        answered="The counts",
        errors={
            400: BAD_BODY,
            413: TOO_LARGE,
            502: SOURCE_DOWN,
            503: "The preview process ended without an answer (killed: out of memory?)",
        },
    ),
    Operation(
        "listJobs",
        "GET",
        "jobs",
        "jobs",
        "Training jobs, newest first",
        answer=schema.JobList,
        answered="Jobs",
    ),
    Operation(
        "startJob",
        "POST",
        "jobs",
        "jobs",
        "Start a training job (queued while another runs)",
        body=schema.StartJobRequest,
        answer=schema.JobAnswer,
        status=201,
        answered="The new job",
        errors={400: BAD_BODY, 404: UNKNOWN_ID, 409: CONFLICT, 413: TOO_LARGE},
    ),
    Operation(
        "getJob",
        "GET",
        "jobs/{id}",
        "jobs",
        "One job",
        answer=schema.JobAnswer,
        answered="The job",
        errors={404: UNKNOWN_ID},
        params=(Param("id", "path", {"type": "string", "minLength": 1}, "Job id"),),
    ),
    Operation(
        "cancelJob",
        "POST",
        "jobs/{id}/cancel",
        "jobs",
        "Cancel a queued or running job",
        answer=schema.JobAnswer,
        answered="The job, cancelled",
        errors={404: UNKNOWN_ID, 409: "The job already ended (completed, failed or cancelled)"},
        params=(Param("id", "path", {"type": "string", "minLength": 1}, "Job id"),),
    ),
    Operation(
        "getJobMetrics",
        "GET",
        "jobs/{id}/metrics",
        "jobs",
        "A job's metric history",
        answer=schema.MetricList,
        answered="Metrics in order",
        errors={400: BAD_BODY, 404: UNKNOWN_ID},
        params=(
            Param("id", "path", {"type": "string", "minLength": 1}, "Job id"),
            Param(
                "after",
                "query",
                {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT},
                "Only metrics with seq > after",
            ),
        ),
    ),
    Operation(
        "listModels",
        "GET",
        "models",
        "models",
        "Fine-tuned models, newest first",
        answer=schema.ModelList,
        answered="Models",
    ),
    Operation(
        "importOllama",
        "POST",
        "models/{id}/import-ollama",
        "models",
        "Convert the model to one GGUF and create it in a local Ollama",
        body=schema.ImportOllamaRequest,
        answer=schema.ImportOllamaAnswer,
        answered="Imported",
        errors={
            400: BAD_BODY,
            404: UNKNOWN_ID,
            409: CONFLICT,
            413: TOO_LARGE,
            502: "An upstream service (Ollama) failed",
        },
        params=(
            Param(
                "id",
                "path",
                {"type": "string", "minLength": 1},
                "Model id, name (or Ollama name) or latest (the newest model)",
            ),
        ),
    ),
    Operation(
        "activateModel",
        "POST",
        "models/{id}/activate",
        "models",
        "Make the model the agent's model (id, name or latest)",
        body=schema.ActivateRequest,
        answer=schema.ActivateAnswer,
        answered="Activated",
        errors={
            400: (
                "Bad input: body not JSON or not an object, unknown field, wrong "
                "type, non-loopback ollamaUrl, or an agent config that does not "
                "exist (pass create)"
            ),
            404: UNKNOWN_ID,
            409: (
                "Never benchmarked (benchmark it first, or force), worse than the "
                "base or active model (force overrides), not imported into Ollama "
                "without providerModel, or an agent config that is not a JSON "
                "object"
            ),
            413: TOO_LARGE,
        },
        params=(
            Param(
                "id",
                "path",
                {"type": "string", "minLength": 1},
                "Model id, name (or Ollama name) or latest (the newest model)",
            ),
        ),
    ),
    Operation(
        "benchmarkModel",
        "POST",
        "models/{id}/benchmark",
        "models",
        "Score the model and its base model on held-out examples",
        description=(
            "With `wait` true (the default) the answer is the benchmark, when it is done: "
            "minutes. With `wait` false the request is checked, the run starts and the "
            "answer is 202 with the BenchmarkRun at once; poll `GET "
            "/models/{id}/benchmark` or follow the events (benchmark_progress, then "
            "model_benchmarked or benchmark_failed, each with its runId)."
        ),
        body=schema.BenchmarkRequest,
        answer=schema.BenchmarkAnswer,
        answered="Scores",
        also={202: ("Started (wait false): the run, to poll", schema.BenchmarkRun)},
        errors={
            400: BAD_BODY,
            404: UNKNOWN_ID,
            409: (
                "The model is being benchmarked (the message names the run), its "
                "dataset has no held-out example, or its adapter is not a PEFT one"
            ),
            413: TOO_LARGE,
            503: (
                "The benchmark worker ended without an answer (killed, or it "
                "failed: the message says why)"
            ),
        },
        params=(
            Param(
                "id",
                "path",
                {"type": "string", "minLength": 1},
                "Model id, name (or Ollama name) or latest (the newest model)",
            ),
        ),
    ),
    Operation(
        "getBenchmarkRun",
        "GET",
        "models/{id}/benchmark",
        "models",
        "The model's newest benchmark run: running (with its progress), completed "
        "(with the benchmark) or failed (with why)",
        description=(
            "A run whose server stopped before it ended reads as failed "
            '("interrupted: the server stopped").'
        ),
        answer=schema.BenchmarkRun,
        answered="The run",
        errors={404: "Unknown id, or the model has no benchmark run"},
        params=(
            Param(
                "id",
                "path",
                {"type": "string", "minLength": 1},
                "Model id, name (or Ollama name) or latest (the newest model)",
            ),
        ),
    ),
    Operation(
        "streamEvents",
        "GET",
        "events",
        "events",
        (
            "Server-Sent Events: job_queued, job_started, job_stage, "
            "job_progress, job_log, job_completed, job_failed, job_cancelled, "
            "dataset_built, benchmark_progress, model_benchmarked, benchmark_failed, "
            "model_import_progress, model_imported, model_activated"
        ),
        description=(
            "Each message: `id: <seq>`, `event: <kind>`, `data: <Event JSON>`. "
            "Starts after the newest event, or after `Last-Event-ID` / `after` "
            "(0 replays the log). Heartbeat comments every 15 s."
        ),
        answer=schema.Event,
        media="text/event-stream",
        answered="The event stream; each event's `data` is an Event (JSON)",
        errors={400: BAD_BODY},
        params=(
            Param("after", "query", {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT}),
            Param(
                "timeout",
                "query",
                {"type": "number", "minimum": 0, "maximum": 86400},
                "End the stream after this many seconds",
            ),
            Param("Last-Event-ID", "header", {"type": "string"}),
        ),
    ),
    Operation(
        "getOpenAPI",
        "GET",
        "openapi.json",
        "status",
        "This document",
        answered="OpenAPI 3.1",
    ),
    Operation(
        "listBenchmarks",
        "GET",
        "models/{id}/benchmarks",
        "models",
        "A model's stored benchmarks, newest first",
        answer=schema.BenchmarkList,
        answered="Benchmarks",
        errors={404: UNKNOWN_ID},
        params=(
            Param(
                "id",
                "path",
                {"type": "string", "minLength": 1},
                "Model id, name (or Ollama name) or latest (the newest model)",
            ),
        ),
    ),
    Operation(
        "deactivateModel",
        "POST",
        "models/deactivate",
        "models",
        "Undo the last activation: the agent config as it was before it",
        body=schema.DeactivateRequest,
        answer=schema.DeactivateAnswer,
        answered="Rolled back",
        errors={400: BAD_BODY, 409: CONFLICT, 413: TOO_LARGE},
    ),
    Operation(
        "listActivations",
        "GET",
        "activations",
        "models",
        "Activation history, newest first",
        answer=schema.ActivationList,
        answered="Activations",
        errors={400: BAD_BODY},
        params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),),
    ),
    Operation(
        "getAuto",
        "GET",
        "auto",
        "auto",
        "The auto-improve policy, its state and recent decisions",
        answer=schema.AutoAnswer,
        answered="Auto-improve",
    ),
    Operation(
        "setAuto",
        "PUT",
        "auto",
        "auto",
        "Change the auto-improve policy (fields given; others kept)",
        body=schema.AutoPolicy,
        answer=schema.AutoAnswer,
        answered="Auto-improve",
        errors={400: BAD_BODY, 413: TOO_LARGE},
    ),
    Operation(
        "getAutoConfig",
        "GET",
        "auto/config",
        "agent",
        "The auto-improve policy as the agent's training config",
        answer=schema.AgentConfigAnswer,
        answered="Config",
    ),
    Operation(
        "setAutoConfig",
        "POST",
        "auto/config",
        "agent",
        ("Change the auto-improve policy from an agent config (fields given; others kept)"),
        body=schema.AgentTrainingConfigRequest,
        answer=schema.AgentConfigAnswer,
        answered="Config",
        errors={400: BAD_FIELDS, 413: TOO_LARGE},
    ),
    Operation(
        "getAutoStatus",
        "GET",
        "auto/status",
        "agent",
        "Where auto-improve stands, in the agent's trigger-status shape",
        answer=schema.AgentAutoStatus,
        answered="Status",
    ),
    Operation(
        "listAutoRuns",
        "GET",
        "auto/runs",
        "agent",
        (
            "Auto-improve rounds, newest first (queued manual triggers, the "
            "running round, then ended ones)"
        ),
        answer=schema.AgentRunList,
        answered="Runs",
        errors={400: "limit not an integer in 1..1000"},
        params=(
            Param(
                "limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}
            ),
        ),
    ),
    Operation(
        "triggerAuto",
        "POST",
        "auto/trigger",
        "agent",
        (
            "Start one manual auto-improve round in the background (no on/off "
            "switch, no cooldown; minNewTrajectories still applies); answers at "
            "once"
        ),
        body=schema.AgentTriggerRequest,
        answer=schema.AgentTriggerAnswer,
        status=201,
        answered="Run queued",
        errors={
            400: (
                "Bad input: body not JSON or not an object, unknown field, wrong "
                "type, out-of-range value, backend unavailable here"
            ),
            413: TOO_LARGE,
        },
    ),
    Operation(
        "getBackends",
        "GET",
        "backends",
        "agent",
        "Which training backends this machine can run",
        answer=schema.AgentBackends,
        answered="Backends",
    ),
    Operation(
        "exportTrajectories",
        "POST",
        "trajectories/export",
        "agent",
        ("Build a dataset from the newest trajectories and write its examples as one JSONL file"),
        body=schema.AgentExportRequest,
        answer=schema.AgentExportAnswer,
        status=201,
        answered="Exported",
        errors={
            400: (
                "Bad input: body not JSON or not an object, unknown field, wrong "
                "type, out-of-range value, nothing to export, outputPath not "
                "writable"
            ),
            409: "outputPath exists",
            413: TOO_LARGE,
            503: "The build process ended unexpectedly",
            507: "Disk full",
        },
    ),
)
#: Operations by id (``getJob``, ``startJob``, ...).
BY_ID: Mapping[str, Operation] = {op.id: op for op in OPERATIONS}
#: Operations by method and path (``("GET", "jobs/{id}")``): what a handler serves.
BY_ROUTE: Mapping[tuple[str, str], Operation] = {(op.method, op.path): op for op in OPERATIONS}
