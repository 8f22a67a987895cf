"""An httpx client for the ``/api/training/...`` routes (sync and async).

The same paths are served by milady-lab's Jupyter server extension and by a running
Milady agent, so one client works against both. The token goes in
``Authorization: Bearer <token>``, which both accept (Jupyter reads ``token`` and
``bearer`` prefixes); pass ``auth_scheme="token"`` for servers that want the older form.

``trust_env`` is off by default: these servers live on this machine, and a proxy
variable in the environment would otherwise send loopback traffic, with its token,
somewhere else. Turn it on for a remote server behind a proxy or a custom CA bundle.

The client speaks the contract of ``milady_lab.api``: each request is built from the
route table (``routes.BY_ID``: method, path, body struct), its body is checked by the
route's body struct before it is sent (a refused body is a ``TrainingRequestError``,
status 400, in the server's words), and each answer is decoded into the route's answer
struct (``records``). List routes give lists, single-record routes give the record (the
``{"job": ...}`` wrapper is removed); a record also reads like its JSON
(``job["status"]``). Every 4xx/5xx answer raises ``TrainingAPIError`` with the server's
message.

A Milady agent may answer with fewer fields than milady-lab: a record that lacks a field
the contract requires still decodes (as a subclass of its record, the missing fields
None and absent from its mapping view), so the same calls work against both servers.
A field of another type, or an answer that is not JSON, is a ``TrainingAnswerError``
naming where it broke.

Both clients share every request and answer: the route methods are written once
(``_Operations``) and hand a sans-I/O ``_Call`` to the client's ``_send``; only sending
it (blocking, or awaited) differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import inspect
import time
import types
import typing
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, Self, TypedDict, TypeVar, Unpack, overload

import httpx
import msgspec
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from .api.routes import BY_ID, Operation
from .api.schema import (
    ActivateAnswer,
    Activation,
    AutoAnswer,
    BenchmarkAnswer,
    BenchmarkRun,
    Dataset,
    DatasetPreview,
    DeactivateAnswer,
    Event,
    ImportedModel,
    Job,
    JsonObject,
    Metric,
    Model,
    PrivacyRequest,
    Record,
    Scores,
    Status,
    Trajectory,
    TrajectoryPage,
    TrajectorySummary,
)
from .datasets.request import KEYWORDS, BuildDatasetRequest
from .state import FINAL_STATUSES

__all__ = [
    "ActivateResult",
    "AsyncTrainingClient",
    "BenchmarkResult",
    "BenchmarkRun",
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
    "StreamEvent",
    "TrainingAPIError",
    "TrainingAnswerError",
    "TrainingClient",
    "TrainingConnectionError",
    "TrainingRequestError",
    "Trajectory",
    "TrajectoryPage",
    "TrajectorySummary",
    "discover",
]

DEFAULT_TIMEOUT = 30.0
#: Dataset builds, job starts (which may build one), cancels and benchmarks take longer.
SLOW_TIMEOUT = 900.0
#: The operations sent with ``slow_timeout``.
SLOW_OPERATIONS = frozenset(
    {
        "buildDataset",
        "previewDataset",
        "startJob",
        "cancelJob",
        "importOllama",
        "activateModel",
        "deactivateModel",
        "benchmarkModel",
    }
)
#: Seconds before an event stream that dropped is opened again.
RECONNECT_DELAY_S = 1.0

# The names the hand-written records of earlier versions had: the contract's records.
ActivateResult = ActivateAnswer
BenchmarkResult = BenchmarkAnswer
ImportResult = ImportedModel

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R", bound=msgspec.Struct)
#: The HTTP client (``httpx.Client`` or ``httpx.AsyncClient``) and what ``events`` gives.
H = TypeVar("H", httpx.Client, httpx.AsyncClient)
E = TypeVar("E", Iterator["StreamEvent"], AsyncIterator["StreamEvent"])

#: A ``source`` or ``status`` filter: one value or any of several.
Names = str | list[str] | tuple[str, ...]
Day = str | datetime.date


class BuildFilters(TypedDict, total=False):
    """The filters of a dataset build or preview (keyword arguments, for completion in an
    editor): the fields of the route's body (``datasets.request.KEYWORDS``, checked by
    a test) in snake case, plus the privacy pass's."""

    source: Names
    status: Names
    start_date: Day  # a day, inclusive: ``"2026-03-01"`` or a ``datetime.date``
    end_date: Day
    time_zone: str  # the days' IANA zone (``"Europe/Lisbon"``; UTC when omitted)
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
    #: ``time`` (default): validate on the newest trajectories; ``hash``: by content hash.
    split: Literal["time", "hash"]


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


