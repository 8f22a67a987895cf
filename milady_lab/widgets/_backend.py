"""The one interface the panels talk to, in-process or over REST.

:class:`WidgetData` lists every action of a panel that reaches milady-lab, one method
each, with typed bodies and records. The panels never care where the work happens:
:class:`LocalData` calls the :class:`~milady_lab.service.TrainingService` in the
kernel's own process, and :class:`RemoteData` calls a
:class:`~milady_lab.client.TrainingClient` — the Jupyter server the notebook runs in
(found by itself) or a Milady agent's server. Both take the same bodies (the
``TypedDict``s of :mod:`._bodies`; the remote one gives text fields the JSON types the
REST schema wants), return the same records (the structs of
:mod:`milady_lab.api.schema`) and raise the server's error.

Where the records come from: every method passes what the service or the client
answered through :func:`as_record` once, here, and nowhere else. It takes a record as it
is and decodes a plain dict (the JSON answer) into one, so the panels read typed
records (``job.status``) whichever the service and client return.
All methods block; panels call them from :class:`~._async.UiRunner` threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
import polars as pl

from ..api.schema import (
    ActivateAnswer,
    AutoAnswer,
    BenchmarkAnswer,
    BenchmarkRun,
    Dataset,
    DatasetAnswer,
    DatasetList,
    DatasetPreview,
    DeactivateAnswer,
    ImportedModel,
    ImportOllamaAnswer,
    Job,
    JobAnswer,
    JobList,
    JsonObject,
    Metric,
    MetricList,
    Model,
    ModelList,
    Status,
    Trajectory,
    TrajectoryDetail,
    TrajectorySummary,
)
from ..datasets.files import example_texts
from ..errors import ConflictError, MiladyLabError, WorkerError
from ..trajectories.base import LLM_CALL_SCHEMA, SUMMARY_SCHEMA
from ..trajectories.tools import TOOL_COLUMNS
from ._bodies import (
    ActivateBody,
    AutoPolicy,
    BenchmarkBody,
    BuildBody,
    ImportBody,
    JobBody,
)

R = TypeVar("R")
ProgressFn = Callable[[int, int], None]
#: What every server with the training routes takes (a Milady agent too).
BASIC_BUILD_FIELDS = ("limit", "minLlmCallsPerTrajectory")
#: Detail reads at most for the explorer's calls where the source has no calls route.
MAX_CALL_DETAILS = 300


def as_record(kind: type[R], answer: object) -> R:
    """``answer`` as ``kind`` (a record, or a list of them): a record is taken as it is,
    a dict is decoded by its wire names. An answer that does not fit is a ``ValueError``
    naming the record and the field."""
    try:
        return msgspec.convert(answer, kind, from_attributes=True)
    except msgspec.ValidationError as exc:
        name = getattr(kind, "__name__", str(kind))
        raise ValueError(f"the answer is not a valid {name}: {exc}") from None


def describe_error(exc: BaseException) -> str:
    """The message a user should read for a failure: the server's own words when known."""
    if isinstance(exc, MiladyLabError):
        return exc.message
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message and type(exc).__module__.startswith("milady_lab"):
        return message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@runtime_checkable
