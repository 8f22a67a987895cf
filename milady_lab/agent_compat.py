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
import math
import shutil
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import validation as v
from .atomic import atomic_file
from .errors import ConflictError, InputError, StorageError
from .state import new_id, now_ms

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
EXPORT_FIELDS = ("limit", "outputPath")
TRIGGER_FIELDS = ("task", "backend", "dryRun")


def iso(ms: Any) -> str | None:
    """ms since epoch as the agent writes times (ISO 8601, UTC), None stays None."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")  # as JavaScript's toISOString writes it


# -- records: the agent's extra fields ----------------------------------------------------------
def dataset_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset with the agent's ``sampleCount`` and the paths of its files."""
    out = dict(rec)
    out["sampleCount"] = rec.get("exampleCount")
    folder = rec.get("path")
    if isinstance(folder, str) and folder:
        base = Path(folder)
        out["jsonlPath"] = str(base / "train.jsonl")  # the agent's one training file
        out["validPath"] = str(base / "valid.jsonl")
        out["metadataPath"] = str(base / "metadata.json")
    return out


def job_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A job with the agent's ``phase`` and ``modelId`` (null until it completed)."""
    out = dict(rec)
    out.setdefault("phase", rec.get("status"))
    out.setdefault("modelId", None)
    return out


def model_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A model with the agent's names for its base, Ollama name and files."""
    out = dict(rec)
    out["sourceModel"] = rec.get("baseModel")
    out["ollamaModel"] = rec.get("ollamaName")
    adapter = rec.get("adapterPath")
    out["modelPath"] = adapter
    out["outputDir"] = str(Path(adapter).parent) if isinstance(adapter, str) and adapter else None
    return out


def status_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The agent's status counters from ``StateStore.counts()``."""
    return {
        "runningJobs": counts.get("running", 0),
        "queuedJobs": counts.get("queued", 0),
        "completedJobs": counts.get("completed", 0),
        "failedJobs": counts.get("failed", 0),
        "datasetCount": counts.get("datasets", 0),
        "modelCount": counts.get("models", 0),
    }


# -- GET /backends --------------------------------------------------------------------------------
def backends_body() -> dict[str, Any]:
    """``{"backends": {"mlx", "cuda", "cpu": bool}}`` as the agent's backend check answers."""
    from .training.backends import BACKENDS, available_backends, best_backend

    avail = available_backends()
    return {
        "backends": {name: name in avail for name in BACKENDS},
        "available": avail,
        "best": best_backend(),
    }


