"""An httpx client for the ``/api/training/...`` routes (sync and async).

The same paths are served by milady-lab's Jupyter server extension and by a running
Milady agent, so one client works against both. The token goes in
``Authorization: Bearer <token>``, which both accept (Jupyter reads ``token`` and
``bearer`` prefixes); pass ``auth_scheme="token"`` for servers that want the older form.

``trust_env`` is off by default: these servers live on this machine, and a proxy
variable in the environment would otherwise send loopback traffic, with its token,
somewhere else. Turn it on for a remote server behind a proxy or a custom CA bundle.

Results are the route's record as a plain dict, typed with ``TypedDict``s: list routes
give lists, single-record routes give the record (the ``{"job": ...}`` wrapper is
removed). Every 4xx/5xx answer raises ``TrainingAPIError`` with the server's message.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Required, TypedDict, Unpack

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from .state import FINAL_STATUSES

__all__ = [
    "ActivateResult",
    "AsyncTrainingClient",
    "BenchmarkResult",
    "BuildFilters",
    "Dataset",
    "DatasetPreview",
    "Event",
    "ImportResult",
    "Job",
    "Metric",
    "Model",
    "Scores",
    "Status",
    "TrainingAPIError",
    "TrainingClient",
    "TrainingConnectionError",
    "Trajectory",
    "TrajectoryPage",
    "TrajectorySummary",
    "discover",
]

DEFAULT_TIMEOUT = 30.0
#: Dataset builds, job starts (which may build one), cancels and benchmarks take longer.
SLOW_TIMEOUT = 900.0
#: Seconds before an event stream that dropped is opened again.
RECONNECT_DELAY_S = 1.0


# -- records --
class Status(TypedDict, total=False):
    available: bool
    backend: str
    runtimeAvailable: bool
    activeJobId: str | None
    backends: list[str]
    trajectorySource: str
    runtimeReason: str


class TrajectorySummary(TypedDict, total=False):
    id: str
    agentId: str | None
    source: str | None
    status: str | None
    startTime: int | None
    endTime: int | None
    durationMs: int | None
    llmCallCount: int | None
    providerAccessCount: int | None
    totalPromptTokens: int | None
    totalCompletionTokens: int | None
    totalReward: float | None


class TrajectoryPage(TypedDict):
    trajectories: list[TrajectorySummary]
    total: int
    offset: int
    limit: int


class Trajectory(TrajectorySummary, total=False):
    llmCalls: list[dict[str, Any]]
    providerAccesses: list[dict[str, Any]]


class Dataset(TypedDict, total=False):
    id: str
    createdAt: int
    trajectoryCount: int
    exampleCount: int
    trainCount: int
    validCount: int
    path: str
    options: dict[str, Any]
    redactions: dict[str, int]  # secrets and contacts replaced, per kind


class DatasetPreview(TypedDict, total=False):
    trajectoryCount: int
    exampleCount: int
    redactions: dict[str, int]


#: A ``source`` or ``status`` filter: one value or any of several.
Names = str | list[str] | tuple[str, ...]
Day = str | datetime.date


class BuildFilters(TypedDict, total=False):
    """The filters of a dataset build or preview (keyword arguments): every field of the
    route's body (``datasets.request.BuildDatasetRequest``) in snake case, plus the
    privacy pass's."""

    source: Names
    status: Names
    start_date: Day  # a UTC day, inclusive: ``"2026-03-01"`` or a ``datetime.date``
    end_date: Day
    search: str  # text in any LLM call's prompts or reply, ignoring case
    purpose: Names  # calls whose purpose or actionType is this
    model: Names  # calls made by this model
    min_reward: float
    reward_field: Literal["totalReward", "aiJudgeReward"]
    top_fraction: float
    scenario_id: Names  # rollouts of this scenario (the agent's scenario_id)
    batch_id: Names
    include_archived: bool  # trajectories the agent archived (default True)
    #: Redaction of secrets and contacts; on unless ``False`` is passed explicitly.
    redact: bool
    #: People's handles → pseudonyms (off unless ``True``).
    anonymize_handles: bool
    #: ``pairs`` (DPO) or ``labelled`` (KTO) instead of chat examples (``sft``).
    kind: Literal["sft", "pairs", "labelled"]
    min_reward_gap: float  # pairs: the least reward difference of chosen over rejected
    label_threshold: float  # labelled: desirable at or above this reward


