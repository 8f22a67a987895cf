"""One round of improving the agent's model: build a dataset → train on it → benchmark the
model against its base → activate it when the gate lets it.

Auto-improve (``models/auto.py``) and ``make demo`` (``demo_pipeline.py``) both run their
rounds through ``advance`` here, so the two cannot drift apart: auto-improve takes one step
per tick and stores the ``RoundState`` between ticks (a killed server resumes the round
where it stood), the demo drives a round to its end with ``run_round`` and shows each
``Step`` as it comes. What a round does is fixed by its ``RoundSettings``, made from the
auto-improve policy or the demo's flags.

The service is typed by ``RoundService``: exactly the ``TrainingService`` methods a round
calls. (``TrainingService`` itself would be an import cycle: it makes the AutoImprover.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from ..api import schema
from ..errors import ConflictError, InputError, MiladyLabError
from ..state import LIVE_STATUSES, now_ms

Objective = Literal["sft", "dpo", "kto"]
ActivateMode = Literal["never", "if-better"]
#: What one step did; each is also the event auto-improve logs for it (``auto_trained``
#: is not logged: the job's own events say so, and the same tick goes on to benchmark).
StepKind = Literal[
    "auto_built",
    "auto_training",
    "auto_waiting",
    "auto_trained",
    "auto_benchmarked",
    "auto_activated",
    "auto_not_activated",
    "auto_done",
    "auto_failed",
]
#: The steps that end a round: its outcome.
ENDINGS: tuple[StepKind, ...] = ("auto_activated", "auto_not_activated", "auto_done", "auto_failed")
#: The dataset kind a round builds for each objective (``training.options.OBJECTIVE_KINDS``).
ROUND_KINDS: dict[Objective, str] = {"sft": "sft", "dpo": "pairs", "kto": "labelled"}


class RoundService(Protocol):
    """The service calls a round makes (``TrainingService`` has them all)."""

    def build_dataset(self, body: Any = None) -> schema.DatasetAnswer: ...

    def start_job(self, body: Any = None) -> schema.JobAnswer: ...

    def get_job(self, job_id: Any) -> schema.JobAnswer: ...

    def list_models(self) -> schema.ModelList: ...

    def get_model(self, model_id: Any) -> Mapping[str, schema.Model]: ...

    def benchmark_model(self, model_id: Any, body: Any = None) -> schema.BenchmarkAnswer: ...

    def import_ollama(self, model_id: Any, body: Any = None) -> schema.ImportOllamaAnswer: ...

    def activate_model(self, model_id: Any, body: Any = None) -> schema.ActivateAnswer: ...


@dataclass(frozen=True)
class RoundSettings:
    """What a round trains and when it activates. None: the job's own default."""

    objective: Objective = "sft"
    beta: float | None = None  # dpo/kto only
    iterations: int | None = None
    backend: str | None = None
    model: str | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    max_examples: int = 32  # benchmark examples
    activate: ActivateMode = "never"
    #: Import the model into Ollama before activating it; else the agent is pointed at
    #: ``local/<model name>`` (the demo when no Ollama answers).
    ollama_import: bool = True
    ollama_url: str | None = None
    ollama_base_model: str | None = None
    #: Create the agent config where it is missing (the demo's scratch config only).
    create_agent_config: bool = False

    @classmethod
    def from_policy(cls, policy: Mapping[str, Any]) -> RoundSettings:
        """The settings an auto-improve policy (``check_policy``'s fields) gives its rounds."""
        return cls(
            objective=policy.get("objective") or "sft",
            beta=policy.get("beta"),
            iterations=policy.get("iterations"),
            backend=policy.get("backend"),
            model=policy.get("model"),
            max_examples=int(policy.get("maxExamples") or 32),
            activate="if-better" if policy.get("activate") == "if-better" else "never",
            ollama_url=policy.get("ollamaUrl"),
            ollama_base_model=policy.get("ollamaBaseModel"),
        )


