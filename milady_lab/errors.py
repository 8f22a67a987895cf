"""The few kinds of failure every way in (REST, CLI, widgets) must tell apart.

Each carries a message written for the user. The REST layer maps them to status
codes, the CLI to exit codes; anything else escaping the service is a bug.
"""

from __future__ import annotations


class MiladyLabError(Exception):
    """Base class; ``status`` is the HTTP status the REST layer answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(MiladyLabError):
    """Bad input from the user: nothing was changed."""

    status = 400


class NotFoundError(MiladyLabError):
    """An unknown trajectory, dataset, job or model id."""

    status = 404


class ConflictError(MiladyLabError):
    """The request is valid but conflicts with the current state."""

    status = 409


class StorageError(MiladyLabError):
    """The disk (or quota) is full: nothing was written; free some space and retry."""

    status = 507


class UpstreamError(MiladyLabError):
    """A service milady-lab talks to (Ollama, a Milady agent) failed."""

    status = 502


class WorkerError(MiladyLabError):
    """A process milady-lab started for the work (a dataset build, a benchmark) ended
    without an answer: killed (out of memory?) or crashed. The message says how."""

    status = 503
