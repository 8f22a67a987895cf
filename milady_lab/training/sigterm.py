"""SIGTERM in a process that trains (the worker and each torchrun rank), and its way out.

Before training (imports, loading the model) SIGTERM interrupts at once with
``Interrupted``; once the loop runs (``StopBetweenSteps``) it only sets ``stop``, which
the loop polls between micro-batches, evaluation rows and before saving. Both stay well
within ``processes.CANCEL_GRACE_S``. One module for both processes, so the rank handles
a cancel exactly as the worker does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from .callbacks import TrainingCallback

#: Set by SIGTERM: the training loop should stop at its next check.
stop = threading.Event()
_interruptible = True


class Interrupted(BaseException):
    """SIGTERM outside the training loop; a BaseException so no ``except Exception`` eats it."""


def on_sigterm(signum: int, frame: Any) -> None:
    """The SIGTERM handler: set ``stop``; interrupt too while training has not begun."""
    stop.set()
    if _interruptible:
        raise Interrupted()


def not_interruptible() -> None:
    """From now on SIGTERM only sets ``stop``."""
    global _interruptible
    _interruptible = False


class StopBetweenSteps(TrainingCallback):
    """Once training runs, SIGTERM only asks the loop to stop between steps."""

    def on_train_start(self, total_iterations: int, start_iteration: int = 0) -> None:
        not_interruptible()
        if stop.is_set():  # a SIGTERM raced the switch
            raise Interrupted()


def exit_now(code: int) -> None:
    """Leave without finalising the interpreter: every record is committed, the queue
    handed on and the store closed; only module teardown (seconds with torch) is left."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
