"""Thin Tornado handlers: HTTP in, one ``TrainingService`` call off the loop, JSON out.

Everything a handler does besides calling the service is HTTP plumbing: read and
bound the body, decode it by its struct (``milady_lab.api``: REST clients get
strict JSON types), map ``milady_lab.errors`` to status codes and answer every error
as ``{"message": m, "error": m}``: ``message`` is Jupyter's key, ``error`` the Milady
agent's (its app client shows ``body.error``, else only "HTTP <status>"). Every verb is
``@web.authenticated`` then ``@authorized``; unknown paths under ``/api/training`` get a
JSON 404 from the last route (``UnknownRouteHandler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, ClassVar

import msgspec
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.iostream import StreamClosedError

from milady_lab.api import decode
from milady_lab.api.routes import BY_ROUTE, MAX_QUERY_INT, OPERATIONS
from milady_lab.api.schema import BenchmarkRequest, Error, JsonObject, Record
from milady_lab.errors import MiladyLabError

from .openapi import spec_for_base_url
from .sse import PAGE, format_event

#: Resource names for Jupyter's Authorizer: ``milady_lab:<area>``.
RESOURCE = "milady_lab"
_ID = r"(?P<item_id>[^/]+)"
#: The catch-all pattern (the route table's last entry; not an API route of its own).
UNKNOWN_ROUTE = "/api/training(?:/.*)?"
_INT = re.compile(r"-?[0-9]{1,19}")
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
#: Seconds between SSE heartbeat comments (keeps proxies from closing an idle stream).
HEARTBEAT_S = 15.0


class ApiError(web.HTTPError):
    """An HTTP error whose message goes to the client as is."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