class WidgetData(Protocol):
    """Every action a panel takes that reaches milady-lab, one method each: the one
    interface of the panels' data source. :class:`LocalData` and :class:`RemoteData`
    implement it with these exact signatures (``tests/widgets/test_remote.py`` checks
    them, and passes every field of the build and job structs through both).

    Not a training backend (cpu/cuda/mlx). Every method may block and may raise; the
    errors carry the service's or server's message (:func:`describe_error`).
    """

    #: ``in-process`` or ``remote``, and where (the Dashboard's banner).
    mode: str
    description: str
    #: False when the source cannot count a build's results without building it.
    can_preview: bool
    #: True when dataset folders (``path`` in the record) are readable from this process.
    local_files: bool

    def status(self) -> Status:
        """Training backend, trajectory source, home (the banner; the launcher's menus)."""
        ...

    # -- trajectories (TrajectoryExplorer) --
    def trajectories_frame(self) -> pl.DataFrame:
        """Every trajectory's summary (``SUMMARY_SCHEMA``): the explorer's list."""
        ...

    def filter_values(self) -> dict[str, list[str]]:
        """The sources and statuses the trajectories have, for the filter menus."""
        ...

    def search_trajectory_ids(self, text: str, candidates: Iterable[str]) -> set[str]:
        """Ids among ``candidates`` whose prompts or replies contain ``text`` (any case)."""
        ...

    def get_trajectory(self, trajectory_id: str) -> Trajectory:
        """One trajectory with its LLM calls: the explorer's detail."""
        ...

    def calls_of(self, trajectory_ids: Iterable[str], most: int | None = None) -> pl.DataFrame:
        """LLM calls (``LLM_CALL_SCHEMA``) of those trajectories (the first ``most``; None:
        the source's own bound), for the explorer's grouping by purpose."""
        ...

    # -- datasets (DatasetBuilder) --
    def build_fields(self) -> tuple[str, ...]:
        """The build-body fields this source's builder accepts (filters included)."""
        ...

    def list_datasets(self) -> list[Dataset]: ...

    def preview_dataset(self, body: BuildBody) -> DatasetPreview:
        """What a build with ``body`` would give (counts, redactions); writes nothing."""
        ...

    def build_dataset(self, body: BuildBody, progress: ProgressFn | None = None) -> Dataset:
        """Build a dataset; ``progress(done, total)`` where the source reports it."""
        ...

    # -- jobs (JobLauncher) --
    def base_models(self) -> list[str]:
        """Base model names to offer (the user may type any other)."""
        ...

    def list_jobs(self) -> list[Job]: ...

    def start_job(self, body: JobBody) -> Job: ...

    def get_job(self, job_id: str) -> Job: ...

    def cancel_job(self, job_id: str) -> Job: ...

    def job_metrics(self, job_id: str, after: int = 0) -> list[Metric]:
        """The job's metrics with ``seq`` above ``after``: the live loss curve."""
        ...

    # -- models (ModelManager) --
    def list_models(self) -> list[Model]: ...

    def import_ollama(self, model_id: str, body: ImportBody) -> ImportOllamaAnswer: ...

    def activate_model(self, model_id: str, body: ActivateBody) -> ActivateAnswer: ...

    def deactivate_model(self) -> DeactivateAnswer:
        """Undo the last activation (the agent config as it was before it)."""
        ...

    def benchmark_model(
        self, model_id: str, body: BenchmarkBody | None = None
    ) -> BenchmarkAnswer: ...

    # -- auto-improve (AutoImprovePanel) --
    def get_auto(self) -> AutoAnswer:
        """The auto-improve policy, its state and recent decisions (``GET /auto``)."""
        ...

    def set_auto(self, policy: AutoPolicy) -> AutoAnswer: ...

    def close(self) -> None:
        """Release what this source opened."""
        ...


class PanelData(WidgetData):
    """The base of both sources: :class:`WidgetData` with the defaults that need only its
    other methods. A subclass defines every other method (the tests check it does)."""

    mode = "base"
    description = ""
    can_preview = True
    local_files = False

    def filter_values(self) -> dict[str, list[str]]:
        frame = self.trajectories_frame()
        return {col: _distinct(frame.lazy(), col) for col in ("source", "status")}

    def calls_of(self, trajectory_ids: Iterable[str], most: int | None = None) -> pl.DataFrame:
        """One detail read per trajectory (REST has no calls route), ``MAX_CALL_DETAILS``
        at most unless ``most`` says otherwise."""
        ids = list(trajectory_ids)[: MAX_CALL_DETAILS if most is None else most]
        frames = [calls_frame(self.get_trajectory(t)) for t in ids]
        return pl.concat(frames) if frames else pl.DataFrame(schema=LLM_CALL_SCHEMA)

    def build_fields(self) -> tuple[str, ...]:
        return BASIC_BUILD_FIELDS

    def base_models(self) -> list[str]:
        try:
            from ..training.base_models import DEFAULT_MODEL, FRIENDLY_MODELS
        except ImportError:  # pragma: no cover - training package missing
            return ["smollm2-135m-instruct"]
        return [DEFAULT_MODEL, *(m for m in FRIENDLY_MODELS if m != DEFAULT_MODEL)]

    def close(self) -> None:
        pass


