"""One small interface the panels talk to, in-process or over REST.

The panels never care where the work happens: :class:`LocalData` calls the
:class:`~milady_lab.service.TrainingService` in the kernel's own process, and
:class:`RemoteData` calls a :class:`~milady_lab.client.TrainingClient` — the Jupyter
server the notebook runs in (found by itself) or a Milady agent's server. Both return
the same plain records (the REST bodies' inner dicts) and raise the server's error.
All methods block; panels call them from :class:`~._async.UiRunner` threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl

from ..datasets.files import example_texts
from ..errors import MiladyLabError
from ..trajectories.base import LLM_CALL_SCHEMA, SUMMARY_SCHEMA
from ..trajectories.tools import TOOL_COLUMNS

ProgressFn = Callable[[int, int], None]
#: What every server with the training routes takes (a Milady agent too).
BASIC_BUILD_FIELDS = ("limit", "minLlmCallsPerTrajectory")


def describe_error(exc: BaseException) -> str:
    """The message a user should read for a failure: the server's own words when known."""
    if isinstance(exc, MiladyLabError):
        return exc.message
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message and type(exc).__module__.startswith("milady_lab"):
        return message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PanelData:
    """What the panels need from milady-lab (local service or REST); every method may
    block and may raise. Not a training backend (cpu/cuda/mlx): the panels' data source."""

    mode = "base"
    description = ""
    #: False when the backend cannot count a build's results without building it.
    can_preview = True
    #: True when dataset folders (``path`` in the record) are readable from this process.
    local_files = False

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    # trajectories
    def trajectories_frame(self) -> pl.DataFrame:
        raise NotImplementedError

    def search_trajectory_ids(self, text: str, candidates: Iterable[str]) -> set[str]:
        """Ids among ``candidates`` whose prompts or replies contain ``text`` (any case)."""
        raise NotImplementedError

    def filter_values(self) -> dict[str, list[str]]:
        """The sources and statuses the trajectories have, for the filter menus."""
        frame = self.trajectories_frame()
        return {col: _distinct(frame.lazy(), col) for col in ("source", "status")}

    def get_trajectory(self, trajectory_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def calls_of(self, trajectory_ids: Iterable[str], most: int = 300) -> pl.DataFrame:
        """LLM calls (LLM_CALL_SCHEMA) of the first ``most`` of ``trajectory_ids``, for the
        explorer's grouping by purpose; here one detail read each (REST has no calls route)."""
        frames = [calls_frame(self.get_trajectory(t)) for t in list(trajectory_ids)[:most]]
        return pl.concat(frames) if frames else pl.DataFrame(schema=LLM_CALL_SCHEMA)

    # datasets
    def list_datasets(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def build_fields(self) -> tuple[str, ...]:
        """The build-body fields this backend's builder accepts (filters included)."""
        return BASIC_BUILD_FIELDS

    def preview_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def build_dataset(
        self, body: dict[str, Any], progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError

    # jobs
    def list_jobs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def start_job(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def get_job(self, job_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def job_metrics(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        raise NotImplementedError

    # models
    def list_models(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def import_ollama(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def activate_model(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def benchmark_model(self, model_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def get_auto(self) -> dict[str, Any]:
        """The auto-improve policy, its state and recent decisions (``GET /auto``)."""
        raise NotImplementedError

    def set_auto(self, policy: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def base_models(self) -> list[str]:
        """Base model names to offer (the user may type any other)."""
        try:
            from ..training.base_models import DEFAULT_MODEL, FRIENDLY_MODELS
        except ImportError:  # pragma: no cover - training package missing
            return ["smollm2-135m-instruct"]
        return [DEFAULT_MODEL, *(m for m in FRIENDLY_MODELS if m != DEFAULT_MODEL)]

    def close(self) -> None:
        """Release what this backend opened."""


class LocalData(PanelData):
    """The service in the kernel's own process."""

    mode = "in-process"
    local_files = True

    def __init__(self, service: Any = None, settings: Any = None) -> None:
        from ..service import TrainingService

        self._owned = service is None
        self.service = service if service is not None else TrainingService(settings)
        self.description = f"in-process · {self.service.settings.home}"

    def status(self) -> dict[str, Any]:
        return self.service.status()

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

    def get_trajectory(self, trajectory_id: str) -> dict[str, Any]:
        return self.service.get_trajectory(trajectory_id)["trajectory"]

    def calls_of(self, trajectory_ids: Iterable[str], most: int | None = None) -> pl.DataFrame:
        """Every call of those trajectories, from one pass over the steps."""
        ids = list(trajectory_ids)
        frame = self.service.llm_calls_frame().filter(pl.col("trajectoryId").is_in(ids))
        return frame.select(list(LLM_CALL_SCHEMA)).collect()

    def list_datasets(self) -> list[dict[str, Any]]:
        return self.service.list_datasets()["datasets"]

    def build_fields(self) -> tuple[str, ...]:
        from ..datasets.build import BuildOptions

        return tuple(BuildOptions.FIELDS)

    def preview_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.service.preview_dataset(body)

    def build_dataset(
        self, body: dict[str, Any], progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        return self.service.build_dataset(body, progress=progress)["dataset"]

    def list_jobs(self) -> list[dict[str, Any]]:
        return self.service.list_jobs()["jobs"]

    def start_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.service.start_job(body)["job"]

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.service.get_job(job_id)["job"]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.service.cancel_job(job_id)["job"]

    def job_metrics(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        return self.service.job_metrics(job_id, after)["metrics"]

    def list_models(self) -> list[dict[str, Any]]:
        return self.service.list_models().to_dict()["models"]

    def import_ollama(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.service.import_ollama(model_id, body)

    def activate_model(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.service.activate_model(model_id, body)

    def deactivate_model(self) -> dict[str, Any]:
        return self.service.deactivate_model(None)

    def benchmark_model(self, model_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.service.benchmark_model(model_id, body)

    def get_auto(self) -> dict[str, Any]:
        return self.service.get_auto()

    def set_auto(self, policy: dict[str, Any]) -> dict[str, Any]:
        return self.service.set_auto(policy)

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

    def __init__(self, client: Any) -> None:
        self.client = client
        self.description = f"remote · {getattr(client, 'base_url', '?')}"
        self._details: dict[str, dict[str, Any]] = {}
        # A dataset folder is readable here when the server runs on this machine.
        self.local_files = True
        self._spec: dict[str, Any] | None = None

    def _server_spec(self) -> dict[str, Any]:
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

    def status(self) -> dict[str, Any]:
        return dict(self.client.status())

    def trajectories_frame(self) -> pl.DataFrame:
        rows: list[dict[str, Any]] = []
        for row in self.client.iter_trajectories(page_size=500):
            rows.append(row)
            if len(rows) >= self.max_trajectories:
                break
        cols = {k: [r.get(k) for r in rows] for k in SUMMARY_SCHEMA}
        return pl.DataFrame(cols, schema=SUMMARY_SCHEMA, strict=False)

    def search_trajectory_ids(self, text: str, candidates: Iterable[str]) -> set[str]:
        # The REST routes have no search: read each candidate's calls once and cache them.
        needle = text.lower()
        found: set[str] = set()
        for tid in candidates:
            detail = self.get_trajectory(tid)
            for call in detail.get("llmCalls") or []:
                blob = " ".join(
                    str(call.get(k) or "") for k in ("systemPrompt", "userPrompt", "response")
                )
                if needle in blob.lower():
                    found.add(tid)
                    break
        return found

    def get_trajectory(self, trajectory_id: str) -> dict[str, Any]:
        cached = self._details.get(trajectory_id)
        if cached is None:
            cached = dict(self.client.get_trajectory(trajectory_id))
            if cached.get("status") != "active":  # a finished trajectory never changes
                self._details[trajectory_id] = cached
        return cached

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self.client.list_datasets())

    def preview_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.preview_dataset(**_build_kwargs(body)))

    def build_dataset(
        self, body: dict[str, Any], progress: ProgressFn | None = None
    ) -> dict[str, Any]:
        return dict(self.client.build_dataset(**_build_kwargs(body)))

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self.client.list_jobs())

    def start_job(self, body: dict[str, Any]) -> dict[str, Any]:
        b = dict(body)
        return dict(
            self.client.start_job(
                b.pop("datasetId", None),
                backend=b.pop("backend", None),
                model=b.pop("model", None),
                iterations=b.pop("iterations", None),
                batch_size=b.pop("batchSize", None),
                learning_rate=b.pop("learningRate", None),
                max_trajectories=b.pop("maxTrajectories", None),
                **b,
            )
        )

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get_job(job_id))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.cancel_job(job_id))

    def job_metrics(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        return list(self.client.job_metrics(job_id, after=after or None))

    def list_models(self) -> list[dict[str, Any]]:
        return list(self.client.list_models())

    def import_ollama(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        model = self.client.import_ollama(
            model_id,
            model_name=body.get("modelName"),
            base_model=body.get("baseModel"),
            ollama_url=body.get("ollamaUrl"),
            mode=body.get("mode"),
            quantization=body.get("quantization"),
        )
        return {"model": dict(model)}  # the service's shape

    def activate_model(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.client.activate_model(
                model_id,
                body.get("providerModel"),
                force=bool(body.get("force")),
                create=bool(body.get("create")),
            )
        )

    def deactivate_model(self) -> dict[str, Any]:
        return dict(self.client.deactivate_model())

    def benchmark_model(self, model_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.client.benchmark_model(model_id, **(body or {})))

    def get_auto(self) -> dict[str, Any]:
        return dict(self.client.get_auto())

    def set_auto(self, policy: dict[str, Any]) -> dict[str, Any]:
        return dict(self.client.set_auto(**policy))

    def close(self) -> None:
        self.client.close()


def _build_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """A build body as the client's keyword arguments (``dataset_request.KEYWORDS``)."""
    from ..datasets.request import KEYWORDS

    names = {field: keyword for keyword, field in KEYWORDS.items() if field != "privacy"}
    unknown = sorted(set(body) - set(names) - {"privacy"})
    if unknown:
        raise ValueError(f"unknown build field(s): {', '.join(unknown)}")
    kwargs = {names[k]: v for k, v in body.items() if k != "privacy"}
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


def read_dataset_texts(record: dict[str, Any], limit: int = 5000) -> list[str] | None:
    """The text of each example (all messages joined) of a built dataset, when readable."""
    path = record.get("path")
    if not path:
        return None
    folder = Path(path)
    if not folder.is_dir():
        return None
    return example_texts(folder, limit)


def calls_frame(detail: dict[str, Any]) -> pl.DataFrame:
    """A trajectory's LLM calls as a frame with the LLM_CALL_SCHEMA columns."""
    calls = detail.get("llmCalls") or []
    tid = detail.get("id")
    cols: dict[str, list[Any]] = {k: [] for k in LLM_CALL_SCHEMA}
    for call in calls:
        for k in LLM_CALL_SCHEMA:
            value = tid if k == "trajectoryId" and call.get(k) is None else call.get(k)
            if k in TOOL_COLUMNS:  # objects in the detail, canonical text in the frame
                value = TOOL_COLUMNS[k](value) if value is not None else None
            cols[k].append(value)
    return pl.DataFrame(cols, schema=LLM_CALL_SCHEMA, strict=False)
