"""The one facade that the REST handlers, the CLI, the widgets and notebooks call.

Every public method takes plain values (JSON-shaped bodies, strings from a query
string or the command line, or Python values), validates them, does the work and
returns the body the matching REST route answers with. Failures are the exceptions in
``milady_lab.errors``; anything else escaping here is a bug.

Methods are synchronous and may block (database reads, dataset builds); the Jupyter
extension runs them in an executor, the widgets in a thread.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from . import agent_compat as agent
from . import validation as v
from .config import Settings
from .errors import ConflictError, InputError, NotFoundError, UpstreamError
from .state import StateStore

ProgressFn = Callable[[int, int], None]


class TrainingService:
    """milady-lab's operations over one state home and one trajectory source."""

    def __init__(self, settings: Settings | None = None, *, reconcile: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.store = open_home(self.settings)
        if reconcile:
            # A new server or CLI process takes over jobs an earlier one started.
            self.jobs_manager.reconcile()

    # -- wiring -----------------------------------------------------------------------------
    @functools.cached_property
    def source(self):  # -> TrajectorySource
        from .trajectories import open_source

        return open_source(self.settings.trajectories, self.settings)

    @functools.cached_property
    def jobs_manager(self):  # -> JobManager
        from .training.jobs import JobManager

        return JobManager(self.settings, self.store)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from .training.backends import available_backends, best_backend

        reason = self.source.unavailable_reason()
        body: dict[str, Any] = {
            "available": True,
            "backend": best_backend(),
            "runtimeAvailable": reason is None,
            "activeJobId": self.jobs_manager.active_job_id(),
            "backends": available_backends(),
            "trajectorySource": self.source.description,
            # Which rule found the source (MILADY_LAB_TRAJECTORIES, the agent's config…).
            "trajectorySourceFoundBy": self.settings.trajectories_how,
            "home": str(self.settings.home),
            **agent.status_counts(self.store.counts()),
        }
        if reason is not None:
            body["runtimeReason"] = reason
        return body

    # -- trajectories -------------------------------------------------------------------------
    def list_trajectories(self, limit: Any = None, offset: Any = None) -> dict[str, Any]:
        limit_i, offset_i = _page_args(limit, offset)
        with _reading(self.source):
            frame = self.source.summaries(limit_i, offset_i)
            total = self.source.count()
        return {
            "trajectories": frame.to_dicts(),
            "total": total,
            "offset": offset_i,
            "limit": limit_i,
        }

    def list_trajectories_now(self, limit: Any = None, offset: Any = None) -> dict[str, Any] | None:
        """``list_trajectories`` when the source can answer at once from warm caches (a
        SQLite source: well under a millisecond), else None: then call that in a thread.
        Lets a server answer the common page on its event loop without a thread hop."""
        limit_i, offset_i = _page_args(limit, offset)
        quick = getattr(self.source, "page_now", None)
        page = quick(limit_i, offset_i) if quick is not None else None
        if page is None:
            return None
        rows, total = page
        return {"trajectories": rows, "total": total, "offset": offset_i, "limit": limit_i}

    def get_trajectory(self, trajectory_id: Any) -> dict[str, Any]:
        with _reading(self.source):
            detail = self.source.detail(trajectory_id) if isinstance(trajectory_id, str) else None
        if detail is None:
            raise NotFoundError(f"no trajectory with id {_show(trajectory_id)}")
        return {"trajectory": detail}

    def trajectories_frame(self) -> pl.LazyFrame:
        """All trajectory summaries, newest first, as a lazy Polars frame."""
        return self.source.summaries_frame()

    def llm_calls_frame(self) -> pl.LazyFrame:
        """One row per LLM call of every trajectory, as a lazy Polars frame."""
        return self.source.llm_calls_frame()

    # -- datasets -------------------------------------------------------------------------------
    def list_datasets(self) -> dict[str, Any]:
        return {"datasets": [agent.dataset_record(r) for r in self.store.list_datasets()]}

    def get_dataset(self, dataset_id: Any) -> dict[str, Any]:
        rec = self.store.get_dataset(dataset_id) if v.is_valid_id(dataset_id) else None
        if rec is None:
            raise NotFoundError(f"no dataset with id {_show(dataset_id)}")
        return {"dataset": agent.dataset_record(rec)}

    def build_dataset(self, body: Any = None, progress: ProgressFn | None = None) -> dict[str, Any]:
        from .datasets.build import BuildOptions, build_dataset

        opts = BuildOptions.from_body(body)
        rec = build_dataset(self.source, self.settings, self.store, opts, progress=progress)
        return {"dataset": agent.dataset_record(rec)}

    def preview_dataset(self, body: Any = None) -> dict[str, Any]:
        """How many trajectories and examples a build with these options would give."""
        from .datasets.build import BuildOptions, preview

        return preview(self.source, BuildOptions.from_body(body), home=self.settings.home)

    # -- jobs -----------------------------------------------------------------------------------
    def list_jobs(self) -> dict[str, Any]:
        return {"jobs": [agent.job_record(j) for j in self.jobs_manager.list()]}

    def start_job(self, body: Any = None) -> dict[str, Any]:
        """Check the options, build the dataset a job without ``datasetId`` needs (here,
        so "nothing to train on" is an input error before any worker starts), then start
        or queue the job."""
        from .training.base_models import check_available
        from .training.options import JobOptions

        opts = JobOptions.from_body(body, self.store)
        check_available(opts.model)  # a base model the worker cannot load is a 400 now
        dataset_id = self._dataset_for_job(opts) if opts.build_dataset else opts.dataset_id
        return {"job": agent.job_record(self.jobs_manager.start(opts, dataset_id=dataset_id))}

    def _dataset_for_job(self, opts: Any) -> str:
        from .datasets.build import BuildOptions, build_dataset
        from .errors import MiladyLabError

        body = {"limit": opts.max_trajectories} if opts.max_trajectories else {}
        try:
            build = BuildOptions.from_body(body)
            rec = build_dataset(self.source, self.settings, self.store, build)
        except MiladyLabError as exc:
            # The source is not named: a database URL may carry a password.
            raise InputError(
                f"could not build a dataset to train on from the trajectories: {exc.message}"
            ) from exc
        return rec["id"]

    def live_jobs(self) -> list[dict[str, Any]]:
        """``{"jobId", "status"}`` of every queued or running job, after failing jobs
        whose worker is gone and starting the next queued one (a server's activity)."""
        from .state import LIVE_STATUSES

        self.jobs_manager.active_job_id()  # marks dead workers failed, starts next
        return [
            {"jobId": j["id"], "status": j["status"]} for j in self.store.list_jobs(LIVE_STATUSES)
        ]

    def get_job(self, job_id: Any) -> dict[str, Any]:
        return {"job": agent.job_record(self.jobs_manager.get(job_id))}

    def get_job_now(self, job_id: Any) -> dict[str, Any] | None:
        """``get_job`` when it is one indexed read (a finished job, or a running one whose
        worker is alive and beating), else None: then call ``get_job`` in a thread."""
        rec = self.jobs_manager.get_now(job_id)
        return None if rec is None else {"job": agent.job_record(rec)}

    def cancel_job(self, job_id: Any) -> dict[str, Any]:
        return {"job": agent.job_record(self.jobs_manager.cancel(job_id))}

    def job_metrics(self, job_id: Any, after: Any = None) -> dict[str, Any]:
        after_i = v.integer(after, "after", default=0, minimum=0)
        self.jobs_manager.get(job_id)  # 404 for unknown ids
        return {"jobId": job_id, "metrics": self.store.metrics(job_id, after_seq=after_i or 0)}

    # -- models ---------------------------------------------------------------------------------
    def list_models(self) -> dict[str, Any]:
        return {"models": [agent.model_record(m) for m in self.store.list_models()]}

    def get_model(self, model_id: Any) -> dict[str, Any]:
        """The model named by its id, its name (or Ollama name), or ``latest`` (the newest)."""
        return {"model": agent.model_record(resolve_model(self.store, model_id))}

    def import_ollama(
        self, model_id: Any, body: Any = None, progress: Callable[[str, float], None] | None = None
    ) -> dict[str, Any]:
        """Fuse, convert to GGUF and create the model in Ollama; ``progress(phase, percent)``.

        The ``ollamaUrl`` rule is judged first, before the id is looked up: a hostile URL
        is a 400 whatever the id (as the agent's route answers)."""
        from .models.handoff.loopback import check_loopback_url
        from .models.handoff.ollama import import_model

        if isinstance(body, dict) and body.get("ollamaUrl") is not None:
            check_loopback_url(body["ollamaUrl"])
        model = self.get_model(model_id)["model"]
        return import_model(self.settings, self.store, model, body, progress=progress)

    def chat_session(
        self,
        model_id: Any,
        *,
        engine: str = "auto",
        system: str | None = None,
        max_tokens: int = 256,
    ):  # -> ChatSession
        """A conversation with the fine-tuned model (llama.cpp when installed, else torch).
        ``system`` None speaks with the agent's persona (``agent_persona``); "" with none."""
        from .models.evaluation.chat import ChatSession

        model = self.get_model(model_id)["model"]
        if system is None:
            system = self.agent_persona()
        return ChatSession(
            self.settings, model, engine=engine, system=system, max_tokens=max_tokens
        )

    def agent_persona(self) -> str | None:
        """The system prompt the agent sends, from its recorded calls; None when the source
        is unreadable or holds none (a chat then has no system prompt)."""
        from .models.evaluation.chat import agent_persona
        from .trajectories import SourceUnavailable

        if self.source.unavailable_reason() is not None:
            return None
        try:
            return agent_persona(self.llm_calls_frame())
        except (SourceUnavailable, OSError, pl.exceptions.PolarsError):
            return None

    def activate_model(self, model_id: Any, body: Any = None) -> dict[str, Any]:
        from .models.handoff.activation import activate

        model = self.get_model(model_id)["model"]
        return activate(self.settings, self.store, model, body)

    def benchmark_model(
        self,
        model_id: Any,
        body: Any = None,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Score the model against its base; ``progress(done, total)`` examples as it goes
        (each step also a ``benchmark_progress`` event)."""
        from .models.evaluation.benchmark import run_benchmark

        model = self.get_model(model_id)["model"]
        return run_benchmark(self.settings, self.store, model, body, progress)

    def export_model(self, model_id: Any, body: Any = None) -> dict[str, Any]:
        """Fuse the adapter into its base: ``{"format": "hf"|"gguf", "out"?, "outtype"?}``."""
        from .models.handoff.export import export_model

        model = self.get_model(model_id)["model"]
        return export_model(self.settings, self.store, model, body)

    # -- evaluation, rollback, auto-improve -------------------------------------------------------
    @functools.cached_property
    def auto(self):  # -> AutoImprover
        from .models.auto import AutoImprover

        return AutoImprover(self)

    def list_benchmarks(self, model_id: Any) -> dict[str, Any]:
        """Every stored benchmark of a model, newest first."""
        from .state import EvalStore

        model = self.get_model(model_id)["model"]
        return {"modelId": model["id"], "benchmarks": EvalStore(self.store).benchmarks(model["id"])}

    def deactivate_model(self, body: Any = None) -> dict[str, Any]:
        """Undo the last activation (the agent config as it was before it)."""
        from .models.handoff.activation import deactivate

        return deactivate(self.settings, self.store, body)

    def list_activations(self, limit: Any = None) -> dict[str, Any]:
        from .state import EvalStore

        limit_i = v.integer(limit, "limit", default=100, minimum=1, maximum=1000)
        assert limit_i is not None
        return {"activations": EvalStore(self.store).activations(limit_i)}

    def get_auto(self) -> dict[str, Any]:
        """The auto-improve policy, where its rounds stand and its recent decisions."""
        return self.auto.show()

    def set_auto(self, body: Any = None) -> dict[str, Any]:
        """Change the auto-improve policy (the fields given; the others keep their value)."""
        self.auto.set_policy(body)
        return self.auto.show()

    def auto_run_once(self, timeout_s: float | None = None) -> dict[str, Any]:
        """One auto-improve round now (or the reason there is none), waiting for training."""
        decisions = self.auto.run_once(timeout_s=timeout_s)
        return {"decisions": decisions, **self.auto.show()}

    # -- the agent's own routes (agent_compat) ----------------------------------------------------
    @functools.cached_property
    def agent_runs(self) -> agent.AgentRuns:
        return agent.AgentRuns(self)

    def training_backends(self) -> dict[str, Any]:
        """``GET /backends``: which backends this machine can train on."""
        return agent.backends_body()

    def get_auto_config(self) -> dict[str, Any]:
        """The auto-improve policy as the agent's ``{"config": TrainingConfig}``."""
        return {"config": agent.config_of(self.auto.policy())}

    def set_auto_config(self, body: Any = None) -> dict[str, Any]:
        """Change the policy from an agent config body (its fields; the others kept)."""
        return {"config": agent.config_of(self.auto.set_policy(agent.policy_body(body)))}

    def auto_status(self, watching: bool = False) -> dict[str, Any]:
        """Where auto-improve stands, in the agent's trigger-status shape."""
        return agent.status_body(self.auto, watching)

    def auto_runs(self, limit: Any = None) -> dict[str, Any]:
        return self.agent_runs.runs(limit)

    def auto_trigger(self, body: Any = None) -> dict[str, Any]:
        """One manual auto-improve round, started in a background thread (answers at once)."""
        return self.agent_runs.trigger(body)

    def export_request(self, body: Any = None) -> dict[str, Any]:
        """The checked body of ``POST /trajectories/export`` (see ``export_trajectories``)."""
        return agent.export_request(body)

    def export_trajectories(self, body: Any = None) -> dict[str, Any]:
        """Build a dataset from the newest trajectories and write its examples as one JSONL
        file (``outputPath``, else under exports/): the agent's trajectory export."""
        request = agent.export_request(body)
        dataset = self.build_dataset(request["build"])["dataset"]
        return self.write_export(dataset, request["outputPath"])

    def write_export(self, dataset: dict[str, Any], output_path: str | None) -> dict[str, Any]:
        return agent.write_export(self.settings.home, dataset, output_path)

    # -- events ---------------------------------------------------------------------------------
    def events(self, after: Any = None, limit: int = 500) -> list[dict[str, Any]]:
        after_i = v.integer(after, "after", default=0, minimum=0)
        return self.store.events(after_seq=after_i or 0, limit=limit)

    def last_event_seq(self) -> int:
        """The seq of the newest event (a new stream starts after it)."""
        return self.store.last_event_seq()

    def close(self) -> None:
        self.store.close()


@contextlib.contextmanager
def _reading(source: Any) -> Iterator[None]:
    """A source that cannot be read is the agent's side failing: 502 with the cause."""
    from .trajectories import SourceUnavailable

    try:
        yield
    except SourceUnavailable as exc:
        raise UpstreamError(f"cannot read the trajectories: {exc}") from None


def open_home(settings: Settings) -> StateStore:
    """The state store in the home, or one line saying what is wrong with the home."""
    import sqlite3

    home = settings.home
    where = f"the lab's home {home} (MILADY_LAB_HOME, --home)"
    try:
        home.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{where} is a file, not a folder: point it at a folder") from None
    except OSError as exc:
        raise InputError(f"cannot create {where}: {exc.strerror or exc}") from None
    try:
        return StateStore(settings.state_db)
    except sqlite3.DatabaseError as exc:
        raise ConflictError(
            f"the state database {settings.state_db} cannot be used ({exc}): it is damaged or "
            "not milady-lab's; move it aside to start a new one, or point MILADY_LAB_HOME "
            "(--home) at another folder"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot open the state database {settings.state_db}: {exc.strerror or exc}"
        ) from None


#: What names the newest model wherever a model id is taken.
LATEST = "latest"


def resolve_model(store: StateStore, ref: Any) -> dict[str, Any]:
    """The model ``ref`` names: an id first, then ``latest``, then a name (exact, then
    its Ollama name, then ignoring case). A name two models share is a 400 listing them."""
    if not isinstance(ref, str) or not ref.strip():
        raise NotFoundError(f"no model with id {_show(ref)}")
    rec = store.get_model(ref) if v.is_valid_id(ref) else None
    if rec is not None:
        return rec
    models = store.list_models()  # newest first
    if ref == LATEST:
        if not models:
            raise NotFoundError("no models yet: a completed training job registers one")
        return models[0]
    for same in (
        lambda m: m.get("name") == ref,
        lambda m: m.get("ollamaName") == ref,
        lambda m: str(m.get("name") or "").casefold() == ref.casefold(),
    ):
        found = [m for m in models if same(m)]
        if len(found) == 1:
            return found[0]
        if found:
            listed = ", ".join(f"{m['id']} ({m.get('name')})" for m in found[:10])
            raise InputError(
                f"{len(found)} models are named {_show(ref)}: {listed}; name one by its id"
            )
    raise NotFoundError(f"no model with id or name {_show(ref)} (or use {LATEST})")


def _page_args(limit: Any, offset: Any) -> tuple[int, int]:
    limit_i = v.integer(limit, "limit", default=100, minimum=1, maximum=500)
    offset_i = v.integer(offset, "offset", default=0, minimum=0, maximum=2**62)
    assert limit_i is not None and offset_i is not None
    return limit_i, offset_i


def _show(value: Any) -> str:
    """An id as it may appear in a message: quoted, shortened, control characters escaped."""
    text = value if isinstance(value, str) else str(value)
    shown = text[:80] + ("…" if len(text) > 80 else "")
    return repr(shown)