class LocalData(PanelData):
    """The service in the kernel's own process."""

    mode = "in-process"
    local_files = True

    def __init__(self, service: Any = None, settings: Any = None) -> None:
        from ..service import TrainingService

        self._owned = service is None
        self.service = service if service is not None else TrainingService(settings)
        self.description = f"in-process · {self.service.settings.home}"

    def status(self) -> Status:
        return as_record(Status, self.service.status())

    def trajectories_frame(self) -> pl.DataFrame:
        return self.service.trajectories_frame().collect()

    def search_trajectory_ids(self, text: str, candidates: Iterable[str]) -> set[str]:
        from ..datasets.build import text_hit

        ids = (
            self.service.llm_calls_frame()
            .filter(text_hit(text))
            .select(pl.col("trajectoryId").unique())
            .collect()
            .get_column("trajectoryId")
            .to_list()
        )
        return set(ids) & set(candidates)

    def filter_values(self) -> dict[str, list[str]]:
        frame = self.service.trajectories_frame()
        return {col: _distinct(frame, col) for col in ("source", "status")}

    def get_trajectory(self, trajectory_id: str) -> Trajectory:
        return as_record(TrajectoryDetail, self.service.get_trajectory(trajectory_id)).trajectory

    def calls_of(self, trajectory_ids: Iterable[str], most: int | None = None) -> pl.DataFrame:
        """Every call of those trajectories (the first ``most``), from one pass over the steps."""
        ids = list(trajectory_ids)[:most]
        frame = self.service.llm_calls_frame().filter(pl.col("trajectoryId").is_in(ids))
        return frame.select(list(LLM_CALL_SCHEMA)).collect()

    def list_datasets(self) -> list[Dataset]:
        return as_record(DatasetList, self.service.list_datasets()).datasets

    def build_fields(self) -> tuple[str, ...]:
        from ..datasets.build import BuildOptions

        return tuple(BuildOptions.FIELDS)

    def preview_dataset(self, body: BuildBody) -> DatasetPreview:
        return as_record(DatasetPreview, self.service.preview_dataset(body))

    def build_dataset(self, body: BuildBody, progress: ProgressFn | None = None) -> Dataset:
        answer = self.service.build_dataset(body, progress=progress)
        return as_record(DatasetAnswer, answer).dataset

    def list_jobs(self) -> list[Job]:
        return as_record(JobList, self.service.list_jobs()).jobs

    def start_job(self, body: JobBody) -> Job:
        return as_record(JobAnswer, self.service.start_job(body)).job

    def get_job(self, job_id: str) -> Job:
        return as_record(JobAnswer, self.service.get_job(job_id)).job

    def cancel_job(self, job_id: str) -> Job:
        return as_record(JobAnswer, self.service.cancel_job(job_id)).job

    def job_metrics(self, job_id: str, after: int = 0) -> list[Metric]:
        return as_record(MetricList, self.service.job_metrics(job_id, after)).metrics

    def list_models(self) -> list[Model]:
        return as_record(ModelList, self.service.list_models()).models

    def import_ollama(self, model_id: str, body: ImportBody) -> ImportOllamaAnswer:
        return as_record(ImportOllamaAnswer, self.service.import_ollama(model_id, body))

    def activate_model(self, model_id: str, body: ActivateBody) -> ActivateAnswer:
        return as_record(ActivateAnswer, self.service.activate_model(model_id, body))

    def deactivate_model(self) -> DeactivateAnswer:
        return as_record(DeactivateAnswer, self.service.deactivate_model(None))

    def benchmark_model(self, model_id: str, body: BenchmarkBody | None = None) -> BenchmarkAnswer:
        return as_record(BenchmarkAnswer, self.service.benchmark_model(model_id, body))

    def get_auto(self) -> AutoAnswer:
        return as_record(AutoAnswer, self.service.get_auto())

    def set_auto(self, policy: AutoPolicy) -> AutoAnswer:
        return as_record(AutoAnswer, self.service.set_auto(policy))

    def close(self) -> None:
        if self._owned:
            self.service.close()


