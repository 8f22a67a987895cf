"""Trajectory sources: where the agent's records are read from, all giving the same frames.

``open_source(spec, settings)`` picks the reader from the ``MILADY_LAB_TRAJECTORIES``
value:

* ``postgresql://…`` / ``postgres://…`` — the agent's PostgreSQL database;
* ``pglite:PATH``, or a folder holding PGlite's files — the agent's PGlite database
  (every desktop install), read from a snapshot (``pglite``);
* ``milady+http://host:port`` / ``milady+https://…`` — a running agent's REST API,
  mirrored into a local SQLite cache;
* a ``.json`` file or a folder of them — files exported by the agent;
* any other path (or ``sqlite:PATH``) — a SQLite file holding the ``trajectories`` table.

The agent's PostgreSQL and PGlite databases come with its archive (``archive``): the
trajectories its 30-day prune moved out, listed with ``archived: true``.

Opening never fails: a source that cannot be read says why in ``unavailable_reason()``,
and every read of it raises SourceUnavailable with that cause (never an empty answer).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from ..config import Settings
from .base import (
    LLM_CALL_SCHEMA,
    STEPS_SCHEMA,
    SUMMARY_SCHEMA,
    DetailRow,
    SourceUnavailable,
    StepsFilter,
    TrajectorySource,
)
from .parse import CALL_ROWS_SCHEMA, llm_calls_from_steps

__all__ = [
    "CALL_ROWS_SCHEMA",
    "LLM_CALL_SCHEMA",
    "STEPS_SCHEMA",
    "SUMMARY_SCHEMA",
    "DetailRow",
    "SourceUnavailable",
    "StepsFilter",
    "TrajectorySource",
    "UnavailableSource",
    "llm_calls_from_steps",
    "open_source",
]


def open_source(spec: str, settings: Settings | None = None) -> TrajectorySource:
    """The source named by ``spec`` (see the module docstring)."""
    spec = str(spec).strip()
    lower = spec.lower()
    settings = settings or Settings.from_env()
    if lower.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresSource

        return _with_archive(PostgresSource(spec), settings)
    if lower.startswith("pglite:"):
        return _pglite(Path(spec[len("pglite:") :].removeprefix("//")), settings)
    if lower.startswith(("milady+http://", "milady+https://")):
        from .agent_api import AgentApiSource

        return AgentApiSource(spec, settings)
    if lower.startswith("sqlite:"):
        from .sqlite import SQLiteSource

        return SQLiteSource(spec[len("sqlite:") :].removeprefix("//"))
    if "://" in spec or not spec:
        shown = spec.split("://", 1)[0] + "://…" if "://" in spec else "(empty)"
        return UnavailableSource(
            shown,
            f"unsupported trajectory source {shown}: use a SQLite path, a .json export, "
            "postgresql://… or milady+http://host:port",
        )
    path = Path(spec).expanduser()
    from .pglite import is_pglite_dir

    if is_pglite_dir(path):
        return _pglite(path, settings)
    if path.is_dir() or path.suffix.lower() == ".json":
        from .export import ExportSource

        return ExportSource(path)
    from .sqlite import SQLiteSource

    return SQLiteSource(path)


def _pglite(path: Path, settings: Settings) -> TrajectorySource:
    from .pglite import PGliteSource

    return _with_archive(PGliteSource(path, settings.cache), settings)


def _with_archive(live: Any, settings: Settings) -> TrajectorySource:
    """The agent's database joined with its archive (table rows and .jsonl.gz files)."""
    from .archive import ArchiveSource, WithArchive, archive_folders

    folders = archive_folders(settings.archive)
    archive = ArchiveSource(live.archive_rows, folders, settings.cache, live.description)
    return WithArchive(live, archive)


class UnavailableSource:
    """A source that cannot exist (a bad spec): every read raises with the reason."""

    def __init__(self, description: str, reason: str) -> None:
        self.description = description
        self._reason = reason

    def unavailable_reason(self) -> str | None:
        return self._reason

    def _fail(self) -> Any:
        raise SourceUnavailable(self._reason)

    def count(self) -> int:
        return self._fail()

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        return self._fail()

    def detail(self, trajectory_id: str) -> DetailRow | None:
        return self._fail()

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        return self._fail()

    def rewards_filled(self, field: str) -> bool:
        return self._fail()

    def summaries_frame(self) -> pl.LazyFrame:
        return self._fail()

    def llm_calls_frame(self) -> pl.LazyFrame:
        return self._fail()
