"""One poller of the event log shared by every Server-Sent Events stream.

Events are rows of the state store's ``events`` table, written by any process (this
server, kernels, CLIs, training workers). Their ``seq`` is assigned under SQLite's
write lock, so rows become visible in ``seq`` order and "everything after seq N" never
misses one. One task polls the table (in a pool thread) while at least one stream is
open, keeps the recent events in memory and wakes the streams; a stream that resumes
from further back reads its backlog from the store directly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
from concurrent.futures import Executor
from typing import Any, Protocol

from milady_lab.api.schema import JsonObject

#: Events kept in memory for streams that are a little behind.
BUFFER_EVENTS = 2000
#: Rows read per query.
PAGE = 500


class EventLog(Protocol):
    """What the hub reads: ``TrainingService`` (or a ``StateStore``) gives both."""

    def events(self, after: int, limit: int) -> list[JsonObject]: ...

    def last_event_seq(self) -> int: ...


class EventHub:
    """Polls ``store.events`` every ``interval`` seconds while anyone listens."""

    def __init__(self, store: EventLog, executor: Executor, interval: float = 0.25) -> None:
        self.store = store
        self.executor = executor
        self.interval = interval
        self._buffer: collections.deque[JsonObject] = collections.deque(maxlen=BUFFER_EVENTS)
        self._floor: int | None = None  # the buffer holds every event in (floor, latest]
        self._latest = 0
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End every stream (server stopping)."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            self._task.cancel()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def head(self) -> int:
        """The seq of the newest event in the store (a new stream starts after it)."""
        return int(await self._run(self.store.last_event_seq))

    @contextlib.asynccontextmanager
    async def listening(self):  # -> AsyncIterator[EventHub]
        """Keep the poller running while a stream is open."""
        self._listeners += 1
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield self
        finally:
            self._listeners -= 1

    async def _poll(self) -> None:
        try:
            if self._floor is None:
                self._latest = await self.head()
                self._floor = self._latest
            while self._listeners > 0 and not self._closed:
                rows = await self._run(self.store.events, self._latest, PAGE)
                if rows:
                    self._buffer.extend(rows)
                    self._latest = rows[-1]["seq"]
                    self._floor = max(self._floor, self._buffer[0]["seq"] - 1)
                    self._notify()
                    if len(rows) == PAGE:
                        continue  # more waiting: read on at once
                await asyncio.sleep(self.interval)
        except asyncio.CancelledError:
            pass
        except RuntimeError:  # executor shut down with the server
            self._closed = True
            self._notify()

    def _notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = asyncio.Event()

    async def read(self, after: int, timeout: float) -> list[JsonObject] | None:
        """Events with seq > ``after``, waiting up to ``timeout`` s; None once closed."""
        if self._closed:
            return None
        if self._floor is None or after < self._floor:
            rows = await self._run(self.store.events, after, PAGE)
            if rows or self._closed:
                return rows if not self._closed else None
        else:
            ready = [e for e in self._buffer if e["seq"] > after] if after < self._latest else []
            if ready:
                return ready[:PAGE]
        wakeup = self._wakeup
        if wakeup is None:
            return []
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), timeout)
        if self._closed:
            return None
        if self._floor is not None and after >= self._floor:
            return [e for e in self._buffer if e["seq"] > after][:PAGE]
        return []


def format_event(event: JsonObject) -> bytes:
    """One SSE message: ``id`` (the seq), ``event`` (the kind), ``data`` (the record).

    ``data`` is ASCII JSON (lone surrogates stay escaped) without NaN, and never holds
    a raw newline, so it is one line.
    """
    try:
        data = json.dumps(event, separators=(",", ":"), allow_nan=False)
    except ValueError:
        data = json.dumps(finite(event), separators=(",", ":"), allow_nan=False)
    kind = "".join(c for c in str(event["kind"]) if c not in "\r\n")
    return f"id: {int(event['seq'])}\nevent: {kind}\ndata: {data}\n\n".encode()


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