class RemoteData(PanelData):
    """A :class:`~milady_lab.client.TrainingClient` to a Jupyter server or a Milady agent.

    The client already unwraps the records (``{"job": ...}`` → the job) and raises
    ``TrainingAPIError`` carrying the server's message, which the panels show as is.
    """

    mode = "remote"
    #: Trajectories read for the explorer at most (500 per request).
    max_trajectories = 5000
    #: Seconds between two reads of a running benchmark.
    benchmark_poll_s = 1.0

    def __init__(self, client: Any) -> None:
        self.client = client
        self.description = f"remote · {getattr(client, 'base_url', '?')}"
        self._details: dict[str, Trajectory] = {}
        # A dataset folder is readable here when the server runs on this machine.
        self.local_files = True
        self._spec: JsonObject | None = None

    def _server_spec(self) -> JsonObject:
        """The server's OpenAPI description, read once; {} where it serves none (an
        agent's server), which then gets only what every server takes."""
        if self._spec is None:
            try:
                spec = self.client.openapi()
            except Exception:  # no such route, or not JSON: assume the basic routes
                spec = {}
            self._spec = spec if isinstance(spec, dict) else {}
        return self._spec

    @property
    def can_preview(self) -> bool:  # type: ignore[override]
        paths = self._server_spec().get("paths")
        return isinstance(paths, dict) and "/api/training/datasets/preview" in paths

    def build_fields(self) -> tuple[str, ...]:
        try:
            props = self._server_spec()["components"]["schemas"]["BuildDatasetRequest"][
                "properties"
            ]
        except (KeyError, TypeError):
            return BASIC_BUILD_FIELDS
        return tuple(str(k) for k in props) if isinstance(props, dict) else BASIC_BUILD_FIELDS

    def status(self) -> Status:
        return as_record(Status, self.client.status())

    def trajectories_frame(self) -> pl.DataFrame:
        rows: list[TrajectorySummary] = []
        for row in self.client.iter_trajectories(page_size=500):
            rows.append(as_record(TrajectorySummary, row))
            if len(rows) >= self.max_trajectories:
                break
        cols = {k: [r.get(k) for r in rows] for k in SUMMARY_SCHEMA}
        return pl.DataFrame(cols, schema=SUMMARY_SCHEMA, strict=False)

    def search_trajectory_ids(self, text: str, candidates: Iterable[str]) -> set[str]:
        # The REST routes have no search: read each candidate's calls once and cache them.
        needle = text.lower()
        found: set[str] = set()
        for tid in candidates:
            for call in self.get_trajectory(tid).llm_calls:
                blob = " ".join(
                    p or "" for p in (call.system_prompt, call.user_prompt, call.response)
                )
                if needle in blob.lower():
                    found.add(tid)
                    break
        return found

    def get_trajectory(self, trajectory_id: str) -> Trajectory:
        cached = self._details.get(trajectory_id)
        if cached is None:
            cached = as_record(Trajectory, self.client.get_trajectory(trajectory_id))
            if cached.status != "active":  # a finished trajectory never changes
                self._details[trajectory_id] = cached
        return cached

    def list_datasets(self) -> list[Dataset]:
        return as_record(list[Dataset], self.client.list_datasets())

    def preview_dataset(self, body: BuildBody) -> DatasetPreview:
        return as_record(DatasetPreview, self.client.preview_dataset(**_build_kwargs(body)))

    def build_dataset(self, body: BuildBody, progress: ProgressFn | None = None) -> Dataset:
        return as_record(Dataset, self.client.build_dataset(**_build_kwargs(body)))

    def list_jobs(self) -> list[Job]:
        return as_record(list[Job], self.client.list_jobs())

    def start_job(self, body: JobBody) -> Job:
        from ..training.request import StartJobRequest

        b = json_typed(body, StartJobRequest)
        job = self.client.start_job(
            b.pop("datasetId", None),
            backend=b.pop("backend", None),
            model=b.pop("model", None),
            iterations=b.pop("iterations", None),
            batch_size=b.pop("batchSize", None),
            learning_rate=b.pop("learningRate", None),
            max_trajectories=b.pop("maxTrajectories", None),
            **b,
        )
        return as_record(Job, job)

    def get_job(self, job_id: str) -> Job:
        return as_record(Job, self.client.get_job(job_id))

    def cancel_job(self, job_id: str) -> Job:
        return as_record(Job, self.client.cancel_job(job_id))

    def job_metrics(self, job_id: str, after: int = 0) -> list[Metric]:
        return as_record(list[Metric], self.client.job_metrics(job_id, after=after or None))

    def list_models(self) -> list[Model]:
        return as_record(list[Model], self.client.list_models())

    def import_ollama(self, model_id: str, body: ImportBody) -> ImportOllamaAnswer:
        answer = self.client.import_ollama(
            model_id,
            model_name=body.get("modelName"),
            base_model=body.get("baseModel"),
            ollama_url=body.get("ollamaUrl"),
            mode=body.get("mode"),
            quantization=body.get("quantization"),
        )
        if isinstance(answer, Mapping) and "model" in answer:  # the whole answer
            return as_record(ImportOllamaAnswer, answer)
        # the client's unwrapped model: the service's shape around it
        return ImportOllamaAnswer(model=as_record(ImportedModel, answer))

    def activate_model(self, model_id: str, body: ActivateBody) -> ActivateAnswer:
        answer = self.client.activate_model(
            model_id,
            body.get("providerModel"),
            force=bool(body.get("force")),
            create=bool(body.get("create")),
            ollama_url=body.get("ollamaUrl"),
        )
        return as_record(ActivateAnswer, answer)

    def deactivate_model(self) -> DeactivateAnswer:
        return as_record(DeactivateAnswer, self.client.deactivate_model())

    @property
    def runs_benchmarks(self) -> bool:
        """Whether the server starts a benchmark as a run to poll (milady-lab's does)."""
        paths = self._server_spec().get("paths")
        if not isinstance(paths, dict):
            return False
        route = paths.get("/api/training/models/{id}/benchmark")
        return isinstance(route, dict) and "get" in route

    def benchmark_model(self, model_id: str, body: BenchmarkBody | None = None) -> BenchmarkAnswer:
        """Started as a run and polled where the server runs them (a benchmark outlasts
        a request's timeout), else one request that answers when it is done."""
        options = {k: v for k, v in (body or {}).items() if k != "wait"}
        if not self.runs_benchmarks:
            return as_record(BenchmarkAnswer, self.client.benchmark_model(model_id, **options))
        run = as_record(BenchmarkRun, self.client.start_benchmark(model_id, **options))
        started = run.run_id
        while run.status == "running":
            time.sleep(self.benchmark_poll_s)
            run = as_record(BenchmarkRun, self.client.benchmark_run(model_id))
            if run.run_id != started:
                raise ConflictError(f"benchmark run {started} was replaced by {run.run_id}")
        if run.status == "failed" or run.result is None:
            raise WorkerError(f"the benchmark failed: {run.error or 'no result'}")
        return run.result

    def get_auto(self) -> AutoAnswer:
        return as_record(AutoAnswer, self.client.get_auto())

    def set_auto(self, policy: AutoPolicy) -> AutoAnswer:
        return as_record(AutoAnswer, self.client.set_auto(**policy))

    def close(self) -> None:
        self.client.close()


