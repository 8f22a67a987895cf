"""What the Milady agent's own client expects of ``/api/training``, mapped onto milady-lab.

The agent serves the same routes, and its app client (``MiladyClient``) reads fields
and routes that milady-lab's documented 13 routes do not have. Where the agent's code
and our spec disagree the agent's code wins, so this module holds, in one place:

* the agent's extra record fields (``sampleCount`` and the file paths of a dataset, a
  job's ``phase``, a model's ``sourceModel``/``ollamaModel``/``modelPath``/``outputDir``),
  added beside ours, never replacing them;
* the six routes the agent serves besides the 13 (``auto/config``, ``auto/status``,
  ``auto/runs``, ``auto/trigger``, ``backends``, ``trajectories/export``), answered with
  the agent's body shapes and done by milady-lab's own auto-improve, backends and
  dataset builder.

Sources (read from the agent's code): milady-ai/milady ``src/api/training-routes.ts``,
``src/api/training-routes.test.ts``, ``apps/app/src/api-client.ts``; elizaOS/eliza
``plugins/app-training/src/routes/training-routes.ts``, ``core/training-config.ts``,
``core/training-orchestrator.ts``, ``services/training-trigger.ts``, and
``packages/agent/src/api/training-backend-check.ts``.

milady-lab has one pipeline (every LLM call trains one model); the agent buckets calls
into five tasks. Our pipeline is reported as the agent's ``response`` task, the bucket
the agent itself counts a trajectory toward when nothing narrower applies.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from . import validation as v
from .api import decode
from .api.schema import (
    AgentAutoStatus,
    AgentBackends,
    AgentExportAnswer,
    AgentExportRequest,
    AgentRun,
    AgentRunList,
    AgentTrainingConfig,
    AgentTrainingConfigRequest,
    AgentTriggerAnswer,
    AgentTriggerRequest,
    BuildDatasetRequest,
    Dataset,
    Job,
    JsonObject,
    Model,
)
from .atomic import atomic_file
from .errors import ConflictError, InputError, StorageError
from .state import Row, new_id, now_ms

log = logging.getLogger(__name__)

#: The agent's training tasks (``ALL_TRAINING_TASKS``); ours is reported as ``response``.
TASKS = ("should_respond", "context_routing", "action_planner", "response", "media_description")
OUR_TASK = "response"
#: An ended round's outcome → the agent's run status.
_RUN_STATUS = {
    "auto_done": "succeeded",
    "auto_activated": "succeeded",
    "auto_not_activated": "succeeded",
    "auto_failed": "failed",
}


def iso(ms: Any) -> str | None:
    """ms since epoch as the agent writes times (ISO 8601, UTC), None stays None."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")  # as JavaScript's toISOString writes it


# -- records: the agent's extra fields ----------------------------------------------------------
def dataset_record(rec: Mapping[str, Any]) -> Dataset:
    """A dataset row as its record, with the agent's ``sampleCount`` and the paths of
    its files."""
    extra: JsonObject = {"sampleCount": rec.get("exampleCount")}
    folder = rec.get("path")
    if isinstance(folder, str) and folder:
        base = Path(folder)
        extra["jsonlPath"] = str(base / "train.jsonl")  # the agent's one training file
        extra["validPath"] = str(base / "valid.jsonl")
        extra["metadataPath"] = str(base / "metadata.json")
    return msgspec.convert({**rec, **extra}, Dataset)


def job_record(rec: Mapping[str, Any]) -> Job:
    """A job row as its record, with the agent's ``phase`` (its status) and ``modelId``
    (absent until it completed); the row's private fields (pid, heartbeat) left out."""
    return msgspec.convert({"phase": rec.get("status"), "modelId": None, **rec}, Job)