# -- auto/config and auto/status -------------------------------------------------------------------
def config_of(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's ``TrainingConfig`` of an auto-improve policy."""
    from .training.backends import best_backend

    return {
        "autoTrain": bool(policy["enabled"]),
        "triggerThreshold": int(policy["minNewTrajectories"]),
        "triggerCooldownHours": float(policy["cooldownHours"]),
        # Where a round trains: the pinned backend, else the best one here.
        "backends": [policy.get("backend") or best_backend()],
    }


def policy_body(body: Any) -> dict[str, Any]:
    """An agent config body → the auto-improve policy fields it sets.

    Like the agent's ``normalizeTrainingConfig``: keys it does not know (its
    ``perTaskOverrides``, ...) and backends milady-lab has not (``native``, ``vertex``,
    ...) are dropped; a known key of the wrong type is a 400 naming it."""
    from .training.backends import BACKENDS

    if body is None:
        return {}  # no body: nothing changes
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    out: dict[str, Any] = {}
    if "autoTrain" in body:
        if not isinstance(body["autoTrain"], bool):
            raise InputError("autoTrain must be true or false")
        out["enabled"] = body["autoTrain"]
    if "triggerThreshold" in body:
        out["minNewTrajectories"] = _floored(body["triggerThreshold"], "triggerThreshold")
    if "triggerCooldownHours" in body:
        out["cooldownHours"] = v.number(body["triggerCooldownHours"], "triggerCooldownHours")
    if "backends" in body:
        names = body["backends"]
        if not isinstance(names, list):
            raise InputError("backends must be a list of backend names")
        ours = [n for n in names if isinstance(n, str) and n in BACKENDS]
        out["backend"] = ours[0] if ours else None
    return out


def _floored(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a number")
    return math.floor(value)


def status_body(auto: Any, watching: bool) -> dict[str, Any]:
    """``GET /auto/status`` in the agent's ``TriggerStatusSnapshot`` shape."""
    policy, state = auto.policy(), auto.state()
    cooldown_ms = int(float(policy["cooldownHours"]) * 3_600_000)
    counters = dict.fromkeys(TASKS, 0)
    counters[OUR_TASK] = int(state.get("newTrajectories") or 0)
    last = state.get("lastRound") or {}
    last_train = {}
    if last.get("id"):
        last_train[OUR_TASK] = {
            "runId": last["id"],
            "source": last.get("source", "threshold"),
            "finishedAt": iso(last.get("endedAt")),
            "status": _RUN_STATUS.get(str(last.get("outcome")), "skipped"),
        }
    return {
        "autoTrainEnabled": bool(policy["enabled"]),
        "triggerThreshold": int(policy["minNewTrajectories"]),
        "cooldownHours": float(policy["cooldownHours"]),
        "counters": counters,
        "lastTrain": last_train,
        "perTaskThresholds": dict.fromkeys(TASKS, int(policy["minNewTrajectories"])),
        "perTaskCooldownMs": dict.fromkeys(TASKS, cooldown_ms),
        # The agent's "a trigger service fires runs by itself": our watcher runs here.
        "serviceRegistered": bool(watching),
        "round": state.get("round"),
        "lastDecision": state.get("lastDecision"),
    }


# -- auto/runs and auto/trigger ------------------------------------------------------------------
class AgentRuns:
    """Manual triggers run in a background thread, and the run records the agent reads."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def trigger(self, body: Any) -> dict[str, Any]:
        """Start one manual round in the background; the agent's ``{runId, status, run}``."""
        from .training.backends import check_backend

        fields = v.body_object(body, TRIGGER_FIELDS)
        task = v.choice(fields.get("task") or None, "task", TASKS)
        backend = v.text(fields.get("backend") or None, "backend", max_length=20)
        if backend is not None:
            check_backend(backend)  # 400 naming the backends, or what to install
        dry_run = fields.get("dryRun")
        if dry_run is not None and not isinstance(dry_run, bool):
            raise InputError("dryRun must be true or false")
        run = {
            "id": new_id("run"),
            "source": "manual",
            "startedAt": now_ms(),
            "task": task,
            "backend": backend,
            "dryRun": bool(dry_run),
        }
        with self._lock:
            self._pending[run["id"]] = run
        thread = threading.Thread(
            target=self._run, args=(run,), name="milady-auto-trigger", daemon=True
        )
        thread.start()
        record = self.record(run, queued=True)
        return {"runId": record["runId"], "status": record["status"], "run": record}

    def _run(self, run: dict[str, Any]) -> None:
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

    def runs(self, limit: Any = None) -> dict[str, Any]:
        """``GET /auto/runs``: queued triggers, the running round, then ended ones."""
        limit_i = v.integer(limit, "limit", default=20, minimum=1, maximum=1000)
        assert limit_i is not None
        auto = self.service.auto
        rounds: list[tuple[dict[str, Any], bool]] = []
        current = auto.state().get("round")
        with self._lock:
            pending = [p for p in self._pending.values() if not current or p["id"] != current["id"]]
        rounds += [(p, True) for p in reversed(pending)]
        if current:
            rounds.append((current, False))
        seen = {r["id"] for r, _ in rounds}
        rounds += [(r, False) for r in auto.runs() if r.get("id") not in seen]
        return {"runs": [self.record(r, queued=q) for r, q in rounds[:limit_i]]}

    def record(self, rnd: Mapping[str, Any], *, queued: bool = False) -> dict[str, Any]:
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
        return {
            "runId": rnd.get("id"),
            "status": status,
            "reason": rnd.get("message"),
            "task": rnd.get("task"),
            "backend": rnd.get("backend") or (job or {}).get("backend"),
            "source": rnd.get("source", "threshold"),
            "datasetSize": int((dataset or {}).get("exampleCount") or 0),
            "startedAt": iso(rnd.get("startedAt")),
            "finishedAt": iso(rnd.get("endedAt")),
            "artifactPath": (model or {}).get("adapterPath"),
            "pulledTrajectories": trajectories,
            "filteredTrajectories": trajectories,
            "redactionCount": int(sum(n for n in redactions.values() if isinstance(n, int))),
            "anonymizationCount": int(redactions.get("handle", 0) or 0),
            "dryRun": bool(rnd.get("dryRun")),
            "notes": [],
            "stage": rnd.get("stage"),
            "outcome": outcome,
            "datasetId": rnd.get("datasetId"),
            "jobId": rnd.get("jobId"),
            "modelId": rnd.get("modelId"),
        }


# -- POST /trajectories/export ---------------------------------------------------------------------
def export_request(body: Any) -> dict[str, Any]:
    """The checked export body: the build body and the target path (None: under exports/)."""
    fields = v.body_object(body, EXPORT_FIELDS)
    limit = v.integer(fields.get("limit"), "limit", default=100, minimum=1, maximum=10**7)
    out = v.text(fields.get("outputPath"), "outputPath", max_length=4096)
    return {"build": {"limit": limit}, "outputPath": out}


def write_export(home: Path, dataset: Mapping[str, Any], output_path: str | None) -> dict[str, Any]:
    """The dataset's examples (train then valid) as one JSONL file; the agent's answer.

    The file is written beside its target and renamed into place; an existing file is
    never overwritten (409)."""
    try:
        if output_path is None:
            target = home / "exports" / f"trajectories-{dataset['id']}.jsonl"
        else:
            target = Path(output_path).expanduser().absolute()
        exists = target.exists()
    except (OSError, RuntimeError):  # a name too long, "~nosuchuser/...": not a usable path
        raise InputError(f"outputPath {str(output_path)[:200]!r} is not a usable path") from None
    if exists:
        raise ConflictError(f"{target} exists; choose another outputPath")
    folder = Path(str(dataset["path"]))
    try:
        with atomic_file(target) as tmp, tmp.open("wb") as out:
            for name in ("train.jsonl", "valid.jsonl"):
                with (folder / name).open("rb") as part:
                    shutil.copyfileobj(part, out)
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            raise StorageError(f"no space left to write {target}") from None
        raise InputError(f"cannot write outputPath {str(target)[:200]!r}: {exc.strerror}") from None
    return {
        "exportedExamples": int(dataset.get("exampleCount") or 0),
        "trajectoriesConsidered": int(dataset.get("trajectoryCount") or 0),
        "outputPath": str(target),
        "datasetId": dataset["id"],
    }