def json_typed(body: Mapping[str, object], struct: type[msgspec.Struct]) -> dict[str, object]:
    """``body`` with the JSON types the REST schema wants, where the panels' text fields
    give text: a number typed into a text field (``minReward``, ``warmupSteps``,
    ``loraAlpha``) as a number, and comma-separated names (``targetModules``) as a list,
    which the in-process service accepts as they are. Anything else is left as it is,
    so a wrong value gets the server's own message."""
    attrs = {f.encode_name: f.name for f in msgspec.structs.fields(struct)}
    out = dict(body)
    for key, value in body.items():
        if key not in attrs or not isinstance(value, str):
            continue
        try:
            typed = getattr(msgspec.convert({key: value}, struct, strict=False), attrs[key])
        except msgspec.ValidationError:
            names = [part.strip() for part in value.split(",") if part.strip()]
            try:
                typed = getattr(msgspec.convert({key: names}, struct), attrs[key])
            except msgspec.ValidationError:
                continue
        if isinstance(typed, int | float | list) and not isinstance(typed, bool):
            out[key] = typed
    return out


def _build_kwargs(body: BuildBody) -> dict[str, object]:
    """A build body as the client's keyword arguments (``dataset_request.KEYWORDS``)."""
    from ..datasets.request import KEYWORDS, BuildDatasetRequest

    typed = json_typed(body, BuildDatasetRequest)
    names = {field: keyword for keyword, field in KEYWORDS.items() if field != "privacy"}
    unknown = sorted(set(typed) - set(names) - {"privacy"})
    if unknown:
        raise ValueError(f"unknown build field(s): {', '.join(unknown)}")
    kwargs = {names[k]: v for k, v in typed.items() if k != "privacy"}
    privacy = body.get("privacy") or {}
    privacy_names = {"redact": "redact", "anonymizeHandles": "anonymize_handles"}
    kwargs.update({privacy_names[k]: v for k, v in privacy.items() if k in privacy_names})
    return kwargs