def model_fields(rec: Mapping[str, Any]) -> Row:
    """A model row with the agent's names for its base, Ollama name and files: what the
    model code (import, activation, benchmark, chat) reads."""
    adapter = rec.get("adapterPath")
    return {
        **rec,
        "sourceModel": rec.get("baseModel"),
        "ollamaModel": rec.get("ollamaName"),
        "modelPath": adapter,
        "outputDir": str(Path(adapter).parent) if isinstance(adapter, str) and adapter else None,
    }


def model_record(rec: Mapping[str, Any]) -> Model:
    """A model row as its record (``model_fields``)."""
    return msgspec.convert(model_fields(rec), Model)


def status_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The agent's status counters (``Status`` fields) from ``StateStore.counts()``."""
    return {
        "running_jobs": counts.get("running", 0),
        "queued_jobs": counts.get("queued", 0),
        "completed_jobs": counts.get("completed", 0),
        "failed_jobs": counts.get("failed", 0),
        "dataset_count": counts.get("datasets", 0),
        "model_count": counts.get("models", 0),
    }


# -- GET /backends --------------------------------------------------------------------------------
def backends_body() -> AgentBackends:
    """``{"backends": {"mlx", "cuda", "cpu": bool}}`` as the agent's backend check answers."""
    from .training.backends import BACKENDS, available_backends, best_backend

    avail = available_backends()
    return AgentBackends(
        backends={name: name in avail for name in BACKENDS},
        available=avail,  # type: ignore[arg-type]  # names from BACKENDS
        best=best_backend(),  # type: ignore[arg-type]
    )


# -- auto/config and auto/status -------------------------------------------------------------------
def config_of(policy: Mapping[str, Any]) -> AgentTrainingConfig:
    """The agent's ``TrainingConfig`` of an auto-improve policy."""
    from .training.backends import best_backend

    return AgentTrainingConfig(
        auto_train=bool(policy["enabled"]),
        trigger_threshold=int(policy["minNewTrajectories"]),
        trigger_cooldown_hours=float(policy["cooldownHours"]),
        # Where a round trains: the pinned backend, else the best one here.
        backends=[policy.get("backend") or best_backend()],
    )


def policy_body(body: AgentTrainingConfigRequest | JsonObject | None) -> JsonObject:
    """An agent config body → the auto-improve policy fields it sets.

    Like the agent's ``normalizeTrainingConfig``: keys it does not know (its
    ``perTaskOverrides``, ...) and backends milady-lab has not (``native``, ``vertex``,
    ...) are dropped; a known key of the wrong type is a 400 naming it."""
    from .training.backends import BACKENDS

    req = decode.body(body, AgentTrainingConfigRequest, strict=False)
    out: JsonObject = {}  # the agent's body has no nulls: a field is given or UNSET
    if not isinstance(req.auto_train, msgspec.UnsetType):
        out["enabled"] = req.auto_train
    if not isinstance(req.trigger_threshold, msgspec.UnsetType):
        out["minNewTrajectories"] = int(req.trigger_threshold)  # floored: it is at least 1
    if not isinstance(req.trigger_cooldown_hours, msgspec.UnsetType):
        out["cooldownHours"] = req.trigger_cooldown_hours
    if not isinstance(req.backends, msgspec.UnsetType):
        ours = [n for n in req.backends if isinstance(n, str) and n in BACKENDS]
        out["backend"] = ours[0] if ours else None
    return out


