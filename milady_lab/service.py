"""The one facade that the REST handlers, the CLI, the widgets and notebooks call.

Every public method takes plain values (a request body as its ``milady_lab.api.schema``
struct or as JSON values, strings from a query string or the command line, or Python
values), validates them, does the work and returns the answer of the matching REST
route as its ``milady_lab.api.schema`` struct: typed attributes, read like the JSON
(``answer["job"]["status"]``), encoded by the server as it is. A body given as JSON
values is decoded once, here, by its struct; leniently, so the CLI's text flags
(``"12"``) pass as numbers. Failures are the exceptions in ``milady_lab.errors``;
anything else escaping here is a bug.

Methods are synchronous and may block (database reads, dataset builds); the Jupyter
extension runs them in an executor, the widgets in a thread.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import msgspec
import polars as pl

from . import agent_compat as agent
from . import validation as v
from .api import decode
from .api.schema import (
    ActivateAnswer,
    ActivateRequest,
    ActivationList,
    AgentAutoStatus,
    AgentBackends,
    AgentConfigAnswer,
    AgentExportAnswer,
    AgentExportRequest,
    AgentRunList,
    AgentTrainingConfigRequest,
    AgentTriggerAnswer,
    AgentTriggerRequest,
    AutoAnswer,
    AutoPolicy,
    BenchmarkAnswer,
    BenchmarkList,
    BenchmarkRequest,
    BenchmarkRun,
    BuildDatasetRequest,
    Dataset,
    DatasetAnswer,
    DatasetList,
    DatasetPreview,
    DeactivateAnswer,
    DeactivateRequest,
    ImportOllamaAnswer,
    ImportOllamaRequest,
    JobAnswer,
    JobList,
    JsonObject,
    MetricList,
    Model,
    ModelList,
    StartJobRequest,
    Status,
    Trajectory,
    TrajectoryDetail,
    TrajectoryPage,
    TrajectorySummary,
)
from .config import Settings
from .errors import ConflictError, InputError, NotFoundError, UpstreamError
from .state import Row, StateStore

ProgressFn = Callable[[int, int], None]
B = TypeVar("B", bound=msgspec.Struct)
#: A request body: its struct, JSON values, or None (every field its default).
Body = msgspec.Struct | Mapping[str, Any] | None
_SUMMARIES = list[TrajectorySummary]


class TrainingService:
    """milady-lab's operations over one state home and one trajectory source."""

    def __init__(self, settings: Settings | None = None, *, reconcile: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.store = open_home(self.settings)
        if reconcile:
            # A new server or CLI process takes over jobs an earlier one started, and
            # fails the benchmark runs of a process that is gone.
            self.jobs_manager.reconcile()
            self.benchmark_runs.reconcile()

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
    def status(self) -> Status:
        from .training.backends import available_backends, best_backend

        reason = self.source.unavailable_reason()
        return Status(
            available=True,
            backend=best_backend(),  # type: ignore[arg-type]  # one of BACKENDS
            runtime_available=reason is None,
            runtime_reason=reason,
            active_job_id=self.jobs_manager.active_job_id(),
            backends=available_backends(),  # type: ignore[arg-type]
            trajectory_source=self.source.description,
            # Which rule found the source (MILADY_LAB_TRAJECTORIES, the agent's config…).
            trajectory_source_found_by=self.settings.trajectories_how,
            home=str(self.settings.home),
            **agent.status_counts(self.store.counts()),
        )

    # -- trajectories -------------------------------------------------------------------------
    def list_trajectories(self, limit: Any = None, offset: Any = None) -> TrajectoryPage:
        limit_i, offset_i = _page_args(limit, offset)
        with _reading(self.source):
            frame = self.source.summaries(limit_i, offset_i)
            total = self.source.count()
        return _page(frame.to_dicts(), total, offset_i, limit_i)

    def list_trajectories_now(self, limit: Any = None, offset: Any = None) -> TrajectoryPage | None:
        """``list_trajectories`` when the source can answer at once from warm caches (a
        SQLite source: well under a millisecond), else None: then call that in a thread.
        Lets a server answer the common page on its event loop without a thread hop."""
        limit_i, offset_i = _page_args(limit, offset)
        quick = getattr(self.source, "page_now", None)
        page = quick(limit_i, offset_i) if quick is not None else None
        if page is None:
            return None
        rows, total = page
        return _page(rows, total, offset_i, limit_i)

    def get_trajectory(self, trajectory_id: Any) -> TrajectoryDetail:
        with _reading(self.source):
            detail = self.source.detail(trajectory_id) if isinstance(trajectory_id, str) else None
        if detail is None:
            raise NotFoundError(f"no trajectory with id {_show(trajectory_id)}")
        return TrajectoryDetail(trajectory=msgspec.convert(detail, Trajectory))

    def trajectories_frame(self) -> pl.LazyFrame:
        """All trajectory summaries, newest first, as a lazy Polars frame."""
        return self.source.summaries_frame()

    def llm_calls_frame(self) -> pl.LazyFrame:
        """One row per LLM call of every trajectory, as a lazy Polars frame."""
        return self.source.llm_calls_frame()

    # -- datasets -------------------------------------------------------------------------------
    def list_datasets(self) -> DatasetList:
        return DatasetList(datasets=[agent.dataset_record(r) for r in self.store.list_datasets()])

    def get_dataset(self, dataset_id: Any) -> DatasetAnswer:
        rec = self.store.get_dataset(dataset_id) if v.is_valid_id(dataset_id) else None
        if rec is None:
            raise NotFoundError(f"no dataset with id {_show(dataset_id)}")
        return DatasetAnswer(dataset=agent.dataset_record(rec))

    def build_dataset(self, body: Body = None, progress: ProgressFn | None = None) -> DatasetAnswer:
        from .datasets.build import BuildOptions, build_dataset

        opts = BuildOptions.from_body(_fields(body, BuildDatasetRequest))
        rec = build_dataset(self.source, self.settings, self.store, opts, progress=progress)
        return DatasetAnswer(dataset=agent.dataset_record(rec))

    def preview_dataset(self, body: Body = None) -> DatasetPreview:
        """How many trajectories and examples a build with these options would give."""
        from .datasets.build import BuildOptions, preview

        opts = BuildOptions.from_body(_fields(body, BuildDatasetRequest))
        return msgspec.convert(preview(self.source, opts, home=self.settings.home), DatasetPreview)

    # -- jobs -----------------------------------------------------------------------------------
    def list_jobs(self) -> JobList:
        return JobList(jobs=[agent.job_record(j) for j in self.jobs_manager.list()])

    def start_job(self, body: Body = None) -> JobAnswer:
        """Check the options, build the dataset a job without ``datasetId`` needs (here,
        so "nothing to train on" is an input error before any worker starts), then start
        or queue the job."""
        from .training.base_models import check_available
        from .training.options import JobOptions

        opts = JobOptions.from_body(_fields(body, StartJobRequest), self.store)
        check_available(opts.model)  # a base model the worker cannot load is a 400 now
        dataset_id = self._dataset_for_job(opts) if opts.build_dataset else opts.dataset_id
        return JobAnswer(job=agent.job_record(self.jobs_manager.start(opts, dataset_id=dataset_id)))

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

    def live_jobs(self) -> list[dict[str, str]]:
        """``{"jobId", "status"}`` of every queued or running job, after failing jobs
        whose worker is gone and starting the next queued one (a server's activity)."""
        from .state import LIVE_STATUSES

        self.jobs_manager.active_job_id()  # marks dead workers failed, starts next
        return [
            {"jobId": j["id"], "status": str(j["status"])}
            for j in self.store.list_jobs(LIVE_STATUSES)
        ]

    def get_job(self, job_id: Any) -> JobAnswer:
        return JobAnswer(job=agent.job_record(self.jobs_manager.get(job_id)))

    def get_job_now(self, job_id: Any) -> JobAnswer | None:
        """``get_job`` when it is one indexed read (a finished job, or a running one whose
        worker is alive and beating), else None: then call ``get_job`` in a thread."""
        rec = self.jobs_manager.get_now(job_id)
        return None if rec is None else JobAnswer(job=agent.job_record(rec))

    def cancel_job(self, job_id: Any) -> JobAnswer:
        return JobAnswer(job=agent.job_record(self.jobs_manager.cancel(job_id)))

    def job_metrics(self, job_id: Any, after: Any = None) -> MetricList:
        after_i = v.integer(after, "after", default=0, minimum=0)
        self.jobs_manager.get(job_id)  # 404 for unknown ids
        return MetricList(job_id=job_id, metrics=self.store.metrics(job_id, after_seq=after_i or 0))

    # -- models ---------------------------------------------------------------------------------
    def list_models(self) -> ModelList:
        return ModelList(models=[agent.model_record(m) for m in self.store.list_models()])

    def get_model(self, model_id: Any) -> dict[str, Model]:
        """``{"model": Model}``: the model named by its id, its name (or Ollama name), or
        ``latest`` (the newest)."""
        return {"model": agent.model_record(resolve_model(self.store, model_id))}

    def _model(self, model_id: Any) -> Row:
        """The model ``model_id`` names, as the model code (import, activation, benchmark,
        export, chat) reads it: its row with the agent's names (``agent.model_fields``)."""
        return agent.model_fields(resolve_model(self.store, model_id))

    def import_ollama(
        self, model_id: Any, body: Body = None, progress: Callable[[str, float], None] | None = None
    ) -> ImportOllamaAnswer:
        """Fuse, convert to GGUF and create the model in Ollama; ``progress(phase, percent)``.

        The ``ollamaUrl`` rule is judged first, before the id is looked up: a hostile URL
        is a 400 whatever the id (as the agent's route answers)."""
        from .models.handoff.loopback import check_loopback_url
        from .models.handoff.ollama import import_model

        fields = _fields(body, ImportOllamaRequest)
        if fields.get("ollamaUrl") is not None:
            check_loopback_url(fields["ollamaUrl"])
        model = self._model(model_id)
        answer = import_model(self.settings, self.store, model, fields, progress=progress)
        return msgspec.convert(answer, ImportOllamaAnswer)

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

        model = self._model(model_id)
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

    def activate_model(self, model_id: Any, body: Body = None) -> ActivateAnswer:
        from .models.handoff.activation import activate

        fields = _fields(body, ActivateRequest)
        answer = activate(self.settings, self.store, self._model(model_id), fields)
        return msgspec.convert(answer, ActivateAnswer)

    @functools.cached_property
    def benchmark_runs(self):  # -> BenchmarkRuns
        from .models.evaluation.runs import BenchmarkRuns

        return BenchmarkRuns(self.settings, self.store)

    def benchmark_model(
        self,
        model_id: Any,
        body: Body = None,
        progress: ProgressFn | None = None,
    ) -> BenchmarkAnswer:
        """Score the model against its base, in this thread (a run: 409 while another
        benchmarks it); ``progress(done, total)`` examples as it goes (each step also a
        ``benchmark_progress`` event). The body's ``wait`` is the REST route's choice:
        here it always waits (``start_benchmark`` does not)."""
        fields = _fields(body, BenchmarkRequest)
        fields.pop("wait", None)
        run, prepared = self.benchmark_runs.begin(self._model(model_id), fields)
        return self.benchmark_runs.execute(run, prepared, progress)

    def start_benchmark(
        self,
        model_id: Any,
        body: Body = None,
        submit: Callable[[Callable[[], None]], Any] | None = None,
    ) -> BenchmarkRun:
        """Start benchmarking the model and answer its run at once (bad input, an unknown
        model or a run already going are refused now); ``submit(work)`` runs the work (the
        server's work pool), by default a thread of its own. Poll ``benchmark_run``."""
        fields = _fields(body, BenchmarkRequest)
        fields.pop("wait", None)
        return self.benchmark_runs.start(self._model(model_id), fields, submit)

    def benchmark_run(self, model_id: Any) -> BenchmarkRun:
        """The model's newest benchmark run; 404 when it has none."""
        return self.benchmark_runs.latest(resolve_model(self.store, model_id)["id"])

    def export_model(self, model_id: Any, body: Any = None) -> JsonObject:
        """Fuse the adapter into its base: ``{"format": "hf"|"gguf", "out"?, "outtype"?}``
        (a notebook's and the CLI's, no REST route: the answer is the export's report)."""
        from .models.handoff.export import export_model

        return export_model(self.settings, self.store, self._model(model_id), body)

    # -- evaluation, rollback, auto-improve -------------------------------------------------------
    @functools.cached_property
    def auto(self):  # -> AutoImprover
        from .models.auto import AutoImprover

        return AutoImprover(self)

    def list_benchmarks(self, model_id: Any) -> BenchmarkList:
        """Every stored benchmark of a model, newest first."""
        from .state import EvalStore

        found = resolve_model(self.store, model_id)["id"]
        return BenchmarkList(model_id=found, benchmarks=EvalStore(self.store).benchmarks(found))

    def deactivate_model(self, body: Body = None) -> DeactivateAnswer:
        """Undo the last activation (the agent config as it was before it)."""
        from .models.handoff.activation import deactivate

        answer = deactivate(self.settings, self.store, _fields(body, DeactivateRequest))
        return msgspec.convert(answer, DeactivateAnswer)

    def list_activations(self, limit: Any = None) -> ActivationList:
        from .state import EvalStore

        limit_i = v.integer(limit, "limit", default=100, minimum=1, maximum=1000)
        assert limit_i is not None
        return ActivationList(activations=EvalStore(self.store).activations(limit_i))

    def get_auto(self) -> AutoAnswer:
        """The auto-improve policy, where its rounds stand and its recent decisions."""
        return msgspec.convert(self.auto.show(), AutoAnswer)

    def set_auto(self, body: Body = None) -> AutoAnswer:
        """Change the auto-improve policy (the fields given; the others keep their value)."""
        self.auto.set_policy(_fields(body, AutoPolicy))
        return self.get_auto()

    def auto_run_once(self, timeout_s: float | None = None) -> JsonObject:
        """One auto-improve round now (or the reason there is none), waiting for training:
        its ``decisions`` beside ``GET /auto``'s fields (the CLI's, no REST route)."""
        decisions = self.auto.run_once(timeout_s=timeout_s)
        return {"decisions": decisions, **self.auto.show()}

    # -- the agent's own routes (agent_compat) ----------------------------------------------------
    @functools.cached_property
    def agent_runs(self) -> agent.AgentRuns:
        return agent.AgentRuns(self)

    def training_backends(self) -> AgentBackends:
        """``GET /backends``: which backends this machine can train on."""
        return agent.backends_body()

    def get_auto_config(self) -> AgentConfigAnswer:
        """The auto-improve policy as the agent's ``{"config": TrainingConfig}``."""
        return AgentConfigAnswer(config=agent.config_of(self.auto.policy()))

    def set_auto_config(
        self, body: AgentTrainingConfigRequest | Mapping[str, Any] | None = None
    ) -> AgentConfigAnswer:
        """Change the policy from an agent config body (its fields; the others kept)."""
        policy = self.auto.set_policy(agent.policy_body(_struct(body, AgentTrainingConfigRequest)))
        return AgentConfigAnswer(config=agent.config_of(policy))

    def auto_status(self, watching: bool = False) -> AgentAutoStatus:
        """Where auto-improve stands, in the agent's trigger-status shape."""
        return agent.status_body(self.auto, watching)

    def auto_runs(self, limit: Any = None) -> AgentRunList:
        return self.agent_runs.runs(limit)

    def auto_trigger(
        self, body: AgentTriggerRequest | Mapping[str, Any] | None = None
    ) -> AgentTriggerAnswer:
        """One manual auto-improve round, started in a background thread (answers at once)."""
        return self.agent_runs.trigger(_struct(body, AgentTriggerRequest))

    def export_request(
        self, body: AgentExportRequest | Mapping[str, Any] | None = None
    ) -> agent.ExportRequest:
        """The checked body of ``POST /trajectories/export`` (see ``export_trajectories``)."""
        return agent.export_request(_struct(body, AgentExportRequest))

    def export_trajectories(
        self, body: AgentExportRequest | Mapping[str, Any] | None = None
    ) -> AgentExportAnswer:
        """Build a dataset from the newest trajectories and write its examples as one JSONL
        file (``outputPath``, else under exports/): the agent's trajectory export."""
        request = self.export_request(body)
        dataset = self.build_dataset(request.build).dataset
        return self.write_export(dataset, request.output_path)

    def write_export(self, dataset: Dataset, output_path: str | None) -> AgentExportAnswer:
        return agent.write_export(self.settings.home, dataset, output_path)

    # -- events ---------------------------------------------------------------------------------
    def events(self, after: Any = None, limit: int = 500) -> list[JsonObject]:
        """Events after ``after`` (free-form: each kind carries its own fields)."""
        after_i = v.integer(after, "after", default=0, minimum=0)
        return self.store.events(after_seq=after_i or 0, limit=limit)

    def last_event_seq(self) -> int:
        """The seq of the newest event (a new stream starts after it)."""
        return self.store.last_event_seq()

    def close(self) -> None:
        self.store.close()


def _struct(body: Body, kind: type[B]) -> B:
    """``body`` as its struct: as it is when it is one (a handler decoded it), else
    decoded once, leniently (the CLI's flags arrive as text)."""
    if isinstance(body, Mapping) and not isinstance(body, dict):
        body = dict(body)
    return decode.body(body, kind, strict=False)


def _fields(body: Body, kind: type[msgspec.Struct]) -> JsonObject:
    """``body`` decoded by its struct, as the fields it sets (JSON values): what the
    checks further in (``JobOptions``, ``BuildOptions``, the model code) take."""
    decoded = msgspec.to_builtins(_struct(body, kind))
    return {k: val for k, val in decoded.items() if val is not None}


def _page(rows: list[Any], total: int, offset: int, limit: int) -> TrajectoryPage:
    summaries = msgspec.convert(rows, _SUMMARIES)
    return TrajectoryPage(trajectories=summaries, total=total, offset=offset, limit=limit)


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


def resolve_model(store: StateStore, ref: Any) -> Row:
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