class TrainingRequestError(TrainingAPIError):
    """A body the route's struct refuses, refused here before it is sent: ``status`` 400
    and the sentence the server would answer with."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class TrainingAnswerError(TrainingAPIError):
    """The server answered (``status``) but not as the route's record says: not JSON, or
    a field of another type (the message names where)."""


def _error_from(response: httpx.Response) -> TrainingAPIError:
    """A 4xx/5xx answer's explanation: ``message`` (Jupyter's), else ``error`` (the
    agent's), else the start of the body."""
    message = ""
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        message = response.text[:500].strip()
    else:
        if isinstance(body, dict):
            said = body.get("message") or body.get("error")
            message = said if isinstance(said, str) else ""
    return TrainingAPIError(response.status_code, message or response.reason_phrase)


def _unreachable(base_url: str, exc: Exception) -> TrainingConnectionError:
    return TrainingConnectionError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _reaching(base_url: str) -> Iterator[None]:
    """A transport failure inside as ``TrainingConnectionError``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise _unreachable(base_url, exc) from exc


# -- answers: the route's struct, lenient about fields a server leaves out --
def _decode(content: bytes, kind: type[R], where: str, status: int) -> R:
    """An answer's JSON as ``kind``; see ``_convert`` for one that does not fit."""
    try:
        return msgspec.json.decode(content, type=kind)
    except msgspec.ValidationError:
        pass  # a field missing or of another type: looked at once more, leniently
    except msgspec.DecodeError as exc:
        raise TrainingAnswerError(status, f"{where}: the answer is not JSON ({exc})") from None
    return _convert(msgspec.json.decode(content), kind, where, status)


def _convert(value: Any, kind: type[R], where: str, status: int) -> R:
    """``value`` (JSON values) as ``kind``. A record missing fields the contract requires
    (a Milady agent's, which sends fewer) becomes its lenient twin (``_lenient``); a field
    of another type is a ``TrainingAnswerError`` naming it."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError:
        pass
    try:
        return msgspec.convert(value, _lenient(kind))
    except msgspec.ValidationError as exc:
        message = f"{where}: the answer does not fit milady-lab's {kind.__name__}: {exc}"
        raise TrainingAnswerError(status, message) from None


@functools.cache
def _lenient(kind: type[R]) -> type[R]:
    """A subclass of the record ``kind`` in which each required field may be missing
    (None, and absent from the mapping view), its records' records lenient too."""
    hints = typing.get_type_hints(kind, include_extras=True)
    fields = []
    for f in msgspec.structs.fields(kind):
        hint = _relaxed(hints[f.name])
        if f.required:
            fields.append((f.name, hint | None, msgspec.field(default=None, name=f.encode_name)))
        else:
            default = msgspec.field(
                default=f.default, default_factory=f.default_factory, name=f.encode_name
            )
            fields.append((f.name, hint, default))
    return msgspec.defstruct(
        kind.__name__, fields, bases=(kind,), kw_only=True, module=kind.__module__
    )


def _relaxed(hint: Any) -> Any:
    """``hint`` with every record in it replaced by its lenient twin."""
    if isinstance(hint, type) and issubclass(hint, Record):
        return _lenient(hint)
    args = typing.get_args(hint)
    if not args:
        return hint
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return typing.Annotated[(_relaxed(args[0]), *hint.__metadata__)]
    if origin is Literal:
        return hint
    relaxed = tuple(_relaxed(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return functools.reduce(lambda a, b: a | b, relaxed)
    return origin[relaxed]


# -- requests, shared by both clients --
@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request of a route, without I/O: what to send, and how its answer is read."""

    op: Operation
    path: str
    params: Mapping[str, int | float] | None = None
    body: JsonObject | None = None
    #: The answer's attribute that is the result (``job`` of ``{"job": ...}``).
    key: str | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient, slow_timeout: float) -> httpx.Request:
        slow = self.op.id in SLOW_OPERATIONS
        return http.build_request(
            self.op.method,
            self.path,
            params=self.params,
            json=self.body,
            timeout=slow_timeout if slow else httpx.USE_CLIENT_DEFAULT,
        )

    def answer(self, response: httpx.Response) -> T:
        """The route's result, or its error as ``TrainingAPIError``."""
        if response.status_code >= 400:
            raise _error_from(response)
        if self.op.answer is None:  # free-form JSON (the OpenAPI document)
            return msgspec.json.decode(response.content)
        where = f"{self.op.method} {self.path}"
        other = self.op.also.get(response.status_code)  # e.g. a started run's 202
        kind = self.op.answer if other is None else other[1]
        answer = _decode(response.content, kind, where, response.status_code)
        return getattr(answer, self.key) if self.key else answer  # type: ignore[return-value]


def _call(
    op_id: str,
    *,
    key: str | None = None,
    params: Mapping[str, int | None] | None = None,
    body: Mapping[str, Any] | None = None,
    nulls: bool = False,
    **path: str,
) -> _Call[Any]:
    """The call of operation ``op_id``: ``path`` fills its path (each id one quoted
    segment), ``params`` its query (None left out), ``body`` its body (see ``_body``;
    with ``nulls``, a field given as None is sent as null: a partial update's reset)."""
    op = BY_ID[op_id]
    query = {k: v for k, v in (params or {}).items() if v is not None}
    json = None if op.body is None else _checked(op.body, _body(op.body, body or {}, nulls))
    return _Call(op, op.url(**{k: _seg(v) for k, v in path.items()}), query or None, json, key)


def _seg(item_id: str) -> str:
    """An id as one path segment: ``../x`` stays inside the route (``..%2Fx``)."""
    return urllib.parse.quote(str(item_id), safe="")


def _body(kind: type[msgspec.Struct], values: Mapping[str, Any], nulls: bool = False) -> JsonObject:
    """The given fields (None: not given, unless ``nulls``) of a ``kind`` body by their wire
    names; a key may be the field's Python name (``batch_size``) or its wire name
    (``batchSize``). Only given fields are sent, so the server's defaults hold."""
    names = {f.name: f.encode_name for f in msgspec.structs.fields(kind)}
    return {names.get(k, k): _json_value(v) for k, v in values.items() if nulls or v is not None}


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _checked(kind: type[msgspec.Struct], body: JsonObject) -> JsonObject:
    """``body``, once the route's struct takes it; else ``TrainingRequestError`` in the
    words the server would use (``api.decode``)."""
    try:
        msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        from .api.decode import explain  # jsonschema: loaded only to word a refusal

        raise TrainingRequestError(explain(body, kind, exc)) from None
    return body


def _build_body(limit: int | None, min_calls: int | None, **filters: Any) -> JsonObject:
    """A build or preview body from keyword arguments named after the body's fields
    (``datasets.request.KEYWORDS``); dates may be ``datetime.date``s, names tuples. The
    privacy keys are sent only when given, so the server's defaults (redact on) hold."""
    privacy_keys = ("redact", "anonymize_handles")
    privacy = _body(PrivacyRequest, {k: filters.pop(k, None) for k in privacy_keys})
    unknown = sorted(set(filters) - set(KEYWORDS))
    if unknown:
        raise TypeError(f"unknown build filter(s): {', '.join(unknown)}")
    values = {"limit": limit, "min_llm_calls_per_trajectory": min_calls, **filters}
    return {**_body(BuildDatasetRequest, values), **({"privacy": privacy} if privacy else {})}


class _Route(Generic[P, T]):
    """A route's method, written once for both clients: the decorated function (no
    ``self``) builds the ``_Call`` from the method's arguments, and the client's ``_send``
    sends it (``TrainingClient``: the result; ``AsyncTrainingClient``: an awaitable)."""

    def __init__(self, build: Callable[P, _Call[T]]) -> None:
        self._build = build
        functools.update_wrapper(self, build)
        # What ``help()`` and completion show: the result, not the call (``_Call[Job]``).
        signature = inspect.signature(build)
        result = str(signature.return_annotation).removeprefix("_Call[").removesuffix("]")
        self._signatures = {
            False: signature.replace(return_annotation=result),
            True: signature.replace(return_annotation=f"Awaitable[{result}]"),
        }

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: AsyncTrainingClient, owner: type) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __get__(self, client: TrainingClient, owner: type) -> Callable[P, T]: ...
    def __get__(self, client: Any, owner: type) -> Any:
        if client is None:
            return self
        build = self._build

        @functools.wraps(build)
        def send(*args: P.args, **kwargs: P.kwargs) -> Any:
            return client._send(build(*args, **kwargs))

        send.__signature__ = self._signatures[isinstance(client, AsyncTrainingClient)]  # type: ignore[attr-defined]
        return send


class _Operations:
    """Every route's method, once for both clients (see ``_Route``)."""

    @_Route
    def status() -> _Call[Status]:
        """The backend, whether training can run here, and the counters."""
        return _call("getStatus")

    @_Route
    def list_trajectories(
        limit: int | None = None, offset: int | None = None
    ) -> _Call[TrajectoryPage]:
        """One page of trajectories, newest first."""
        return _call("listTrajectories", params={"limit": limit, "offset": offset})

    @_Route
    def get_trajectory(trajectory_id: str) -> _Call[Trajectory]:
        """One trajectory with its LLM calls and provider accesses."""
        return _call("getTrajectory", key="trajectory", id=trajectory_id)

    @_Route
    def list_datasets() -> _Call[list[Dataset]]:
        return _call("listDatasets", key="datasets")

    @_Route
    def build_dataset(
        limit: int | None = None,
        min_llm_calls_per_trajectory: int | None = None,
        **filters: Unpack[BuildFilters],
    ) -> _Call[Dataset]:
        """Build a dataset; the filters narrow the trajectories (see the route's body)."""
        body = _build_body(limit, min_llm_calls_per_trajectory, **filters)
        return _call("buildDataset", key="dataset", body=body)

    @_Route
    def preview_dataset(
        limit: int | None = None,
        min_llm_calls_per_trajectory: int | None = None,
        **filters: Unpack[BuildFilters],
    ) -> _Call[DatasetPreview]:
        """What ``build_dataset`` with these options would give; writes nothing."""
        body = _build_body(limit, min_llm_calls_per_trajectory, **filters)
        return _call("previewDataset", body=body)

    @_Route
    def list_jobs() -> _Call[list[Job]]:
        return _call("listJobs", key="jobs")

    @_Route
    def start_job(
        dataset_id: str | None = None,
        *,
        backend: str | None = None,
        model: str | None = None,
        iterations: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        max_trajectories: int | None = None,
        **extra: Any,
    ) -> _Call[Job]:
        """Start a job (queued while another runs); ``extra`` takes further options of the
        body, by their camelCase or snake_case names."""
        named = {
            "dataset_id": dataset_id, "backend": backend, "model": model,
            "iterations": iterations, "batch_size": batch_size,
            "learning_rate": learning_rate, "max_trajectories": max_trajectories,
        }  # fmt: skip
        return _call("startJob", key="job", body={**named, **extra})

    @_Route
    def get_job(job_id: str) -> _Call[Job]:
        return _call("getJob", key="job", id=job_id)

    @_Route
    def cancel_job(job_id: str) -> _Call[Job]:
        return _call("cancelJob", key="job", id=job_id)

    @_Route
    def job_metrics(job_id: str, after: int | None = None) -> _Call[list[Metric]]:
        """The job's metrics in order (those after seq ``after`` when given)."""
        return _call("getJobMetrics", key="metrics", id=job_id, params={"after": after})

    @_Route
    def list_models() -> _Call[list[Model]]:
        return _call("listModels", key="models")

    @_Route
    def import_ollama(
        model_id: str,
        *,
        model_name: str | None = None,
        base_model: str | None = None,
        ollama_url: str | None = None,
        mode: str | None = None,
        quantization: str | None = None,
    ) -> _Call[ImportedModel]:
        """``mode``: ``model`` (one GGUF, the default) or ``adapter``; ``quantization``:
        ``f16`` (default), ``q8_0`` or ``f32``."""
        body = {
            "model_name": model_name, "base_model": base_model, "ollama_url": ollama_url,
            "mode": mode, "quantization": quantization,
        }  # fmt: skip
        return _call("importOllama", key="model", id=model_id, body=body)

    @_Route
    def activate_model(
        model_id: str,
        provider_model: str | None = None,
        *,
        force: bool = False,
        create: bool = False,
        ollama_url: str | None = None,
    ) -> _Call[ActivateAnswer]:
        """Activate; refused (409) when the gate finds it worse or it was never
        benchmarked, unless ``force``; a missing agent config is a 400 unless ``create``."""
        body = {
            "provider_model": provider_model, "force": force or None,
            "create": create or None, "ollama_url": ollama_url,
        }  # fmt: skip
        return _call("activateModel", id=model_id, body=body)

    @_Route
    def list_benchmarks(model_id: str) -> _Call[list[BenchmarkAnswer]]:
        return _call("listBenchmarks", key="benchmarks", id=model_id)

    @_Route
    def deactivate_model() -> _Call[DeactivateAnswer]:
        """Undo the last activation (the agent config as it was before it)."""
        return _call("deactivateModel")

    @_Route
    def list_activations(limit: int | None = None) -> _Call[list[Activation]]:
        return _call("listActivations", key="activations", params={"limit": limit})

    @_Route
    def get_auto() -> _Call[AutoAnswer]:
        return _call("getAuto")

    @_Route
    def set_auto(**policy: Any) -> _Call[AutoAnswer]:
        """Change the auto-improve policy; ``policy`` are its fields (camelCase or
        snake_case names), the others kept; None puts a field back to its default."""
        return _call("setAuto", body=policy, nulls=True)

    @_Route
    def benchmark_model(model_id: str, **options: Any) -> _Call[BenchmarkAnswer]:
        """Score the model against its base; ``options`` are body fields (camelCase or
        snake_case names)."""
        return _call("benchmarkModel", id=model_id, body=options)

    @_Route
    def start_benchmark(model_id: str, **options: Any) -> _Call[BenchmarkRun]:
        """Start benchmarking the model and answer its run at once (202); ``options`` are
        body fields, as for ``benchmark_model``. Poll ``benchmark_run``."""
        return _call("benchmarkModel", id=model_id, body={**options, "wait": False})

    @_Route
    def benchmark_run(model_id: str) -> _Call[BenchmarkRun]:
        """The model's newest benchmark run: running (its progress), completed (its
        ``result``) or failed (its ``error``)."""
        return _call("getBenchmarkRun", id=model_id)

    @_Route
    def openapi() -> _Call[JsonObject]:
        """The server's OpenAPI document (JSON)."""
        return _call("getOpenAPI")


# -- the event stream, shared by both clients --
class StreamEvent(Event, dict=True):
    """An event of ``events()``: the contract's ``Event``, and the fields its kind adds
    that the record does not name (a job_progress's ``currentIteration`` and ``loss``, a
    job_failed's ``error``, an auto-improve decision's data), in ``extra`` and in the
    mapping view by their wire names (``event["currentIteration"]``)."""

    @property
    def extra(self) -> JsonObject:
        return self.__dict__.get("extra", {})

    def __getitem__(self, key: str) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            if key in self.extra:
                return self.extra[key]
            raise

    def keys(self) -> list[str]:
        return [*super().keys(), *self.extra]

    def to_dict(self) -> JsonObject:
        return {**super().to_dict(), **self.extra}


_EVENT_FIELDS = frozenset(f.encode_name for f in msgspec.structs.fields(Event))


class _Stream:
    """One following of the event stream, without I/O: where it stands (the last event's
    seq, else the last ``id:``), when it ends, what each connection asks."""

    def __init__(
        self, base_url: str, after: int | None, timeout: float | None, reconnect: bool
    ) -> None:
        self.base_url = base_url
        self.seq = after
        self.last_id: str | None = None
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.reconnect = reconnect
        self.connections = 0

    def pause(self) -> float | None:
        """Seconds to wait before the next connection; None when the stream is over."""
        if self.connections == 0:
            return 0.0
        if not self.reconnect or (self.deadline is not None and time.monotonic() >= self.deadline):
            return None
        self.resume()
        return RECONNECT_DELAY_S

    @contextlib.contextmanager
    def connection(self) -> Iterator[None]:
        """One connection: when it drops, the stream reconnects, or (``reconnect`` off)
        raises ``TrainingConnectionError``."""
        self.connections += 1
        try:
            yield
        except httpx.TransportError as exc:
            if not self.reconnect:
                message = f"event stream from {self.base_url}: {exc}"
                raise TrainingConnectionError(message) from exc

    def args(self, http: httpx.Client | httpx.AsyncClient) -> dict[str, Any]:
        """The request of the next connection: from the cursor, ended by the server at the
        deadline."""
        params: dict[str, int | float] = {}
        if self.seq is not None:
            params["after"] = self.seq
        if self.deadline is not None:
            params["timeout"] = max(0.0, round(self.deadline - time.monotonic(), 3))
        return {"params": params, "timeout": httpx.Timeout(http.timeout.connect, read=60.0)}

    def event(self, sse: ServerSentEvent) -> StreamEvent | None:
        """The event an SSE message carries (JSON data; its SSE name as the default kind)."""
        if sse.id and "\0" not in sse.id:
            self.last_id = sse.id
        if not sse.data:
            return None  # a bare ``id:`` (the stream's head) or a keep-alive
        try:
            value = msgspec.json.decode(sse.data)
        except msgspec.DecodeError:
            value = None
        if not isinstance(value, dict):
            value = {"message": sse.data}
        value.setdefault("kind", sse.event or "message")
        event = _convert(value, StreamEvent, "GET events", 200)
        event.__dict__["extra"] = {k: v for k, v in value.items() if k not in _EVENT_FIELDS}
        if isinstance(event.seq, int):
            self.seq = event.seq
        return event

    def resume(self) -> int | None:
        """Where a dropped stream picks up: the last seq seen, else the last event id."""
        if self.seq is None and self.last_id and self.last_id.isdigit():
            self.seq = int(self.last_id)
        return self.seq


# -- the clients --
def _headers(token: str | None, auth_scheme: str) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"{auth_scheme} {token}"
    return headers


def _api_root(base_url: str) -> str:
    base = base_url if base_url.endswith("/") else base_url + "/"
    return base + "api/training/"


class _Client(_Operations, Generic[H, E]):
    """What both clients hold: the server, the timeouts, the HTTP client."""

    _HTTP: Callable[..., H]

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        slow_timeout: float = SLOW_TIMEOUT,
        auth_scheme: str = "Bearer",
        trust_env: bool = False,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.slow_timeout = slow_timeout
        self._http: H = self._HTTP(
            base_url=_api_root(base_url),
            headers=_headers(token, auth_scheme),
            timeout=timeout,
            trust_env=trust_env,
            follow_redirects=False,
            transport=transport,
        )

    @classmethod
    def for_notebook(cls, **kwargs: Any) -> Self:
        """A client for the Jupyter server this kernel (or this user) runs; see ``discover``."""
        url, token = discover()
        return cls(url, token, **kwargs)

    def events(
        self, after: int | None = None, *, timeout: float | None = None, reconnect: bool = True
    ) -> E:
        """Events as they happen (after seq ``after``; None: from now; 0: the whole log).

        Ends after ``timeout`` seconds when given; when the connection drops, reconnects
        after the last event seen, unless ``reconnect`` is False.
        """
        return self._follow(_Stream(self.base_url, after, timeout, reconnect))

    def _follow(self, stream: _Stream) -> E:
        raise NotImplementedError


class TrainingClient(_Client[httpx.Client, Iterator[StreamEvent]]):
    """Blocking client; use as a context manager or call ``close()``."""

    _HTTP = httpx.Client

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        with _reaching(self.base_url):
            response = self._http.send(call.request(self._http, self.slow_timeout))
        return call.answer(response)

    def _follow(self, stream: _Stream) -> Iterator[StreamEvent]:
        while (pause := stream.pause()) is not None:
            time.sleep(pause)
            args = stream.args(self._http)
            with stream.connection(), connect_sse(self._http, "GET", "events", **args) as source:
                if source.response.is_error:
                    source.response.read()
                    raise _error_from(source.response)
                yield from filter(None, map(stream.event, source.iter_sse()))

    def iter_trajectories(self, page_size: int = 500) -> Iterator[TrajectorySummary]:
        """Every trajectory, newest first, a page at a time."""
        offset = 0
        while True:
            page = self.list_trajectories(page_size, offset)
            yield from page.trajectories
            offset += len(page.trajectories)
            if not page.trajectories or offset >= page.total:
                return

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
        while job.status not in FINAL_STATUSES:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            chunk = 30.0 if left is None else min(30.0, left)
            if cursor is None:
                time.sleep(min(1.0, chunk))
            else:
                for event in self.events(cursor, timeout=chunk, reconnect=False):
                    cursor = event.seq if event.seq is not None else cursor
                    if event.job_id == job_id and event.kind in _FINAL_KINDS:
                        break
            job = self.get_job(job_id)  # also repairs a job whose worker died
        return job

    def head_event_seq(self) -> int | None:
        """The seq of the newest event (the stream's opening ``id:``)."""
        stream = _Stream(self.base_url, None, 0.0, reconnect=False)
        for _ in self._follow(stream):
            pass
        return stream.resume()


_FINAL_KINDS = ("job_completed", "job_failed", "job_cancelled")


class AsyncTrainingClient(_Client[httpx.AsyncClient, AsyncIterator[StreamEvent]]):
    """The same routes with ``httpx.AsyncClient`` (each method awaited); use
    ``async with`` or ``aclose()``."""

    _HTTP = httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        with _reaching(self.base_url):
            response = await self._http.send(call.request(self._http, self.slow_timeout))
        return call.answer(response)

    async def _follow(self, stream: _Stream) -> AsyncIterator[StreamEvent]:
        while (pause := stream.pause()) is not None:
            await asyncio.sleep(pause)
            args = stream.args(self._http)
            with stream.connection():
                async with aconnect_sse(self._http, "GET", "events", **args) as source:
                    if source.response.is_error:
                        await source.response.aread()
                        raise _error_from(source.response)
                    async for sse in source.aiter_sse():
                        if (event := stream.event(sse)) is not None:
                            yield event


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