class Job(TypedDict, total=False):
    id: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    datasetId: str | None
    backend: str
    model: str
    createdAt: int
    startedAt: int | None
    completedAt: int | None
    progress: float
    currentIteration: int
    totalIterations: int
    loss: float | None
    valLoss: float | None
    error: str | None
    tokensPerSecond: float | None
    trainedTokens: int
    options: dict[str, Any]
    modelId: str | None


class Metric(TypedDict, total=False):
    seq: int
    jobId: str
    iteration: int
    ts: int
    loss: float
    valLoss: float
    learningRate: float
    tokensPerSecond: float
    trainedTokens: int
    peakMemory: int


class Model(TypedDict, total=False):
    id: str
    jobId: str
    name: str
    createdAt: int
    active: bool
    adapterPath: str
    baseModel: str
    backend: str
    datasetId: str | None
    finalLoss: float | None
    ollamaName: str | None
    importedAt: int | None
    providerModel: str | None
    activatedAt: int | None
    benchmark: dict[str, Any] | None


class ImportResult(TypedDict):
    id: str
    ollamaName: str
    importedAt: int


class ActivateResult(TypedDict, total=False):
    ok: Required[bool]
    activeModel: Required[str]
    #: Present when the agent may not get the model (Ollama does not list it).
    warnings: list[str]


class Scores(TypedDict):
    coherence: float
    consistency: float
    helpfulness: float


class BenchmarkResult(TypedDict, total=False):
    modelId: str
    scores: Scores
    baseline: Scores
    completedAt: int


class Event(TypedDict, total=False):
    seq: int
    kind: str
    ts: int
    message: str
    jobId: str
    datasetId: str
    modelId: str


# -- errors --
class TrainingAPIError(Exception):
    """The server answered 4xx/5xx; ``message`` is its own explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class TrainingConnectionError(TrainingAPIError):
    """The server could not be reached (``status`` 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


def _error_from(response: httpx.Response) -> TrainingAPIError:
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]
    except ValueError:
        message = response.text[:500].strip()
    return TrainingAPIError(response.status_code, message or response.reason_phrase)


# -- requests, shared by both clients --
@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    key: str | None = None  # unwrap this key of the answer
    slow: bool = False


def _seg(item_id: str) -> str:
    """An id as one path segment: ``../x`` stays inside the route (``..%2Fx``)."""
    return urllib.parse.quote(str(item_id), safe="")


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _build_body(limit: int | None, min_calls: int | None, **filters: Any) -> dict[str, Any]:
    """A build or preview body from keyword arguments named after the body's fields
    (``dataset_request.KEYWORDS``); dates may be ``datetime.date``s, names tuples. The
    privacy keys are sent only when given, so the server's defaults (redact on) hold."""
    from .datasets.request import KEYWORDS

    privacy = _fields(
        redact=filters.pop("redact", None), anonymizeHandles=filters.pop("anonymize_handles", None)
    )
    unknown = sorted(set(filters) - set(KEYWORDS))
    if unknown:
        raise TypeError(f"unknown build filter(s): {', '.join(unknown)}")
    body: dict[str, Any] = {"limit": limit, "minLlmCallsPerTrajectory": min_calls}
    for key, value in filters.items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, datetime.date):
            value = value.isoformat()
        body[KEYWORDS[key]] = value
    return _fields(**body, privacy=privacy or None)


