"""Auto-improve: build → train → benchmark → activate-if-better, by itself, when enough
new trajectories arrived.

The policy (off by default) lives in the state store, so the Jupyter server, a
``milady-lab auto watch`` terminal and the CLI all see the same one. A *round* is one
pass through the steps of ``models/round.py`` (the round ``make demo`` runs too), one step
a tick; where it stands (its ``RoundState``: the stage plus the ids it made) is written to
the store before each step starts, so a watcher that dies mid-round leaves the next one a
round to finish, never one to start over.

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
from typing import Any, NotRequired, Protocol, TypedDict

import msgspec

from .. import validation as v
from ..api import schema
from ..errors import InputError, MiladyLabError
from ..state import EvalStore, StateStore, now_ms
from .round import ROUND_KINDS, RoundService, RoundSettings, RoundState, Step, advance, fail

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


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
        return value.lower() in ("true", "on", "1")
    raise InputError(f"{name} must be true or false")


# -- one watcher's ticks --------------------------------------------------------------------------
class AutoService(RoundService, Protocol):
    """What auto-improve needs of the service: a round's calls, the store it keeps its
    policy, state and lease in, and the preview that counts new trajectories."""

    store: StateStore

    def preview_dataset(self, body: Any = None) -> schema.DatasetPreview: ...


class Decision(TypedDict):
    """What a tick decided: the event kind, why, and when (none for a busy or waiting tick)."""

    kind: str
    message: str
    at: NotRequired[int]


class AutoState(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Auto-improve's state in the store (``STATE_KEY``): the round under way, the last
    one that ended, what the cooldown and the new-trajectory count start from."""

    round: RoundState | None = None
    last_round: RoundState | None = None
    last_round_at: int | None = None
    trajectories_at_last_round: int = 0
    new_trajectories: int | None = None  # as of the last check (the agent's counter)
    last_decision: Decision | None = None


class AutoImprover:
    """The auto-improve steps over one service; ``tick`` does at most one step of a round."""

    def __init__(self, service: AutoService, owner: str | None = None) -> None:
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
        """The stored state as JSON (``round``, ``lastRound``, ``lastDecision``, ...)."""
        out: dict[str, Any] = msgspec.to_builtins(self._state())
        return out

    def _state(self) -> AutoState:
        return msgspec.convert(self.evals.get_value(STATE_KEY) or {}, AutoState, strict=False)

    def _save(self, state: AutoState) -> None:
        self.evals.set_value(STATE_KEY, msgspec.to_builtins(state))

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

    def _decide(self, kind: str, message: str, state: AutoState, **data: Any) -> Decision:
        """Log a decision as an event (unless it repeats the last one) and remember it."""
        last = state.last_decision
        decision = Decision(kind=kind, message=message, at=now_ms())
        if last is None or (last["kind"], last["message"]) != (kind, message):
            self.store.emit(kind, f"{kind}: {message}", **data)
        state.last_decision = decision
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

    def tick(self, manual: Mapping[str, Any] | None = None) -> Decision:
        """Decide and do the next step; returns the decision ``{"kind", "message"}``.

        ``manual`` (``{"id", "backend"?, "dryRun"?, ...}``) asks for a round now: no
        on/off switch, no cooldown; it never drives a round another trigger started."""
        with self._lease() as held:
            if not held:
                holder = self.evals.lease_holder(LEASE) or {}
                return Decision(kind="auto_busy", message=f"another watcher "
                                f"({holder.get('owner')}) is working")  # fmt: skip
            state = self._state()
            policy = self.policy()
            try:
                if state.round is not None and manual is not None:
                    return Decision(
                        kind="auto_skipped", message=f"round {state.round.id} is already running"
                    )
                if state.round is not None:
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
    ) -> list[Decision]:
        """Ticks until the round ends (or nothing is to be done); the decisions, in order.
        ``manual``: the first tick asks for a round now (see ``tick``)."""
        out: list[Decision] = []
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
        state: AutoState,
        policy: Mapping[str, Any],
        manual: Mapping[str, Any] | None = None,
    ) -> Decision:
        last = state.last_round_at
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
        new = usable - state.trajectories_at_last_round
        wanted = int(policy["minNewTrajectories"])
        state.new_trajectories = max(new, 0)
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
        state.last_round_at, state.trajectories_at_last_round = now_ms(), usable
        state.round = RoundState.from_dict(
            {**extra, "id": round_id, "stage": "build", "startedAt": now_ms()}
        )
        self._save(state)  # a build that dies half-way is then seen, not restarted
        step = advance(self.service, RoundSettings.from_policy(policy), state.round)
        return self._decide(
            step.kind, f"{new} new trajectories ≥ {wanted}: {step.message}", state,
            **step.fields, roundId=round_id,
        )  # fmt: skip

    def _advance(self, state: AutoState, policy: Mapping[str, Any]) -> Decision:
        """The round's next step, with the state stored after it (and its decision logged)."""
        rnd = state.round
        assert rnd is not None
        if rnd.stage == "build":  # a watcher died mid-build: that round cannot be trusted
            return self._fail(state, "the dataset build was interrupted")
        settings = RoundSettings.from_policy(policy)
        step = advance(self.service, settings, rnd)
        if step.kind == "auto_waiting":  # nothing changed: nothing stored, nothing logged
            return Decision(kind=step.kind, message=step.message)
        if step.kind == "auto_trained":  # the job's events tell it; this tick benchmarks
            self._save(state)
            step = advance(self.service, settings, rnd)
        if rnd.outcome is not None:
            return self._end(state, step)
        return self._decide(step.kind, step.message, state, **step.fields)

    def _end(self, state: AutoState, step: Step) -> Decision:
        """The round ended with ``step``: it becomes ``lastRound`` and joins the history."""
        ended = state.round
        assert ended is not None
        state.round, state.last_round = None, ended
        decision = self._decide(step.kind, step.message, state, **step.fields)
        self.record_run(ended.to_dict())
        return decision

    def _fail(self, state: AutoState, reason: str) -> Decision:
        """End this round with the reason; the next waits for the cooldown."""
        if state.last_round_at is None:
            state.last_round_at = now_ms()
        if state.round is None:  # it failed before a round started: a record of that
            state.round = RoundState(stage=None)
        return self._end(state, fail(state.round, reason))


class AutoWatcher:
    """A daemon thread ticking an ``AutoImprover`` every ``interval_s`` until stopped."""

    def __init__(
        self, service: AutoService, interval_s: float = WATCH_INTERVAL_S, first_delay_s: float = 0.0
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
                decision = Decision(kind="auto_error", message="the store failed")
            soon = decision.get("kind") in ("auto_built", "auto_training", "auto_benchmarked")
            wait = 0.0 if soon else self.interval_s
            if decision.get("kind") == "auto_waiting":
                wait = min(self.interval_s, 10.0)
            self._stop.wait(wait)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