@web.stream_request_body
class TrainingHandler(APIHandler):
    """Base class: body bounds, executor calls, JSON errors."""

    auth_resource = RESOURCE
    #: The route's path under ``/api/training/`` (``routes.OPERATIONS``'s ``path``).
    path: ClassVar[str] = ""
    #: The verbs a route answers (for 405's ``Allow``): its operations' methods.
    allowed_methods: ClassVar[tuple[str, ...]] = ("GET",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.path:
            cls.allowed_methods = tuple(op.method for op in OPERATIONS if op.path == cls.path)

    # -- the app ------------------------------------------------------------------------
    @property
    def ext(self) -> Any:
        return self.settings["milady_lab"]

    @property
    def service(self) -> Any:
        return self.ext.service

    # -- request body: streamed so an oversized one is never held in memory -----------------
    async def prepare(self) -> None:  # type: ignore[override]
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        await super().prepare()
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.ext.max_body_bytes:
            # Read and drop the body, then answer 413 (clients see the answer, not a reset).
            self._too_large = True

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """An id that is not UTF-8 becomes a 404 from the service, like any unknown id.

        Tornado's own 400 for it is raised before the body is read, and a handler that
        answers without reading the body makes Tornado drop the connection: the client
        sees a reset instead of the answer.
        """
        if name == "item_id":
            return value.decode("utf-8", "replace")
        return super().decode_argument(value, name)

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self.ext.max_body_bytes:
            self._too_large = True
            self._chunks = []
        elif not self._too_large:
            self._chunks.append(chunk)

    def json_body(self) -> msgspec.Struct | JsonObject | None:
        """The request body as its struct (``routes.OPERATIONS``; None when empty), decoded
        and checked once, here: a bad one is a 400 that names the field."""
        if self._too_large:
            limit_mb = self.ext.max_body_bytes / (1024 * 1024)
            raise ApiError(413, f"the request body is larger than {limit_mb:g} MB")
        raw = b"".join(self._chunks)
        if not raw:
            return None  # no body: every field takes its default (whitespace is not JSON)
        try:
            value = _DECODER.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON") from None
        except msgspec.ValidationError as exc:  # a number beyond any float
            raise ApiError(400, f"the request body is not usable JSON: {exc}") from None
        if not isinstance(value, dict):  # ``null`` too: an empty body is the way to send none
            raise ApiError(400, "the request body must be a JSON object")
        kind = BY_ROUTE[self.request.method or "", self.path].body
        if kind is None:
            return value
        try:
            return decode.body(value, kind)
        except MiladyLabError as exc:
            raise ApiError(exc.status, exc.message) from None

    def query_int(self, name: str) -> int | None:
        """A query parameter that must be a decimal integer; the service checks its range."""
        raw = self.get_query_argument(name, None, strip=False)
        if raw is None:
            return None
        if not _INT.fullmatch(raw):
            raise ApiError(400, f"{name} must be an integer, got {raw[:40]!r}")
        value = int(raw)
        if abs(value) > MAX_QUERY_INT:  # beyond any count or seq, and SQLite's integers
            raise ApiError(400, f"{name} must be at most {MAX_QUERY_INT}, got {value}")
        return value

    # -- calling the service --------------------------------------------------------------------
    async def call(self, fn: Callable[..., Any], *args: Any, slow: bool = False) -> Any:
        """Run ``fn(*args)`` in a pool thread; service errors become HTTP errors."""
        pool: Executor = self.ext.work_pool if slow else self.ext.read_pool
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, functools.partial(fn, *args))
        except MiladyLabError as exc:
            raise ApiError(exc.status, exc.message) from None

    async def call_quick(self, now: Callable[..., Any], fn: Callable[..., Any], *args: Any) -> Any:
        """``now(*args)`` on the loop itself, a read that answers in well under a
        millisecond or returns None when it would have to wait; then ``fn(*args)`` in a
        pool thread. A thread hop costs more than such a read does."""
        try:
            answer = now(*args)
        except MiladyLabError as exc:
            raise ApiError(exc.status, exc.message) from None
        return answer if answer is not None else await self.call(fn, *args)

    async def guard(self, awaitable: Awaitable[Any]) -> Any:
        """Await work the app runs itself; service errors become HTTP errors."""
        try:
            return await awaitable
        except MiladyLabError as exc:
            raise ApiError(exc.status, exc.message) from None

    def reply(self, body: Record, status: int = 200) -> None:
        """``body``, the route's answer struct (``milady_lab.api.schema``), as JSON:
        encoded by msgspec as it is (NaN and infinities become null)."""
        try:
            data = _ENCODER.encode(body)
        except (TypeError, msgspec.EncodeError):  # a type msgspec does not know: its text
            data = msgspec.json.encode(body, enc_hook=str)
        self.set_status(status)
        self.finish(data)

    # -- errors -----------------------------------------------------------------------------
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is JSON with ``message`` and ``error`` (the same text: Jupyter's key
        and the agent's); unexpected exceptions say so, no details."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason: str | None = None
        if isinstance(exc, ApiError):
            message = exc.message
        elif isinstance(exc, web.HTTPError):
            try:
                message = (exc.log_message % exc.args) if exc.args else (exc.log_message or "")
            except (TypeError, ValueError):
                message = exc.log_message or ""
            reason = exc.reason
            message = message or self._reason or "error"
        elif exc is not None:
            message = "internal error in milady-lab (a bug); the server log has the details"
        else:
            message = self._reason or "error"
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods))
        if self._body_pending():
            # Refused before the body was read (a missing token, the XSRF check): Tornado
            # closes the connection after this answer; say so, or a keep-alive client's
            # next request on it meets a reset.
            self.set_header("Connection", "close")
        reply = Error(message=message, error=message, reason=reason or None)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply.to_dict()))  # ASCII: a path's odd characters escaped

    def _body_pending(self) -> bool:
        """Whether Tornado has not finished reading the (streamed) request body: true for
        refusals raised before the verb runs (auth in ``prepare``, the XSRF check)."""
        body = getattr(self.request, "_body_future", None)
        return body is not None and not body.done()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """4xx answers are routine (debug); anything else is a bug and logged in full.

        The path is logged without its query string, which may hold the token.
        """
        where = f"{self.request.method} {self.request.path}"
        if isinstance(value, web.HTTPError) and value.status_code < 500:
            self.log.debug("milady-lab %s: %s", where, value.status_code)
        elif isinstance(value, ApiError):
            self.log.warning("milady-lab %s: %s %s", where, value.status_code, value.message)
        else:
            self.log.error("milady-lab %s failed", where, exc_info=(typ, value, tb))


# -- routes ---------------------------------------------------------------------------------------
class StatusHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:status"
    path = "status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.status))


class TrajectoriesHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:trajectories"
    path = "trajectories"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit, offset = self.query_int("limit"), self.query_int("offset")
        service = self.service
        self.reply(
            await self.call_quick(
                service.list_trajectories_now, service.list_trajectories, limit, offset
            )
        )


class TrajectoryHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:trajectories"
    path = "trajectories/{id}"

    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        self.reply(await self.call(self.service.get_trajectory, item_id))


class DatasetsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:datasets"
    path = "datasets"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.list_datasets))


class DatasetBuildHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:datasets"
    path = "datasets/build"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.guard(self.ext.build_dataset(body)), 201)


class DatasetPreviewHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:datasets"
    path = "datasets/preview"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.guard(self.ext.preview_dataset(body)))


class JobsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:jobs"
    path = "jobs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.list_jobs))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        answer = await self.call(self.service.start_job, body, slow=True)
        self.ext.touch_activity()
        self.reply(answer, 201)


class JobHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:jobs"
    path = "jobs/{id}"

    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        service = self.service
        self.reply(await self.call_quick(service.get_job_now, service.get_job, item_id))


class JobCancelHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:jobs"
    path = "jobs/{id}/cancel"

    @web.authenticated
    @authorized
    async def post(self, item_id: str) -> None:
        self.reply(await self.call(self.service.cancel_job, item_id, slow=True))


class JobMetricsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:jobs"
    path = "jobs/{id}/metrics"

    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        after = self.query_int("after")
        self.reply(await self.call(self.service.job_metrics, item_id, after))


class ModelsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "models"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.list_models))


class ModelImportHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "models/{id}/import-ollama"

    @web.authenticated
    @authorized
    async def post(self, item_id: str) -> None:
        body = self.json_body()
        self.reply(await self.call(self.service.import_ollama, item_id, body, slow=True))


class ModelActivateHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "models/{id}/activate"

    @web.authenticated
    @authorized
    async def post(self, item_id: str) -> None:
        body = self.json_body()
        self.reply(await self.call(self.service.activate_model, item_id, body, slow=True))


class ModelBenchmarkHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "models/{id}/benchmark"

    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        self.reply(await self.call(self.service.benchmark_run, item_id))

    @web.authenticated
    @authorized
    async def post(self, item_id: str) -> None:
        body = self.json_body()
        if isinstance(body, BenchmarkRequest) and not body.wait:
            # A run: checked and recorded now, scored on a work thread; answered at once.
            submit = self.ext.work_pool.submit
            run = await self.call(self.service.start_benchmark, item_id, body, submit, slow=True)
            self.reply(run, 202)
            return
        self.reply(await self.call(self.service.benchmark_model, item_id, body, slow=True))


class ModelBenchmarksHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "models/{id}/benchmarks"

    @web.authenticated
    @authorized
    async def get(self, item_id: str) -> None:
        self.reply(await self.call(self.service.list_benchmarks, item_id))


class ModelDeactivateHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "models/deactivate"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.call(self.service.deactivate_model, body, slow=True))


class ActivationsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:models"
    path = "activations"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.query_int("limit")
        self.reply(await self.call(self.service.list_activations, limit))


class AutoHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:auto"
    path = "auto"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.get_auto))

    @web.authenticated
    @authorized
    async def put(self) -> None:
        body = self.json_body()
        self.reply(await self.call(self.service.set_auto, body))


# -- the Milady agent's own routes (milady_lab.agent_compat), in the agent's body shapes ---------
class BackendsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:status"
    path = "backends"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.training_backends))


class AutoConfigHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:auto"
    path = "auto/config"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.get_auto_config))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.call(self.service.set_auto_config, body))


class AutoStatusHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:auto"
    path = "auto/status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        watching = self.ext.auto_watcher is not None
        self.reply(await self.call(self.service.auto_status, watching))


class AutoRunsHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:auto"
    path = "auto/runs"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(await self.call(self.service.auto_runs, self.query_int("limit")))


class AutoTriggerHandler(TrainingHandler):
    """Starts a round in a background thread and answers at once (201, status queued)."""

    auth_resource = f"{RESOURCE}:auto"
    path = "auto/trigger"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.call(self.service.auto_trigger, body), 201)


class TrajectoryExportHandler(TrainingHandler):
    auth_resource = f"{RESOURCE}:trajectories"
    path = "trajectories/export"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.guard(self.ext.export_trajectories(body)), 201)


class UnknownRouteHandler(TrainingHandler):
    """Last in the table: any other path under /api/training is a JSON 404, not Jupyter's
    HTML page (the agent's client reads ``error`` from every answer)."""

    auth_resource = f"{RESOURCE}:status"
    allowed_methods = ("GET", "POST", "PUT", "PATCH", "DELETE")

    def _unknown(self) -> None:
        path = self.request.path[:200]
        raise ApiError(404, f"no such training route: {self.request.method} {path}")

    @web.authenticated
    @authorized
    async def get(self, *_: str) -> None:
        self._unknown()

    @web.authenticated
    @authorized
    async def post(self, *_: str) -> None:
        self._unknown()

    @web.authenticated
    @authorized
    async def put(self, *_: str) -> None:
        self._unknown()

    @web.authenticated
    @authorized
    async def patch(self, *_: str) -> None:
        self._unknown()

    @web.authenticated
    @authorized
    async def delete(self, *_: str) -> None:
        self._unknown()


