"""Auto-improve: build → train → benchmark → activate-if-better, by itself, when enough
new trajectories arrived.

The policy (off by default) lives in the state store, so the Jupyter server, a
``milady-lab auto watch`` terminal and the CLI all see the same one. A *round* is one
pass through the steps; where it stands (``round.stage`` plus the ids it made) is
written to the store before each step starts, so a watcher that dies mid-round leaves
the next one a round to finish, never one to start over.

Two watchers at once: every tick first takes the ``auto`` lease in the store (a row
with an owner and an expiry, renewed by a heartbeat thread while a step runs). Only
the holder decides or acts; the other tick answers ``busy``. A holder killed with
kill -9 stops renewing and its lease runs out after ``LEASE_TTL_MS``.

Every decision is an event (``auto_skipped``, ``auto_built``, ``auto_training``,
``auto_benchmarked``, ``auto_activated``, ``auto_not_activated``, ``auto_failed``,
``auto_done``) with its reason in the message; an unchanged decision on the next tick
(the same skip reason) is not logged again. A failing step ends the round with
``auto_failed`` and the reason; the next round waits for the cooldown, which starts
when a round starts: nothing retries in a tight loop.

A *manual* round (``run_once(manual=...)``: the agent's ``POST /api/training/auto/trigger``)
skips the on/off switch and the cooldown, as the agent's manual trigger does, but still
needs ``minNewTrajectories`` new trajectories; with ``dryRun`` it only says whether a
round would start. Every ended round is appended to ``RUNS_KEY`` (the run history).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from .. import validation as v
from ..errors import ConflictError, InputError, MiladyLabError
from ..state import LIVE_STATUSES, EvalStore, now_ms

log = logging.getLogger(__name__)

POLICY_KEY = "auto.policy"
STATE_KEY = "auto.state"
#: Ended rounds (and manual triggers that started none), oldest first: ``GET /auto/runs``.
RUNS_KEY = "auto.runs"
MAX_RUNS = 200
LEASE = "auto"
LEASE_TTL_MS = 90_000
HEARTBEAT_S = 20.0
#: Seconds between a watcher's checks of the source.
WATCH_INTERVAL_S = 300.0
ACTIVATE_CHOICES = ("never", "if-better")
BACKENDS = ("mlx", "cuda", "cpu")

DEFAULT_POLICY: dict[str, Any] = {
    "enabled": False,
    "minNewTrajectories": 100,
    "cooldownHours": 12.0,
    "iterations": None,  # None: the job default
    "backend": None,  # None: the best available
    "model": None,  # None: the default base model
    "activate": "never",
    "maxExamples": 32,
    "ollamaUrl": None,  # where an if-better model is imported before activation
    "ollamaBaseModel": None,
    #: What a round trains (issue 27): sft, or dpo/kto on a pairs/labelled dataset the
    #: round builds; β for dpo/kto (None: the job default).
    "objective": "sft",
    "beta": None,
}
#: The dataset kind a round builds for each objective (``training.options.OBJECTIVE_KINDS``).
ROUND_KINDS = {"sft": "sft", "dpo": "pairs", "kto": "labelled"}


# -- the policy ---------------------------------------------------------------------------------
def check_policy(body: Any, current: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with the fields ``body`` sets, each checked; InputError names a bad one."""
    b = v.body_object(body, tuple(DEFAULT_POLICY))
    out = {**DEFAULT_POLICY, **current}
    if b.get("enabled") is not None:  # null keeps the current value, like the other fields
        out["enabled"] = _bool(b["enabled"], "enabled")
    if "minNewTrajectories" in b:
        out["minNewTrajectories"] = v.integer(
            b["minNewTrajectories"], "minNewTrajectories", minimum=1, maximum=10**9
        )
    if "cooldownHours" in b:
        hours = v.number(b["cooldownHours"], "cooldownHours", maximum=8760)
        if hours is not None and hours < 0:
            raise InputError(f"cooldownHours must be at least 0, got {hours:g}")
        out["cooldownHours"] = hours
    if "iterations" in b:
        out["iterations"] = v.integer(b["iterations"], "iterations", minimum=1, maximum=10**6)
    if "backend" in b:
        out["backend"] = v.choice(b["backend"], "backend", BACKENDS) if b["backend"] else None
    if "model" in b:
        from ..training.options import check_model  # a typo is a 400 now, not a failed round

        model = v.text(b["model"], "model", max_length=1000)
        out["model"] = None if model is None else check_model(model)
    if "activate" in b:
        out["activate"] = v.choice(b["activate"], "activate", ACTIVATE_CHOICES) or "never"
    if "maxExamples" in b:
        out["maxExamples"] = v.integer(b["maxExamples"], "maxExamples", minimum=1, maximum=1000)
    if "ollamaUrl" in b:
        from .handoff.loopback import check_loopback_url

        url = v.text(b["ollamaUrl"], "ollamaUrl", max_length=500)
        out["ollamaUrl"] = None if url is None else check_loopback_url(url)
    if "ollamaBaseModel" in b:
        out["ollamaBaseModel"] = v.text(b["ollamaBaseModel"], "ollamaBaseModel", max_length=200)
    if "objective" in b:
        out["objective"] = v.choice(b["objective"], "objective", tuple(ROUND_KINDS))
    if "beta" in b:
        out["beta"] = v.number(b["beta"], "beta", exclusive_minimum=0.0, maximum=100.0)
    for key in ("minNewTrajectories", "cooldownHours", "activate", "maxExamples", "objective"):
        if out[key] is None:
            out[key] = DEFAULT_POLICY[key]
    return out