class _Routes:
    """Builds the request of every route; the clients only send them."""

    @staticmethod
    def status() -> _Request:
        return _Request("GET", "status")

    @staticmethod
    def trajectories(limit: int | None, offset: int | None) -> _Request:
        return _Request("GET", "trajectories", params=_fields(limit=limit, offset=offset))

    @staticmethod
    def trajectory(trajectory_id: str) -> _Request:
        return _Request("GET", f"trajectories/{_seg(trajectory_id)}", key="trajectory")

    @staticmethod
    def datasets() -> _Request:
        return _Request("GET", "datasets", key="datasets")

    @staticmethod
    def build_dataset(body: dict[str, Any]) -> _Request:
        return _Request("POST", "datasets/build", body=body, key="dataset", slow=True)

    @staticmethod
    def preview_dataset(body: dict[str, Any]) -> _Request:
        return _Request("POST", "datasets/preview", body=body, slow=True)

    @staticmethod
    def jobs() -> _Request:
        return _Request("GET", "jobs", key="jobs")

    @staticmethod
    def start_job(options: dict[str, Any]) -> _Request:
        return _Request("POST", "jobs", body=_fields(**options), key="job", slow=True)

    @staticmethod
    def job(job_id: str) -> _Request:
        return _Request("GET", f"jobs/{_seg(job_id)}", key="job")

    @staticmethod
    def cancel_job(job_id: str) -> _Request:
        return _Request("POST", f"jobs/{_seg(job_id)}/cancel", key="job", slow=True)

    @staticmethod
    def job_metrics(job_id: str, after: int | None) -> _Request:
        params = _fields(after=after)
        return _Request("GET", f"jobs/{_seg(job_id)}/metrics", params=params, key="metrics")

    @staticmethod
    def models() -> _Request:
        return _Request("GET", "models", key="models")

    @staticmethod
    def import_ollama(model_id: str, body: dict[str, Any]) -> _Request:
        path = f"models/{_seg(model_id)}/import-ollama"
        return _Request("POST", path, body=_fields(**body), key="model", slow=True)

    @staticmethod
    def activate(
        model_id: str,
        provider_model: str | None,
        force: bool = False,
        create: bool = False,
        ollama_url: str | None = None,
    ) -> _Request:
        body = _fields(
            providerModel=provider_model,
            force=force or None,
            create=create or None,
            ollamaUrl=ollama_url,
        )
        return _Request("POST", f"models/{_seg(model_id)}/activate", body=body, slow=True)

    @staticmethod
    def benchmarks(model_id: str) -> _Request:
        return _Request("GET", f"models/{_seg(model_id)}/benchmarks", key="benchmarks")

    @staticmethod
    def deactivate() -> _Request:
        return _Request("POST", "models/deactivate", body={}, slow=True)

    @staticmethod
    def activations(limit: int | None) -> _Request:
        return _Request("GET", "activations", params=_fields(limit=limit), key="activations")

    @staticmethod
    def auto() -> _Request:
        return _Request("GET", "auto")

    @staticmethod
    def set_auto(policy: dict[str, Any]) -> _Request:
        return _Request("PUT", "auto", body=dict(policy))

    @staticmethod
    def benchmark(model_id: str, options: dict[str, Any]) -> _Request:
        path = f"models/{_seg(model_id)}/benchmark"
        return _Request("POST", path, body=_fields(**options), slow=True)

    @staticmethod
    def openapi() -> _Request:
        return _Request("GET", "openapi.json")


def _job_options(
    dataset_id: str | None,
    backend: str | None,
    model: str | None,
    iterations: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    max_trajectories: int | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "datasetId": dataset_id,
        "backend": backend,
        "model": model,
        "iterations": iterations,
        "batchSize": batch_size,
        "learningRate": learning_rate,
        "maxTrajectories": max_trajectories,
        **extra,
    }


class _Cursor:
    """Where an event stream stands: the last event's seq, else the stream's last ``id:``."""

    def __init__(self, after: int | None) -> None:
        self.seq = after
        self.last_id: str | None = None

    def event(self, sse: ServerSentEvent) -> Event | None:
        """The event an SSE message carries (JSON data; its SSE name as the default kind)."""
        if sse.id and "\0" not in sse.id:
            self.last_id = sse.id
        if not sse.data:
            return None  # a bare ``id:`` (the stream's head) or a keep-alive
        try:
            event = json.loads(sse.data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            event = {"message": sse.data}
        event.setdefault("kind", sse.event or "message")
        if isinstance(event.get("seq"), int):
            self.seq = event["seq"]
        return event  # type: ignore[return-value]

    def resume(self) -> int | None:
        """Where a dropped stream picks up: the last seq seen, else the last event id."""
        if self.seq is None and self.last_id and self.last_id.isdigit():
            self.seq = int(self.last_id)
        return self.seq


def _http_options(
    base_url: str,
    token: str | None,
    timeout: float,
    auth_scheme: str,
    trust_env: bool,
    transport: Any,
) -> dict[str, Any]:
    """The ``httpx.Client`` / ``httpx.AsyncClient`` arguments both clients use."""
    return {
        "base_url": _api_root(base_url),
        "headers": _headers(token, auth_scheme),
        "timeout": timeout,
        "trust_env": trust_env,
        "follow_redirects": False,
        "transport": transport,
    }


def _request_args(req: _Request, slow_timeout: float) -> dict[str, Any]:
    return {
        "params": req.params or None,
        "json": req.body if req.method in ("POST", "PUT") else None,
        "timeout": slow_timeout if req.slow else httpx.USE_CLIENT_DEFAULT,
    }


def _answer(req: _Request, response: httpx.Response) -> Any:
    """The route's value, or its error as ``TrainingAPIError``."""
    if response.status_code >= 400:
        raise _error_from(response)
    body = response.json()
    return body[req.key] if req.key else body


def _unreachable(base_url: str, exc: Exception) -> TrainingConnectionError:
    return TrainingConnectionError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}")


