"""Keep the kernel free: blocking work runs in threads, widget updates on the kernel's loop.

Rules from reference.md that this module enforces for every panel:

* blocking calls (SQLite, HTTP, dataset builds, benchmarks) run in a small thread pool;
* their results, progress reports and every matplotlib render are applied on one thread
  only — the kernel's asyncio loop when there is one, else the caller of :meth:`drain`
  (plain pytest, scripts), so no two threads ever touch widgets or figures at once;
* live views poll through :class:`Poller`, an asyncio task on the kernel's loop that is
  throttled and stops when its panel closes. Outside a kernel nothing runs by itself:
  tests call ``poll_once()`` and :meth:`UiRunner.wait` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any, TypeVar

T = TypeVar("T")
Done = Callable[[Any, BaseException | None], None]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop of the kernel we are called from, or None outside one (plain Python)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class UiRunner:
    """Runs blocking work in threads and hands results back to the UI thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, max_workers: int = 2) -> None:
        self.loop = loop if loop is not None else running_loop()
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="milady-ui")
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._futures: set[Future[Any]] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.ui_thread = threading.get_ident()

    @property
    def live(self) -> bool:
        """True when results are applied by the kernel's loop by themselves."""
        return self.loop is not None and not self.loop.is_closed()

    def submit(self, work: Callable[[], T], done: Done) -> Future[T]:
        """Run ``work()`` in a thread; then ``done(result, error)`` on the UI thread."""
        fut = self._executor.submit(work)
        with self._lock:
            self._futures.add(fut)

        def finished(f: Future[T]) -> None:
            if f.cancelled():
                with self._lock:
                    self._futures.discard(f)
                return
            error = f.exception()
            result = None if error is not None else f.result()
            self.post(lambda: done(result, error))
            with self._lock:
                self._futures.discard(f)

        fut.add_done_callback(finished)
        return fut

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the UI thread soon (thread-safe)."""
        if self._closed:
            return
        if self.live:
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(fn)
                return
            except RuntimeError:  # loop closed under us: fall back to the queue
                pass
        self._queue.put(fn)

    def drain(self) -> int:
        """Apply queued results here (outside a kernel); returns how many ran."""
        count = 0
        while True:
            try:
                fn = self._queue.get_nowait()
            except queue.Empty:
                return count
            fn()
            count += 1

    def busy(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._futures)

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for submitted work, and for work its results submit, applying every
        result here (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._futures)
            wait_futures(pending, timeout=max(0.0, deadline - time.monotonic()))
            # done callbacks may still be racing to enqueue; give them a moment
            for _ in range(50):
                with self._lock:
                    if not any(f in self._futures for f in pending):
                        break
                threading.Event().wait(0.01)
            self.drain()
            with self._lock:
                more = any(f not in pending for f in self._futures)
            if not more or time.monotonic() >= deadline:
                return

    async def run_blocking(self, work: Callable[[], T]) -> T:
        """Await ``work()`` run in this runner's threads (for loop tasks)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


class Poller:
    """A throttled polling loop on the kernel's asyncio loop.

    ``fetch`` does the blocking reads in a thread and returns data; ``apply`` takes that
    data on the loop thread (widgets, matplotlib) and returns the seconds to wait before
    the next poll, so a panel polls fast while a job runs and slowly when idle.
    """

    def __init__(
        self,
        runner: UiRunner,
        fetch: Callable[[], Any],
        apply: Callable[[Any], float],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.runner = runner
        self.fetch = fetch
        self.apply = apply
        self.on_error = on_error
        self.task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> bool:
        """Start on the kernel's loop; False outside a kernel (tests poll by hand)."""
        loop = self.runner.loop
        if self._stopped or loop is None or loop.is_closed() or self.running:
            return False
        if running_loop() is loop:
            self.task = loop.create_task(self._run())
        else:

            def create() -> None:
                self.task = loop.create_task(self._run())

            loop.call_soon_threadsafe(create)
        return True

    def poll_once(self) -> float:
        """One fetch + apply on this thread; what the loop task does each round."""
        return self.apply(self.fetch())

    async def _run(self) -> None:
        delay = 0.0
        failures = 0
        while not self._stopped:
            if delay:
                await asyncio.sleep(delay)
            if self._stopped:
                break
            try:
                data = await self.runner.run_blocking(self.fetch)
                if self._stopped:
                    break
                delay = self.apply(data)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep polling; a server restart is not fatal
                failures += 1
                if self.on_error is not None:
                    with contextlib.suppress(Exception):
                        self.on_error(exc)
                delay = min(10.0, 0.5 * 2**failures)

    def stop(self) -> None:
        self._stopped = True
        task = self.task
        if task is not None and not task.done():
            loop = self.runner.loop
            if loop is not None and running_loop() is loop:
                task.cancel()
            elif loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