class OpenAPIHandler(TrainingHandler):
    """The shipped spec, with ``servers`` set to this server's base URL."""

    auth_resource = f"{RESOURCE}:status"
    path = "openapi.json"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_status(200)
        self.finish(spec_for_base_url(self.base_url))


class EventsHandler(TrainingHandler):
    """``text/event-stream`` of the event log; resumes after ``Last-Event-ID`` / ``after``."""

    auth_resource = f"{RESOURCE}:events"
    path = "events"
    _track_activity = False  # a dashboard left open must not keep the server alive

    async def prepare(self) -> None:  # type: ignore[override]
        self._gone = asyncio.Event()
        await super().prepare()

    def on_connection_close(self) -> None:
        self._gone.set()
        super().on_connection_close()

    def _start_after(self) -> int | None:
        """Where the stream starts: Last-Event-ID, else ``after``, else None (now)."""
        last_id = (self.request.headers.get("Last-Event-ID") or "").strip()
        if last_id.isdigit() and len(last_id) <= 19:
            return int(last_id)
        after = self.query_int("after")
        if after is not None and not 0 <= after <= 2**62:
            raise ApiError(400, f"after must be between 0 and 2**62, got {after}")
        return after

    def _deadline(self) -> float | None:
        raw = self.get_query_argument("timeout", None, strip=False)
        if raw is None:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            raise ApiError(400, f"timeout must be a number of seconds, got {raw[:40]!r}") from None
        if not 0 <= seconds <= 86_400:  # also rejects nan
            raise ApiError(400, "timeout must be between 0 and 86400 seconds")
        return asyncio.get_running_loop().time() + seconds

    @web.authenticated
    @authorized
    async def get(self) -> None:
        hub = self.ext.event_hub
        after = self._start_after()
        deadline = self._deadline()
        if after is None:
            after = await hub.head()
        loop = asyncio.get_running_loop()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        async with hub.listening():
            try:
                # ``id`` alone sets the client's Last-Event-ID: a reconnect resumes from here.
                self.write(f"retry: 2000\nid: {after}\n\n")
                await self.flush()
                while True:
                    left = HEARTBEAT_S if deadline is None else deadline - loop.time()
                    events = await self._next(hub, after, max(0.0, min(HEARTBEAT_S, left)))
                    if events is None:
                        break
                    for event in events:
                        self.write(format_event(event))
                    if events:
                        after = events[-1]["seq"]
                    elif deadline is None:
                        self.write(": keep-alive\n\n")
                    await self.flush()
                    if deadline is not None and loop.time() >= deadline and len(events) < PAGE:
                        break
            except StreamClosedError:
                return
        if not self._gone.is_set():
            with contextlib.suppress(StreamClosedError):
                self.finish(set_content_type="text/event-stream; charset=utf-8")

    async def _next(self, hub: Any, after: int, wait: float) -> list[JsonObject] | None:
        """The next events, [] after ``wait`` s, None when the client left or the server stops."""
        if self._gone.is_set():
            return None
        read = asyncio.ensure_future(hub.read(after, wait))
        gone = asyncio.ensure_future(self._gone.wait())
        done, _ = await asyncio.wait({read, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if read not in done:
            read.cancel()
            return None
        return read.result()


#: Every route's handler; ``route_table`` orders them and adds the catch-all.
HANDLERS: tuple[type[TrainingHandler], ...] = (
    StatusHandler,
    TrajectoriesHandler,
    TrajectoryExportHandler,
    TrajectoryHandler,
    DatasetsHandler,
    DatasetBuildHandler,
    DatasetPreviewHandler,
    JobsHandler,
    JobHandler,
    JobCancelHandler,
    JobMetricsHandler,
    ModelsHandler,
    ModelDeactivateHandler,
    ModelImportHandler,
    ModelBenchmarksHandler,
    ModelActivateHandler,
    ModelBenchmarkHandler,
    ActivationsHandler,
    AutoHandler,
    AutoConfigHandler,
    AutoStatusHandler,
    AutoRunsHandler,
    AutoTriggerHandler,
    BackendsHandler,
    EventsHandler,
    OpenAPIHandler,
)


def route_table() -> list[tuple[str, type[TrainingHandler]]]:
    """URL patterns (joined to the server's base_url by ExtensionApp): fixed paths before
    ones with an id (``trajectories/export`` before ``trajectories/{id}``), the JSON 404
    for every other path under ``/api/training`` last."""
    base = "/api/training"
    ordered = sorted(HANDLERS, key=lambda h: "{id}" in h.path)
    routes = [(f"{base}/{h.path.replace('{id}', _ID)}", h) for h in ordered]
    return [*routes, (UNKNOWN_ROUTE, UnknownRouteHandler)]