def _headers(token: str | None, auth_scheme: str) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"{auth_scheme} {token}"
    return headers


def _api_root(base_url: str) -> str:
    base = base_url if base_url.endswith("/") else base_url + "/"
    return base + "api/training/"


# -- the sync client --
class TrainingClient:
    """Blocking client; use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        slow_timeout: float = SLOW_TIMEOUT,
        auth_scheme: str = "Bearer",
        trust_env: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.slow_timeout = slow_timeout
        self._http = httpx.Client(
            **_http_options(base_url, token, timeout, auth_scheme, trust_env, transport)
        )

    @classmethod
    def for_notebook(cls, **kwargs: Any) -> TrainingClient:
        """A client for the Jupyter server this kernel (or this user) runs; see ``discover``."""
        url, token = discover()
        return cls(url, token, **kwargs)

    def __enter__(self) -> TrainingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, req: _Request) -> Any:
        args = _request_args(req, self.slow_timeout)
        try:
            response = self._http.request(req.method, req.path, **args)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _answer(req, response)

    # routes
    def status(self) -> Status:
        return self._send(_Routes.status())

    def list_trajectories(
        self, limit: int | None = None, offset: int | None = None
    ) -> TrajectoryPage:
        return self._send(_Routes.trajectories(limit, offset))

    def iter_trajectories(self, page_size: int = 500) -> Iterator[TrajectorySummary]:
        """Every trajectory, newest first, a page at a time."""
        offset = 0
        while True:
            page = self.list_trajectories(page_size, offset)
            yield from page["trajectories"]
            offset += len(page["trajectories"])
            if not page["trajectories"] or offset >= page["total"]:
                return

    def get_trajectory(self, trajectory_id: str) -> Trajectory:
        return self._send(_Routes.trajectory(trajectory_id))

    def list_datasets(self) -> list[Dataset]:
        return self._send(_Routes.datasets())

    def build_dataset(
        self,
        limit: int | None = None,
        min_llm_calls_per_trajectory: int | None = None,
        **filters: Unpack[BuildFilters],
    ) -> Dataset:
        """Build a dataset; the filters narrow the trajectories (see the route's body)."""
        body = _build_body(limit, min_llm_calls_per_trajectory, **filters)
        return self._send(_Routes.build_dataset(body))

    def preview_dataset(
        self,
        limit: int | None = None,
        min_llm_calls_per_trajectory: int | None = None,
        **filters: Unpack[BuildFilters],
    ) -> DatasetPreview:
        """What ``build_dataset`` with these options would give; writes nothing."""
        body = _build_body(limit, min_llm_calls_per_trajectory, **filters)
        return self._send(_Routes.preview_dataset(body))

    def list_jobs(self) -> list[Job]:
        return self._send(_Routes.jobs())

    def start_job(
        self,
        dataset_id: str | None = None,
        *,
        backend: str | None = None,
        model: str | None = None,
        iterations: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        max_trajectories: int | None = None,
        **extra: Any,
    ) -> Job:
        """Start a job (queued while another runs); ``extra`` takes further camelCase options."""
        options = _job_options(
            dataset_id, backend, model, iterations, batch_size, learning_rate,
            max_trajectories, extra,
        )  # fmt: skip
        return self._send(_Routes.start_job(options))

    def get_job(self, job_id: str) -> Job:
        return self._send(_Routes.job(job_id))

    def cancel_job(self, job_id: str) -> Job:
        return self._send(_Routes.cancel_job(job_id))

    def job_metrics(self, job_id: str, after: int | None = None) -> list[Metric]:
        return self._send(_Routes.job_metrics(job_id, after))

    def list_models(self) -> list[Model]:
        return self._send(_Routes.models())

    def import_ollama(
        self,
        model_id: str,
        *,
        model_name: str | None = None,
        base_model: str | None = None,
        ollama_url: str | None = None,
        mode: str | None = None,
        quantization: str | None = None,
    ) -> ImportResult:
        """``mode``: ``model`` (one GGUF, the default) or ``adapter``; ``quantization``:
        ``f16`` (default), ``q8_0`` or ``f32``."""
        body = _fields(
            modelName=model_name, baseModel=base_model, ollamaUrl=ollama_url,
            mode=mode, quantization=quantization,
        )  # fmt: skip
        return self._send(_Routes.import_ollama(model_id, body))

    def activate_model(
        self,
        model_id: str,
        provider_model: str | None = None,
        *,
        force: bool = False,
        create: bool = False,
        ollama_url: str | None = None,
    ) -> ActivateResult:
        """Activate; refused (409) when the gate finds it worse or it was never
        benchmarked, unless ``force``; a missing agent config is a 400 unless ``create``."""
        return self._send(_Routes.activate(model_id, provider_model, force, create, ollama_url))

    def list_benchmarks(self, model_id: str) -> list[BenchmarkResult]:
        return self._send(_Routes.benchmarks(model_id))

    def deactivate_model(self) -> dict[str, Any]:
        """Undo the last activation (the agent config as it was before it)."""
        return self._send(_Routes.deactivate())

    def list_activations(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self._send(_Routes.activations(limit))

    def get_auto(self) -> dict[str, Any]:
        return self._send(_Routes.auto())

    def set_auto(self, **policy: Any) -> dict[str, Any]:
        """Change the auto-improve policy; ``policy`` are camelCase fields."""
        return self._send(_Routes.set_auto(policy))

    def benchmark_model(self, model_id: str, **options: Any) -> BenchmarkResult:
        """Score the model against its base; ``options`` are camelCase body fields."""
        return self._send(_Routes.benchmark(model_id, options))

    def openapi(self) -> dict[str, Any]:
        return self._send(_Routes.openapi())

    # events
    def events(
        self,
        after: int | None = None,
        *,
        timeout: float | None = None,
        reconnect: bool = True,
    ) -> Iterator[Event]:
        """Events as they happen (after seq ``after``; None: from now; 0: the whole log).

        Ends after ``timeout`` seconds when given; reconnects with ``Last-Event-ID``
        when the connection drops, unless ``reconnect`` is False.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = _Cursor(after)
        while True:
            try:
                args = _stream_args(self._http, cursor.seq, deadline)
                with connect_sse(self._http, "GET", "events", **args) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise _error_from(source.response)
                    for sse in source.iter_sse():
                        if (event := cursor.event(sse)) is not None:
                            yield event
            except httpx.TransportError as exc:
                if not reconnect:
                    raise _stream_dropped(self.base_url, exc) from exc
            if not reconnect or (deadline is not None and time.monotonic() >= deadline):
                return
            cursor.resume()
            time.sleep(RECONNECT_DELAY_S)

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> Job:
        """Follow the event stream until the job ends; returns its final record.

        Servers without the event stream (404) are polled once a second instead.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            cursor = self.head_event_seq()  # taken before the status check: no event is missed
        except TrainingAPIError as exc:
            if exc.status != 404:
                raise
            cursor = None
        job = self.get_job(job_id)
        while job["status"] not in FINAL_STATUSES:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            chunk = 30.0 if left is None else min(30.0, left)
            if cursor is None:
                time.sleep(min(1.0, chunk))
            else:
                for event in self.events(cursor, timeout=chunk, reconnect=False):
                    cursor = event.get("seq", cursor)
                    if event.get("jobId") == job_id and event.get("kind") in _FINAL_KINDS:
                        break
            job = self.get_job(job_id)  # also repairs a job whose worker died
        return job

    def head_event_seq(self) -> int | None:
        """The seq of the newest event (the stream's opening ``id:``)."""
        cursor = _Cursor(None)
        with connect_sse(self._http, "GET", "events", params={"timeout": 0}) as source:
            if source.response.status_code >= 400:
                source.response.read()
                raise _error_from(source.response)
            for sse in source.iter_sse():
                cursor.event(sse)
        return cursor.resume()


_FINAL_KINDS = ("job_completed", "job_failed", "job_cancelled")


# -- the async client --
class AsyncTrainingClient:
    """The same routes with ``httpx.AsyncClient``; use ``async with`` or ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        slow_timeout: float = SLOW_TIMEOUT,
        auth_scheme: str = "Bearer",
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.slow_timeout = slow_timeout
        self._http = httpx.AsyncClient(
            **_http_options(base_url, token, timeout, auth_scheme, trust_env, transport)
        )

    @classmethod
    def for_notebook(cls, **kwargs: Any) -> AsyncTrainingClient:
        url, token = discover()
        return cls(url, token, **kwargs)

    async def __aenter__(self) -> AsyncTrainingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, req: _Request) -> Any:
        args = _request_args(req, self.slow_timeout)
        try:
            response = await self._http.request(req.method, req.path, **args)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _answer(req, response)

    async def status(self) -> Status:
        return await self._send(_Routes.status())

    async def list_trajectories(
        self, limit: int | None = None, offset: int | None = None
    ) -> TrajectoryPage:
        return await self._send(_Routes.trajectories(limit, offset))

    async def get_trajectory(self, trajectory_id: str) -> Trajectory:
        return await self._send(_Routes.trajectory(trajectory_id))

    async def list_datasets(self) -> list[Dataset]:
        return await self._send(_Routes.datasets())

    async def build_dataset(
        self,
        limit: int | None = None,
        min_llm_calls_per_trajectory: int | None = None,
        **filters: Unpack[BuildFilters],
    ) -> Dataset:
        """Build a dataset; the filters narrow the trajectories (see the route's body)."""
        body = _build_body(limit, min_llm_calls_per_trajectory, **filters)
        return await self._send(_Routes.build_dataset(body))

    async def preview_dataset(
        self,
        limit: int | None = None,
        min_llm_calls_per_trajectory: int | None = None,
        **filters: Unpack[BuildFilters],
    ) -> DatasetPreview:
        """What ``build_dataset`` with these options would give; writes nothing."""
        body = _build_body(limit, min_llm_calls_per_trajectory, **filters)
        return await self._send(_Routes.preview_dataset(body))

    async def list_jobs(self) -> list[Job]:
        return await self._send(_Routes.jobs())

    async def start_job(
        self,
        dataset_id: str | None = None,
        *,
        backend: str | None = None,
        model: str | None = None,
        iterations: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        max_trajectories: int | None = None,
        **extra: Any,
    ) -> Job:
        options = _job_options(
            dataset_id, backend, model, iterations, batch_size, learning_rate,
            max_trajectories, extra,
        )  # fmt: skip
        return await self._send(_Routes.start_job(options))

    async def get_job(self, job_id: str) -> Job:
        return await self._send(_Routes.job(job_id))

    async def cancel_job(self, job_id: str) -> Job:
        return await self._send(_Routes.cancel_job(job_id))

    async def job_metrics(self, job_id: str, after: int | None = None) -> list[Metric]:
        return await self._send(_Routes.job_metrics(job_id, after))

    async def list_models(self) -> list[Model]:
        return await self._send(_Routes.models())

    async def import_ollama(
        self,
        model_id: str,
        *,
        model_name: str | None = None,
        base_model: str | None = None,
        ollama_url: str | None = None,
        mode: str | None = None,
        quantization: str | None = None,
    ) -> ImportResult:
        """``mode``: ``model`` (one GGUF, the default) or ``adapter``; ``quantization``:
        ``f16`` (default), ``q8_0`` or ``f32``."""
        body = _fields(
            modelName=model_name, baseModel=base_model, ollamaUrl=ollama_url,
            mode=mode, quantization=quantization,
        )  # fmt: skip
        return await self._send(_Routes.import_ollama(model_id, body))

    async def activate_model(
        self,
        model_id: str,
        provider_model: str | None = None,
        *,
        force: bool = False,
        create: bool = False,
        ollama_url: str | None = None,
    ) -> ActivateResult:
        return await self._send(
            _Routes.activate(model_id, provider_model, force, create, ollama_url)
        )

    async def list_benchmarks(self, model_id: str) -> list[BenchmarkResult]:
        return await self._send(_Routes.benchmarks(model_id))

    async def deactivate_model(self) -> dict[str, Any]:
        return await self._send(_Routes.deactivate())

    async def list_activations(self, limit: int | None = None) -> list[dict[str, Any]]:
        return await self._send(_Routes.activations(limit))

    async def get_auto(self) -> dict[str, Any]:
        return await self._send(_Routes.auto())

    async def set_auto(self, **policy: Any) -> dict[str, Any]:
        return await self._send(_Routes.set_auto(policy))

    async def benchmark_model(self, model_id: str, **options: Any) -> BenchmarkResult:
        return await self._send(_Routes.benchmark(model_id, options))

    async def openapi(self) -> dict[str, Any]:
        return await self._send(_Routes.openapi())

    async def events(
        self,
        after: int | None = None,
        *,
        timeout: float | None = None,
        reconnect: bool = True,
    ) -> AsyncIterator[Event]:
        """Events as they happen (after seq ``after``; None: from now; 0: the whole log).

        Ends after ``timeout`` seconds when given; reconnects with the last seq seen
        when the connection drops, unless ``reconnect`` is False (as the sync client).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = _Cursor(after)
        while True:
            try:
                args = _stream_args(self._http, cursor.seq, deadline)
                async with aconnect_sse(self._http, "GET", "events", **args) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise _error_from(source.response)
                    async for sse in source.aiter_sse():
                        if (event := cursor.event(sse)) is not None:
                            yield event
            except httpx.TransportError as exc:
                if not reconnect:
                    raise _stream_dropped(self.base_url, exc) from exc
            if not reconnect or (deadline is not None and time.monotonic() >= deadline):
                return
            cursor.resume()
            await asyncio.sleep(RECONNECT_DELAY_S)


def _stream_args(
    http: httpx.Client | httpx.AsyncClient, cursor: int | None, deadline: float | None
) -> dict[str, Any]:
    """The request of one event-stream connection (both clients): from ``cursor``,
    asking the server to end it at ``deadline``."""
    params: dict[str, Any] = {}
    if cursor is not None:
        params["after"] = cursor
    if deadline is not None:
        params["timeout"] = max(0.0, round(deadline - time.monotonic(), 3))
    return {
        "params": params,
        "timeout": httpx.Timeout(http.timeout.connect, read=60.0),
    }


def _stream_dropped(base_url: str, exc: Exception) -> TrainingConnectionError:
    return TrainingConnectionError(f"event stream from {base_url}: {exc}")


# -- finding the Jupyter server --
def discover(runtime_dir: str | None = None, timeout: float = 3.0) -> tuple[str, str | None]:
    """``(url, token)`` of the running Jupyter server to talk to.

    Inside a kernel: the server that runs this kernel. Otherwise: the most recently
    started server that serves the training routes. Raises ``TrainingConnectionError``
    when there is none.
    """
    from jupyter_server.serverapp import list_running_servers

    servers = sorted(list_running_servers(runtime_dir), key=lambda s: s.get("pid", 0), reverse=True)
    kernel_id = _own_kernel_id()
    fallback: tuple[str, str | None] | None = None
    for info in servers:
        url, token = info.get("url"), info.get("token") or None
        if not url:
            continue
        headers = _headers(token, "Bearer")
        try:
            with httpx.Client(headers=headers, timeout=timeout, trust_env=False) as http:
                if kernel_id is not None:
                    kernels = http.get(urllib.parse.urljoin(url, "api/kernels"))
                    if kernels.status_code == 200 and any(
                        k.get("id") == kernel_id for k in kernels.json()
                    ):
                        return url, token
                if fallback is None:
                    probe = http.get(_api_root(url) + "status")
                    if probe.status_code == 200:
                        fallback = (url, token)
        except (httpx.HTTPError, ValueError):
            continue
    if fallback is not None:
        return fallback
    raise TrainingConnectionError(
        "no running Jupyter server with milady-lab's training routes was found "
        "(start one with `make lab`, or pass the URL and token to TrainingClient)"
    )


def _own_kernel_id() -> str | None:
    """The id of the kernel this code runs in, from its connection file; None outside one."""
    try:
        from ipykernel.connect import get_connection_file

        name = get_connection_file().rsplit("/", 1)[-1]
    except Exception:
        return None
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-") : -len(".json")]
    return None