class RoundState(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Where a round stands, stored as JSON between auto-improve's ticks (camelCase keys:
    ``GET /auto`` and the agent's run records show it). ``outcome`` set: it ended."""

    id: str | None = None  # None: a failure before any round started
    stage: str | None = "build"  # build → train → training → benchmark → activate
    started_at: int | None = None
    #: ``threshold`` (enough new trajectories), ``manual`` (the agent's trigger), ``demo``.
    source: str = "threshold"
    task: str | None = None
    backend: str | None = None  # a manual trigger's backend, over the settings'
    dry_run: bool = False
    objective: str | None = None  # the one its dataset was built for
    dataset_id: str | None = None
    job_id: str | None = None
    model_id: str | None = None
    #: The kinds of the steps taken so far (waiting is not a step), in order.
    steps: list[str] = msgspec.field(default_factory=list)
    outcome: str | None = None
    message: str | None = None
    ended_at: int | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> RoundState:
        return msgspec.convert(dict(value), cls)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


@dataclass(frozen=True)
class Step:
    """One step of a round: what it did (``kind``, ``message``), the fields its event
    carries, and the service's answer (a dataset, job, benchmark or activation)."""

    kind: StepKind
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    answer: Mapping[str, Any] | None = None


class RoundFailed(MiladyLabError):
    """The round cannot go on (its job failed, its model is missing); the message says why."""

    status = 409


# -- the steps ------------------------------------------------------------------------------------
def build(svc: RoundService, settings: RoundSettings, rnd: RoundState) -> Step:
    """Build the dataset the objective trains on."""
    body = {} if settings.objective == "sft" else {"kind": ROUND_KINDS[settings.objective]}
    dataset = svc.build_dataset(body)["dataset"]
    rnd.stage, rnd.dataset_id, rnd.objective = "train", dataset["id"], settings.objective
    return Step(
        "auto_built",
        f"built dataset {dataset['id']} ({dataset['exampleCount']} examples)",
        {"datasetId": dataset["id"]},
        dataset,
    )


def train(svc: RoundService, settings: RoundSettings, rnd: RoundState) -> Step:
    """Start the training job on the round's dataset."""
    objective = rnd.objective or "sft"
    pairs = [] if objective == "sft" else [("objective", objective), ("beta", settings.beta)]
    body = {
        k: val
        for k, val in (
            ("datasetId", rnd.dataset_id),
            ("backend", rnd.backend or settings.backend),
            ("model", settings.model),
            ("iterations", settings.iterations),
            ("batchSize", settings.batch_size),
            ("learningRate", settings.learning_rate),
            *pairs,
        )
        if val is not None
    }
    job = svc.start_job(body)["job"]
    rnd.stage, rnd.job_id = "training", job["id"]
    return Step(
        "auto_training", f"training job {job['id']} on {rnd.dataset_id}", {"jobId": job["id"]}, job
    )


def follow(svc: RoundService, settings: RoundSettings, rnd: RoundState) -> Step:
    """Look at the job: still going (``auto_waiting``), or done with its model."""
    job = svc.get_job(rnd.job_id)["job"]
    if job["status"] in LIVE_STATUSES:
        return Step("auto_waiting", f"job {job['id']} is {job['status']}", answer=job)
    if job["status"] != "completed":
        why = job.get("error") or job["status"]
        raise RoundFailed(f"training job {job['id']} {job['status']}: {why}")
    models = svc.list_models()["models"]
    model = next((m for m in models if m.get("jobId") == job["id"]), None)
    if model is None:
        raise RoundFailed(f"training job {job['id']} completed without a model")
    rnd.stage, rnd.model_id = "benchmark", model["id"]
    return Step(
        "auto_trained", f"job {job['id']} trained model {model['id']}", {"modelId": model["id"]},
        job,
    )  # fmt: skip


def benchmark(svc: RoundService, settings: RoundSettings, rnd: RoundState) -> Step:
    """Score the model against its base (the gate reads this benchmark)."""
    bench = svc.benchmark_model(rnd.model_id, {"maxExamples": settings.max_examples})
    rnd.stage = "activate"
    scores = bench.get("scores") or {}
    shown = ", ".join(f"{k} {val:.2f}" for k, val in scores.items() if val is not None)
    return Step(
        "auto_benchmarked",
        f"model {rnd.model_id} benchmarked: {shown}",
        {"modelId": rnd.model_id, "scores": bench.get("scores")},
        bench,
    )


def activate(svc: RoundService, settings: RoundSettings, rnd: RoundState) -> Step:
    """Point the agent at the model when the settings ask and the gate lets it; this ends
    the round (a refusal by the gate is an outcome, not a failure)."""
    model_id = rnd.model_id
    if settings.activate != "if-better":
        return finish(rnd, "auto_done", f"model {model_id} kept; policy activate=never")
    model = svc.get_model(model_id)["model"]
    body: dict[str, str | bool] = {}
    if model.get("ollamaName"):
        pass
    elif settings.ollama_import:
        where = {"ollamaUrl": settings.ollama_url, "baseModel": settings.ollama_base_model}
        svc.import_ollama(model_id, {k: val for k, val in where.items() if val})
    else:
        body["providerModel"] = f"local/{model['name']}"
    if settings.ollama_url:  # the Ollama asked whether it has the model
        body["ollamaUrl"] = settings.ollama_url
    if settings.create_agent_config:
        body["create"] = True
    try:
        answer = svc.activate_model(model_id, body)
    except (ConflictError, InputError) as exc:  # the gate, or no agent config there
        return finish(rnd, "auto_not_activated", exc.message)
    warned = "".join(f"; warning: {w}" for w in answer.get("warnings", []))
    return finish(
        rnd, "auto_activated", f"model {model_id} passed the gate: the agent now uses "
        f"{answer['activeModel']}{warned}", answer,
    )  # fmt: skip


def finish(
    rnd: RoundState, kind: StepKind, message: str, answer: Mapping[str, Any] | None = None
) -> Step:
    """End the round with this outcome."""
    rnd.outcome, rnd.message, rnd.ended_at = kind, message, now_ms()
    return Step(kind, message, {"roundId": rnd.id or None, "modelId": rnd.model_id}, answer)


def fail(rnd: RoundState, reason: str) -> Step:
    """End the round as failed, with the reason (a step raised, or it cannot be resumed)."""
    step = finish(rnd, "auto_failed", reason)
    rnd.steps.append(step.kind)
    return step


_STEPS: dict[str, Callable[[RoundService, RoundSettings, RoundState], Step]] = {
    "build": build,
    "train": train,
    "training": follow,
    "benchmark": benchmark,
    "activate": activate,
}


def advance(svc: RoundService, settings: RoundSettings, rnd: RoundState) -> Step:
    """Take the round's next step (``rnd`` is updated in place); a MiladyLabError from the
    service (or RoundFailed) means the round cannot go on: end it with ``fail``."""
    if rnd.outcome is not None:
        raise RoundFailed(f"round {rnd.id} already ended: {rnd.outcome}")
    step = _STEPS.get(rnd.stage or "")
    if step is None:
        raise RoundFailed(f"unknown round stage {rnd.stage!r}")
    out = step(svc, settings, rnd)
    if out.kind != "auto_waiting":
        rnd.steps.append(out.kind)
    return out


def run_round(
    svc: RoundService,
    settings: RoundSettings,
    rnd: RoundState,
    on_step: Callable[[Step], None] | None = None,
    poll_s: float = 0.5,
) -> RoundState:
    """``advance`` until the round ends, ``on_step`` seeing every step (waiting included:
    a progress bar follows the job on those); a failure ends the round as ``auto_failed``."""
    while rnd.outcome is None:
        try:
            step = advance(svc, settings, rnd)
        except MiladyLabError as exc:
            step = fail(rnd, exc.message)
        if on_step is not None:
            on_step(step)
        if step.kind == "auto_waiting":
            time.sleep(poll_s)
    return rnd