def _objective_fields(rnd: Mapping[str, Any], policy: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A round's ``objective`` (the one it built its dataset for) and β, for its job;
    nothing for sft, so an sft round's job body is what it always was."""
    objective = rnd.get("objective") or "sft"
    if objective == "sft":
        return []
    return [("objective", objective), ("beta", policy.get("beta"))]


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
        return value.lower() in ("true", "on", "1")
    raise InputError(f"{name} must be true or false")


# -- one watcher's ticks --------------------------------------------------------------------------
class AutoImprover:
    """The auto-improve steps over one ``TrainingService``; ``tick`` does at most one step."""

    def __init__(self, service: Any, owner: str | None = None) -> None:
        self.service = service
        self.store = service.store
        self.evals = EvalStore(self.store)
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- policy and state ------------------------------------------------------------------
    def policy(self) -> dict[str, Any]:
        return {**DEFAULT_POLICY, **(self.evals.get_value(POLICY_KEY) or {})}

    def set_policy(self, body: Any) -> dict[str, Any]:
        with self.store.transaction() as conn:
            policy = check_policy(body, self.evals.get_value(POLICY_KEY, conn) or {})
            self.evals.set_value(POLICY_KEY, policy, conn)
            self.store.emit(
                "auto_policy",
                f"auto-improve policy set: {'on' if policy['enabled'] else 'off'}, "
                f"activate {policy['activate']}",
                conn,
                policy=policy,
            )
        return policy

    def state(self) -> dict[str, Any]:
        return dict(self.evals.get_value(STATE_KEY) or {})

    def _save(self, state: Mapping[str, Any]) -> None:
        self.evals.set_value(STATE_KEY, dict(state))

    def show(self) -> dict[str, Any]:
        """The REST body of ``GET /auto``: policy, state, lease and the recent decisions."""
        events = [
            e for e in self.store.events(after_seq=max(0, self.store.last_event_seq() - 2000),
                                         limit=2000)
            if str(e.get("kind", "")).startswith("auto_")
        ]  # fmt: skip
        return {
            "policy": self.policy(),
            "state": self.state(),
            "lease": self.evals.lease_holder(LEASE),
            "events": events[-20:],
        }

    def _decide(self, kind: str, message: str, state: dict[str, Any], **data: Any) -> dict:
        """Log a decision as an event (unless it repeats the last one) and remember it."""
        last = state.get("lastDecision") or {}
        decision = {"kind": kind, "message": message, "at": now_ms()}
        if (last.get("kind"), last.get("message")) != (kind, message):
            self.store.emit(kind, f"{kind}: {message}", **data)
        state["lastDecision"] = decision
        self._save(state)
        return decision

    # -- the lease -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lease(self) -> Iterator[bool]:
        if not self.evals.acquire_lease(LEASE, self.owner, LEASE_TTL_MS):
            yield False
            return
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(Exception):
                    self.evals.acquire_lease(LEASE, self.owner, LEASE_TTL_MS)

        beat = threading.Thread(target=renew, name="milady-auto-lease", daemon=True)
        beat.start()
        try:
            yield True
        finally:
            stop.set()
            beat.join(timeout=5)
            with contextlib.suppress(Exception):
                self.evals.release_lease(LEASE, self.owner)

    # -- ticks -----------------------------------------------------------------------------
    def record_run(self, run: Mapping[str, Any]) -> None:
        """Append an ended round (or a manual trigger that started none) to the history."""
        with self.store.transaction() as conn:
            runs = list(self.evals.get_value(RUNS_KEY, conn) or [])
            runs.append(dict(run))
            self.evals.set_value(RUNS_KEY, runs[-MAX_RUNS:], conn)

    def runs(self) -> list[dict[str, Any]]:
        """The ended rounds, newest first."""
        return list(reversed(self.evals.get_value(RUNS_KEY) or []))

    def tick(self, manual: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Decide and do the next step; returns the decision ``{"kind", "message"}``.

        ``manual`` (``{"id", "backend"?, "dryRun"?, ...}``) asks for a round now: no
        on/off switch, no cooldown; it never drives a round another trigger started."""
        with self._lease() as held:
            if not held:
                holder = self.evals.lease_holder(LEASE) or {}
                return {"kind": "auto_busy", "message": f"another watcher ({holder.get('owner')}) "
                        "is working"}  # fmt: skip
            state = self.state()
            policy = self.policy()
            try:
                if state.get("round") and manual is not None:
                    return {
                        "kind": "auto_skipped",
                        "message": f"round {state['round'].get('id')} is already running",
                    }
                if state.get("round"):
                    return self._advance(state, policy)
                if not policy["enabled"] and manual is None:
                    return self._decide("auto_skipped", "auto-improve is off", state)
                return self._maybe_start(state, policy, manual)
            except MiladyLabError as exc:
                return self._fail(state, exc.message)
            except Exception as exc:  # a bug: the round ends, the watcher keeps watching
                log.exception("milady-lab auto-improve step failed")
                return self._fail(state, f"internal error ({type(exc).__name__}: {exc})")

    def run_once(
        self,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        manual: Mapping[str, Any] | None = None,
    ) -> list[dict]:
        """Ticks until the round ends (or nothing is to be done); the decisions, in order.
        ``manual``: the first tick asks for a round now (see ``tick``)."""
        out: list[dict[str, Any]] = []
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            decision = self.tick(manual if not out else None)
            out.append(decision)
            if decision["kind"] not in ("auto_built", "auto_training", "auto_waiting",
                                        "auto_benchmarked"):  # fmt: skip
                return out
            if deadline is not None and time.monotonic() > deadline:
                return out
            if decision["kind"] == "auto_waiting":
                time.sleep(poll_s)

    def _maybe_start(
        self,
        state: dict[str, Any],
        policy: Mapping[str, Any],
        manual: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        last = state.get("lastRoundAt")
        cooldown_ms = float(policy["cooldownHours"]) * 3_600_000
        if manual is None and last is not None and now_ms() - last < cooldown_ms:
            waited = (now_ms() - last) / 3_600_000
            return self._decide(
                "auto_skipped",
                f"cooldown: {waited:.1f} h of {float(policy['cooldownHours']):g} h since the "
                "last round",
                state,
            )
        usable = int(self.service.preview_dataset({})["trajectoryCount"])
        new = usable - int(state.get("trajectoriesAtLastRound") or 0)
        wanted = int(policy["minNewTrajectories"])
        state["newTrajectories"] = max(new, 0)  # as of this check (the agent's counter)
        if new < wanted:
            return self._decide(
                "auto_skipped",
                f"{max(new, 0)} new trajectories < {wanted}",
                state,
                newTrajectories=new,
            )
        if manual is not None and manual.get("dryRun"):
            return self._decide(
                "auto_skipped", f"dry run: {new} new trajectories ≥ {wanted}, a round would start",
                state, newTrajectories=new,
            )  # fmt: skip
        # The round starts: from here on the cooldown counts, whatever happens next.
        extra = dict(manual or {"source": "threshold"})
        round_id = str(extra.pop("id", None) or f"auto-{now_ms()}")
        state.update(lastRoundAt=now_ms(), trajectoriesAtLastRound=usable)
        state["round"] = {"id": round_id, "stage": "build", "startedAt": now_ms(), **extra}
        self._save(state)
        objective = policy.get("objective") or "sft"
        build = {} if objective == "sft" else {"kind": ROUND_KINDS[objective]}
        dataset = self.service.build_dataset(build)["dataset"]
        state["round"].update(stage="train", datasetId=dataset["id"], objective=objective)
        return self._decide(
            "auto_built",
            f"{new} new trajectories ≥ {wanted}: built dataset {dataset['id']} "
            f"({dataset['exampleCount']} examples)",
            state,
            datasetId=dataset["id"],
            roundId=round_id,
        )

    def _advance(self, state: dict[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
        rnd = state["round"]
        stage = rnd.get("stage")
        if stage == "build":  # a watcher died mid-build: that round cannot be trusted
            return self._fail(state, "the dataset build was interrupted")
        if stage == "train":
            body = {
                k: val
                for k, val in (
                    ("datasetId", rnd["datasetId"]),
                    ("backend", rnd.get("backend") or policy.get("backend")),
                    ("model", policy.get("model")),
                    ("iterations", policy.get("iterations")),
                    *_objective_fields(rnd, policy),
                )
                if val is not None
            }
            job = self.service.start_job(body)["job"]
            rnd.update(stage="training", jobId=job["id"])
            return self._decide(
                "auto_training", f"training job {job['id']} on {rnd['datasetId']}", state,
                jobId=job["id"],
            )  # fmt: skip
        if stage == "training":
            return self._follow_job(state, policy)
        if stage == "benchmark":
            return self._benchmark(state, policy)
        if stage == "activate":
            return self._activate(state, policy)
        return self._fail(state, f"unknown round stage {stage!r}")

    def _follow_job(self, state: dict[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
        rnd = state["round"]
        job = self.service.get_job(rnd["jobId"])["job"]
        if job["status"] in LIVE_STATUSES:
            return {"kind": "auto_waiting", "message": f"job {job['id']} is {job['status']}"}
        if job["status"] != "completed":
            why = job.get("error") or job["status"]
            return self._fail(state, f"training job {job['id']} {job['status']}: {why}")
        model = next((m for m in self.store.list_models() if m.get("jobId") == job["id"]), None)
        if model is None:
            return self._fail(state, f"training job {job['id']} completed without a model")
        rnd.update(stage="benchmark", modelId=model["id"])
        self._save(state)
        return self._benchmark(state, policy)

    def _benchmark(self, state: dict[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
        rnd = state["round"]
        bench = self.service.benchmark_model(
            rnd["modelId"], {"maxExamples": int(policy["maxExamples"])}
        )
        rnd["stage"] = "activate"
        shown = ", ".join(
            f"{k} {val:.2f}" for k, val in (bench.get("scores") or {}).items() if val is not None
        )
        return self._decide(
            "auto_benchmarked",
            f"model {rnd['modelId']} benchmarked: {shown}",
            state,
            modelId=rnd["modelId"],
            scores=bench.get("scores"),
        )

    def _activate(self, state: dict[str, Any], policy: Mapping[str, Any]) -> dict[str, Any]:
        rnd = state["round"]
        model_id = rnd["modelId"]
        if policy["activate"] != "if-better":
            return self._finish(state, "auto_done", f"model {model_id} kept; policy activate=never")
        model = self.service.get_model(model_id)["model"]
        if not model.get("ollamaName"):
            body = {
                k: val
                for k, val in (
                    ("ollamaUrl", policy.get("ollamaUrl")),
                    ("baseModel", policy.get("ollamaBaseModel")),
                )
                if val
            }
            self.service.import_ollama(model_id, body)
        try:
            url = policy.get("ollamaUrl")  # the Ollama asked whether it has the model
            answer = self.service.activate_model(model_id, {"ollamaUrl": url} if url else {})
        except (ConflictError, InputError) as exc:  # the gate, or no agent config there
            return self._finish(state, "auto_not_activated", exc.message)
        warned = "".join(f"; warning: {w}" for w in answer.get("warnings", []))
        return self._finish(
            state, "auto_activated", f"model {model_id} passed the gate: the agent now uses "
            f"{answer['activeModel']}{warned}"
        )  # fmt: skip

    def _finish(self, state: dict[str, Any], kind: str, message: str) -> dict[str, Any]:
        rnd = state.pop("round", None) or {}
        state["lastRound"] = {**rnd, "endedAt": now_ms(), "outcome": kind, "message": message}
        decision = self._decide(
            kind, message, state, roundId=rnd.get("id"), modelId=rnd.get("modelId")
        )
        self.record_run(state["lastRound"])
        return decision

    def _fail(self, state: dict[str, Any], reason: str) -> dict[str, Any]:
        """End this round with the reason; the next waits for the cooldown."""
        state.setdefault("lastRoundAt", now_ms())
        return self._finish(state, "auto_failed", reason)


class AutoWatcher:
    """A daemon thread ticking an ``AutoImprover`` every ``interval_s`` until stopped."""

    def __init__(
        self, service: Any, interval_s: float = WATCH_INTERVAL_S, first_delay_s: float = 0.0
    ) -> None:
        self.improver = AutoImprover(service)
        self.interval_s = interval_s
        self.first_delay_s = first_delay_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AutoWatcher:
        self._thread = threading.Thread(target=self.run, name="milady-auto", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Tick, then wait; a waiting round is looked at again sooner (every 10 s at most)."""
        self._stop.wait(self.first_delay_s)
        while not self._stop.is_set():
            try:
                decision = self.improver.tick()
            except Exception:  # the store itself failed: try again next interval
                log.warning("milady-lab auto-improve tick failed", exc_info=True)
                decision = {"kind": "auto_error"}
            soon = decision.get("kind") in ("auto_built", "auto_training", "auto_benchmarked")
            wait = 0.0 if soon else self.interval_s
            if decision.get("kind") == "auto_waiting":
                wait = min(self.interval_s, 10.0)
            self._stop.wait(wait)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