def _distinct(frame: pl.LazyFrame, col: str) -> list[str]:
    """The non-empty values of a text column, sorted."""
    values = frame.select(pl.col(col).drop_nulls().unique()).collect().get_column(col)
    return sorted(v for v in values.to_list() if v)


def discover_client(**kwargs: Any) -> Any:
    """A TrainingClient for the Jupyter server this kernel was started by."""
    from ..client import TrainingClient

    return TrainingClient.for_notebook(**kwargs)


def make_backend(
    backend: PanelData | None = None,
    *,
    service: Any = None,
    client: Any = None,
    remote: bool = False,
    settings: Any = None,
) -> PanelData:
    """Pick the backend from a panel's keyword arguments (see :class:`~.Dashboard`)."""
    if backend is not None:
        return backend
    if client is not None:
        return RemoteData(client)
    if remote:
        return RemoteData(discover_client())
    return LocalData(service=service, settings=settings)


def read_dataset_texts(record: Dataset, limit: int = 5000) -> list[str] | None:
    """The text of each example (all messages joined) of a built dataset, when readable."""
    path = record.path
    if not path:
        return None
    folder = Path(path)
    if not folder.is_dir():
        return None
    return example_texts(folder, limit)


def calls_frame(detail: Trajectory) -> pl.DataFrame:
    """A trajectory's LLM calls as a frame with the LLM_CALL_SCHEMA columns (the calls
    read by wire name: ``trajectoryId``, which a call does not repeat, is the detail's)."""
    tid = detail.id
    cols: dict[str, list[object]] = {k: [] for k in LLM_CALL_SCHEMA}
    for call in detail.llm_calls:
        for k in LLM_CALL_SCHEMA:
            value = tid if k == "trajectoryId" and call.get(k) is None else call.get(k)
            if k in TOOL_COLUMNS:  # objects in the detail, canonical text in the frame
                value = TOOL_COLUMNS[k](value) if value is not None else None
            cols[k].append(value)
    return pl.DataFrame(cols, schema=LLM_CALL_SCHEMA, strict=False)
