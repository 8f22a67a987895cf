"""Dataset builds in a separate process, so a big build never holds the server's GIL.

A build parses every trajectory's steps: seconds of CPU, much of it Python, and up to
~1.5 GB of memory for 100k trajectories. In a server thread it would share the GIL
with the IOLoop (``GET /status`` waiting behind it) and keep its memory high-water
mark in the Jupyter server. One long-lived worker process (spawned, not forked: the
server has threads) runs builds instead; it opens its own ``TrainingService`` on the
same state home, so records, files and events are exactly what an in-process build
writes. Previews parse just as much, so they get a process of their own, where they
never wait behind a build.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from milady_lab.config import Settings

if TYPE_CHECKING:
    from milady_lab.api.schema import BuildDatasetRequest, DatasetAnswer, DatasetPreview

_service: Any = None


def _init_worker(settings: Settings) -> None:
    # Ctrl-C in the server's terminal reaches the whole group: the server decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from milady_lab.service import TrainingService

    global _service
    _service = TrainingService(settings, reconcile=False)


def build_dataset(body: BuildDatasetRequest | None) -> DatasetAnswer:
    """Runs in the worker: the service's build, answer and errors as they are."""
    return _service.build_dataset(body)


def preview_dataset(body: BuildDatasetRequest | None) -> DatasetPreview:
    """Runs in the worker: what a build would give (the same parsing, nothing written)."""
    return _service.preview_dataset(body)


def new_pool(settings: Settings, workers: int = 1) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(settings,),
    )


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop now: an interrupted build leaves only a temp folder the next build sweeps."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.terminate()
