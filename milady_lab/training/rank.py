"""``python -m milady_lab.training.rank JOB_ID``: one rank of a job trained on several
devices, started by torchrun (``distributed.run_ranks``) with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous in its environment.

Every rank trains; the reporter (``LOCAL_RANK`` 0) also writes the job's progress
through a ``StoreCallback`` owned by the worker (its parent), and leaves the run's
outcome for the worker, which records the job's end. SIGTERM is handled as in the
worker (``sigterm``): it interrupts before training and asks the loop to stop once it runs.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .callbacks import TrainingCallback
from .sigterm import Interrupted, StopBetweenSteps, exit_now, not_interruptible, on_sigterm, stop

if TYPE_CHECKING:
    from ..config import Settings
    from .spec import TrainSpec


class _Quiet(TrainingCallback):
    """The callback of a rank that does not report: it logs to its own output (the
    lines a failure quotes) and obeys the stop flag."""

    def on_log(self, message: str) -> None:
        print(f"[milady-lab] rank {os.environ.get('RANK')}: {message}", flush=True)

    def should_stop(self) -> bool:
        return stop.is_set()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    if len(argv) != 1:
        print("usage: python -m milady_lab.training.rank JOB_ID", file=sys.stderr)
        return 2
    from ..config import Settings
    from .distributed import COLLECTIVE_TIMEOUT_S, die_with_parent, read_rank_spec

    settings = Settings.from_env()
    job_dir = settings.jobs_dir / argv[0]
    given = read_rank_spec(job_dir)
    die_with_parent(given.owner_pid)
    spec = given.spec
    import torch.distributed as dist

    backend = "nccl" if spec.backend == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    reporter = int(os.environ.get("LOCAL_RANK", "0")) == 0
    return _train(settings, job_dir, spec, given.owner_pid, reporter)


def _train(settings: Settings, job_dir: Path, spec: TrainSpec, owner: int, reporter: bool) -> int:
    """Train this rank's share; the reporter writes the outcome. Exit status 0 unless
    the rank failed (torchrun then stops the others and the worker names this one)."""
    from .backends import run_training
    from .callbacks import CallbackList, TrainingCancelled
    from .distributed import RankOutcome, write_rank_result

    store = cb = None
    if reporter:
        from ..state import StateStore
        from .store_callback import StoreCallback

        store = StateStore(settings.state_db)
        cb = StoreCallback(store, spec.job_id, job_dir, stop_event=stop, owner_pid=owner)
        cb.start()
    try:
        result = run_training(spec, CallbackList([StopBetweenSteps(), cb or _Quiet()]))
        outcome = RankOutcome(result)
    except TrainingCancelled as exc:
        outcome = RankOutcome(None, iteration=exc.iteration)
    except Interrupted:
        outcome = RankOutcome(None)
    except BaseException:
        not_interruptible()
        traceback.print_exc()
        return 1
    finally:
        not_interruptible()
        if cb is not None:
            cb.close()
        if store is not None:
            store.close()
    if reporter:
        write_rank_result(job_dir, outcome)
    return 0


if __name__ == "__main__":
    try:
        _code = main(sys.argv[1:])
    except BaseException:  # e.g. a SIGTERM while setting up
        traceback.print_exc()
        _code = 1
    exit_now(_code)