def status_body(auto: Any, watching: bool) -> AgentAutoStatus:
    """``GET /auto/status`` in the agent's ``TriggerStatusSnapshot`` shape."""
    policy, state = auto.policy(), auto.state()
    threshold = int(policy["minNewTrajectories"])
    cooldown_ms = int(float(policy["cooldownHours"]) * 3_600_000)
    counters = dict.fromkeys(TASKS, 0)
    counters[OUR_TASK] = int(state.get("newTrajectories") or 0)
    last = state.get("lastRound") or {}
    last_train: dict[str, JsonObject] = {}
    if last.get("id"):
        last_train[OUR_TASK] = {
            "runId": last["id"],
            "source": last.get("source", "threshold"),
            "finishedAt": iso(last.get("endedAt")),
            "status": _RUN_STATUS.get(str(last.get("outcome")), "skipped"),
        }
    return AgentAutoStatus(
        auto_train_enabled=bool(policy["enabled"]),
        trigger_threshold=threshold,
        cooldown_hours=float(policy["cooldownHours"]),
        counters=counters,
        last_train=last_train,
        per_task_thresholds=dict.fromkeys(TASKS, threshold),
        per_task_cooldown_ms=dict.fromkeys(TASKS, cooldown_ms),
        # The agent's "a trigger service fires runs by itself": our watcher runs here.
        service_registered=bool(watching),
        round=state.get("round"),
        last_decision=state.get("lastDecision"),
    )


# -- auto/runs and auto/trigger ------------------------------------------------------------------
class AgentRuns:
    """Manual triggers run in a background thread, and the run records the agent reads."""

    def __init__(self, service: Any) -> None:
        self.service = service
        #: Manual rounds started and not yet recorded, by id (the round dicts of ``auto``).
        self._pending: dict[str, JsonObject] = {}
        self._lock = threading.Lock()

    def trigger(self, body: AgentTriggerRequest | JsonObject | None) -> AgentTriggerAnswer:
        """Start one manual round in the background; the agent's ``{runId, status, run}``."""
        from .training.backends import check_backend

        req = decode.body(body, AgentTriggerRequest, strict=False)
        backend = req.backend or None
        if backend is not None:
            check_backend(backend)  # 400 naming the backends, or what to install
        run: JsonObject = {
            "id": new_id("run"),
            "source": "manual",
            "startedAt": now_ms(),
            "task": req.task or None,
            "backend": backend,
            "dryRun": bool(req.dry_run),
        }
        with self._lock:
            self._pending[run["id"]] = run
        thread = threading.Thread(
            target=self._run, args=(run,), name="milady-auto-trigger", daemon=True
        )
        thread.start()
        record = self.record(run, queued=True)
        return AgentTriggerAnswer(run_id=record.run_id, status=record.status, run=record)

    def _run(self, run: JsonObject) -> None:
        auto = self.service.auto
        manual = {k: val for k, val in run.items() if k != "startedAt" and val is not None}
        try:
            decisions = auto.run_once(manual=manual)
        except Exception as exc:  # the store failed: say so in the run, never lose it
            log.exception("milady-lab manual auto-improve run failed")
            decisions = [{"kind": "auto_failed", "message": f"internal error ({exc})"}]
        try:
            if not self._round_started(auto, run["id"]):
                last = decisions[-1] if decisions else {"kind": "auto_skipped", "message": ""}
                auto.record_run(
                    {**run, "endedAt": now_ms(), "outcome": last["kind"],
                     "message": last["message"]}
                )  # fmt: skip
        finally:
            with self._lock:
                self._pending.pop(run["id"], None)

    @staticmethod
    def _round_started(auto: Any, run_id: str) -> bool:
        if (auto.state().get("round") or {}).get("id") == run_id:
            return True
        return any(r.get("id") == run_id for r in auto.runs()[:20])

    def runs(self, limit: Any = None) -> AgentRunList:
        """``GET /auto/runs``: queued triggers, the running round, then ended ones."""
        limit_i = v.integer(limit, "limit", default=20, minimum=1, maximum=1000)
        assert limit_i is not None
        auto = self.service.auto
        rounds: list[tuple[Mapping[str, Any], bool]] = []
        current = auto.state().get("round")
        with self._lock:
            pending = [p for p in self._pending.values() if not current or p["id"] != current["id"]]
        rounds += [(p, True) for p in reversed(pending)]
        if current:
            rounds.append((current, False))
        seen = {r["id"] for r, _ in rounds}
        rounds += [(r, False) for r in auto.runs() if r.get("id") not in seen]
        return AgentRunList(runs=[self.record(r, queued=q) for r, q in rounds[:limit_i]])

    def record(self, rnd: Mapping[str, Any], *, queued: bool = False) -> AgentRun:
        """The agent's ``TrainingRunRecord`` of a round (milady-lab's ids beside it)."""
        store = self.service.store
        outcome = rnd.get("outcome")
        if queued:
            status = "queued"
        elif outcome is None:
            status = "running"
        else:
            status = _RUN_STATUS.get(str(outcome), "skipped")
        dataset = store.get_dataset(rnd["datasetId"]) if rnd.get("datasetId") else None
        model = store.get_model(rnd["modelId"]) if rnd.get("modelId") else None
        job = store.get_job(rnd["jobId"]) if rnd.get("jobId") else None
        redactions = (dataset or {}).get("redactions") or {}
        trajectories = int((dataset or {}).get("trajectoryCount") or 0)
        return AgentRun(
            run_id=str(rnd.get("id")),
            status=status,  # type: ignore[arg-type]  # one of _RUN_STATUS's, queued, running
            reason=rnd.get("message"),
            task=rnd.get("task"),
            backend=rnd.get("backend") or (job or {}).get("backend"),
            source=rnd.get("source", "threshold"),
            dataset_size=int((dataset or {}).get("exampleCount") or 0),
            started_at=iso(rnd.get("startedAt")),
            finished_at=iso(rnd.get("endedAt")),
            artifact_path=(model or {}).get("adapterPath"),
            pulled_trajectories=trajectories,
            filtered_trajectories=trajectories,
            redaction_count=int(sum(n for n in redactions.values() if isinstance(n, int))),
            anonymization_count=int(redactions.get("handle", 0) or 0),
            dry_run=bool(rnd.get("dryRun")),
            notes=[],
            stage=rnd.get("stage"),
            outcome=outcome,
            dataset_id=rnd.get("datasetId"),
            job_id=rnd.get("jobId"),
            model_id=rnd.get("modelId"),
        )


