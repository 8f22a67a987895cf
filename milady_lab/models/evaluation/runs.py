"""Benchmark runs: a benchmark as a tracked operation (started, polled, ended) with its
record in the state store.

A benchmark takes minutes, longer than a REST client waits on one request. So the
server starts it as a run (``POST /models/{id}/benchmark`` with ``wait: false``), answers
at once, and does the work on one of its work threads; the client polls the run
(``GET /models/{id}/benchmark``) or follows its events, which carry its ``runId``. A
blocking benchmark (the CLI's, ``wait: true``, an auto-improve round) is a run too, run
in the caller's thread: one model is never benchmarked twice at once (409).

The record names the process that runs it (pid and start time, as jobs do). A run whose
process is gone — a server stopped or killed mid-run — reads as failed ("interrupted:
the server stopped"), and a new service marks it so on start: never running forever.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgspec

from ...api.schema import BenchmarkAnswer, BenchmarkRequest, BenchmarkRun, JsonObject
from ...config import Settings
from ...errors import ConflictError, MiladyLabError, NotFoundError, WorkerError
from ...state import EvalStore, Row, StateStore, new_id, now_ms
from ...training.processes import process_start_time, worker_alive

if TYPE_CHECKING:  # the benchmark code (torch-free, yet 0.3 s to import) loads on first use
    from .benchmark import Benchmark, BenchmarkProgress, PreparedBenchmark

#: A run's error when the process that ran it is gone.
INTERRUPTED = "interrupted: the server stopped"
#: A run's error when the benchmark code itself broke.
BUG = "internal error in milady-lab (a bug); the server log has the details"
#: ``submit(work)``: runs ``work`` elsewhere (the server's work pool); may return its Future.
Submit = Callable[[Callable[[], None]], Any]

log = logging.getLogger(__name__)


def this_process() -> tuple[int, float | None]:
    """This process as a run's owner."""
    pid = os.getpid()
    return pid, process_start_time(pid)


class BenchmarkRuns:
    """Start, run, read and reconcile the benchmark runs of one state home."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings, self.store = settings, store
        self.evals = EvalStore(store)

    # -- starting ---------------------------------------------------------------------------
    def begin(
        self, model: Row, body: BenchmarkRequest | JsonObject | None
    ) -> tuple[BenchmarkRun, PreparedBenchmark]:
        """The request checked (its 4xx now), then a new running run recorded; a 409 when
        the model's newest run still runs."""
        from .benchmark import prepare_benchmark

        prepared = prepare_benchmark(self.settings, self.store, model, body)
        with self.store.transaction() as conn:
            latest = self.evals.latest_benchmark_run(prepared.model_id, conn)
            if latest is not None and latest[0].status == "running":
                current, owner = latest
                if worker_alive(*owner):
                    raise ConflictError(
                        f"model {prepared.model_id} is being benchmarked by run "
                        f"{current.run_id} ({current.done}/{current.total} examples); "
                        f"follow it: GET /api/training/models/{prepared.model_id}/benchmark"
                    )
                self._failed(current, INTERRUPTED, conn)
            run = BenchmarkRun(
                run_id=new_id("bench"),
                model_id=prepared.model_id,
                status="running",
                done=0,
                total=len(prepared.spec["chats"]) * prepared.variants,
                started_at=now_ms(),
            )
            self.evals.add_benchmark_run(run, this_process(), conn)
        return run, prepared

    def start(
        self,
        model: Row,
        body: BenchmarkRequest | JsonObject | None,
        submit: Submit | None = None,
    ) -> BenchmarkRun:
        """Begin a run and hand its work to ``submit`` (a thread of its own by default);
        the run as it starts."""
        run, prepared = self.begin(model, body)

        def work() -> None:
            try:
                self.execute(run, prepared)
            except MiladyLabError:
                pass  # the run's record says why
            except Exception:
                log.exception("milady-lab: benchmark run %s failed", run.run_id)

        if submit is None:
            threading.Thread(target=work, name=f"benchmark-{run.run_id}", daemon=True).start()
            return run
        try:
            future = submit(work)
        except RuntimeError:  # the pool is shutting down: the server is stopping
            self._failed(run, INTERRUPTED)
            raise WorkerError(f"the benchmark could not start: {INTERRUPTED}") from None
        if isinstance(future, Future):
            future.add_done_callback(lambda f: f.cancelled() and self._failed(run, INTERRUPTED))
        return run

    # -- running ----------------------------------------------------------------------------
    def execute(
        self,
        run: BenchmarkRun,
        prepared: PreparedBenchmark,
        progress: BenchmarkProgress | None = None,
    ) -> BenchmarkAnswer:
        """Run ``run`` in this thread: its progress saved as it goes, its end (completed
        with the benchmark, or failed with the reason) saved before this returns."""
        from .benchmark import execute_benchmark

        now = run

        def step(done: int, total: int) -> None:
            nonlocal now
            now = msgspec.structs.replace(now, done=done, total=total)
            self.evals.save_benchmark_run(now)
            if progress is not None:
                progress(done, total)

        def finish(body: Benchmark, conn: Any) -> None:
            result = msgspec.convert(body, BenchmarkAnswer)
            ended = msgspec.structs.replace(
                now, status="completed", ended_at=now_ms(), result=result
            )
            self.evals.save_benchmark_run(ended, conn)

        try:
            body = execute_benchmark(
                self.settings, self.store, prepared, step, run_id=run.run_id, finish=finish
            )
        except MiladyLabError as exc:
            self._failed(now, exc.message)
            raise
        except BaseException:
            self._failed(now, BUG)
            raise
        return msgspec.convert(body, BenchmarkAnswer)

    def _failed(self, run: BenchmarkRun, error: str, conn: Any = None) -> BenchmarkRun:
        """``run`` ended as failed with ``error``, and a ``benchmark_failed`` event."""
        ended = msgspec.structs.replace(run, status="failed", ended_at=now_ms(), error=error)

        def write(tx: Any) -> None:
            self.evals.save_benchmark_run(ended, tx)
            self.store.emit(
                "benchmark_failed",
                f"model {run.model_id}: benchmark run {run.run_id} failed: {error}",
                tx,
                modelId=run.model_id,
                runId=run.run_id,
                error=error,
            )

        if conn is not None:
            write(conn)
        else:
            with self.store.transaction() as tx:
                write(tx)
        return ended

    # -- reading ----------------------------------------------------------------------------
    def latest(self, model_id: str) -> BenchmarkRun:
        """The model's newest run (one whose process is gone reads, and is saved, as
        failed); 404 when the model has none."""
        found = self.evals.latest_benchmark_run(model_id)
        if found is None:
            raise NotFoundError(
                f"model {model_id} has no benchmark run; start one with "
                f"POST /api/training/models/{model_id}/benchmark"
            )
        run, owner = found
        if run.status == "running" and not worker_alive(*owner):
            return self._interrupt(run)
        return run

    def _interrupt(self, run: BenchmarkRun) -> BenchmarkRun:
        """Fail a run whose process is gone, unless it ended meanwhile (checked again
        under the write lock)."""
        with self.store.transaction() as conn:
            found = self.evals.latest_benchmark_run(run.model_id, conn)
            if found is None or found[0].run_id != run.run_id or found[0].status != "running":
                return run if found is None else found[0]
            return self._failed(found[0], INTERRUPTED, conn)

    def reconcile(self) -> int:
        """Fail every run left running by a process that is gone; how many there were."""
        running = self.evals.running_benchmark_runs()
        gone = [run for run, owner in running if not worker_alive(*owner)]
        for run in gone:
            self._interrupt(run)
        return len(gone)