# -- POST /trajectories/export ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExportRequest:
    """A checked export body: the build it needs and the target (None: under exports/)."""

    build: BuildDatasetRequest
    output_path: str | None


def export_request(body: AgentExportRequest | JsonObject | None) -> ExportRequest:
    """The export body checked (a 400 naming the field), before any work."""
    req = decode.body(body, AgentExportRequest, strict=False)
    return ExportRequest(BuildDatasetRequest(limit=req.limit or 100), req.output_path)


def write_export(home: Path, dataset: Dataset, output_path: str | None) -> AgentExportAnswer:
    """The dataset's examples (train then valid) as one JSONL file; the agent's answer.

    The file is written beside its target and renamed into place; an existing file is
    never overwritten (409)."""
    try:
        if output_path is None:
            target = home / "exports" / f"trajectories-{dataset.id}.jsonl"
        else:
            target = Path(output_path).expanduser().absolute()
        exists = target.exists()
    except (OSError, RuntimeError):  # a name too long, "~nosuchuser/...": not a usable path
        raise InputError(f"outputPath {str(output_path)[:200]!r} is not a usable path") from None
    if exists:
        raise ConflictError(f"{target} exists; choose another outputPath")
    folder = Path(str(dataset.path))
    try:
        with atomic_file(target) as tmp, tmp.open("wb") as out:
            for name in ("train.jsonl", "valid.jsonl"):
                with (folder / name).open("rb") as part:
                    shutil.copyfileobj(part, out)
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise StorageError(f"no space left to write {target}") from None
        raise InputError(f"cannot write outputPath {str(target)[:200]!r}: {exc.strerror}") from None
    return AgentExportAnswer(
        exported_examples=dataset.example_count,
        trajectories_considered=dataset.trajectory_count,
        output_path=str(target),
        dataset_id=dataset.id,
    )
