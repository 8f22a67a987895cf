"""The agent's archive: trajectories older than 30 days, moved out of ``trajectories``.

At every start the agent's ``pruneOldTrajectories`` writes each old row, steps included,
to a gzipped JSONL file in ``<workspace>/trajectory-archive/`` (fallback
``$TMPDIR/eliza/trajectory-archive``), a summary row without steps to the
``trajectory_archive`` table (its ``archive_blob_path`` names the file), then deletes the
rows. Without this module a year-old agent would train on its last month only.

``ArchiveSource`` loads both into a private SQLite file in milady-lab's cache, rebuilt
only when a file or the table changed, and reads it with ``SQLiteSource`` (rows marked
``archived``). A summary row whose file is gone is still listed, without its calls. An
archive file that cannot be read is an error (SourceUnavailable); a corrupt line in one
is skipped and counted (``skipped_rows``), as the build's record reports.
``WithArchive`` joins the live source and the archive into one listing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from ..api.schema import JsonObject
from ..atomic import atomic_file
from .base import DetailRow, SourceUnavailable, StepsFilter, TrajectorySource
from .schema import COLUMNS, INSERT_SQL, LISTING_INDEX_DDL, TABLE_DDL
from .sqlite import SQLiteSource

#: The ``trajectory_archive`` columns milady-lab reads (the agent's DDL).
TABLE_COLUMNS = (
    "id", "agent_id", "source", "status", "start_time", "end_time", "duration_ms",
    "step_count", "llm_call_count", "provider_access_count", "total_prompt_tokens",
    "total_completion_tokens", "total_reward", "scenario_id", "batch_id", "metadata",
    "archive_blob_path", "created_at", "updated_at",
)  # fmt: skip
_BLOB = TABLE_COLUMNS.index("archive_blob_path")
_BATCH = 1000
#: Seconds between checks of the archive for changes.
REFRESH_S = 5.0
#: Bumped when the cache's layout changes, so an old cache is rebuilt.
_CACHE_VERSION = "1"

ArchiveRows = Callable[[], list[tuple[Any, ...]]]


def _text(value: Any, default: str) -> str:
    if value is None:
        return default
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _row(record: JsonObject) -> tuple[Any, ...]:
    """One archived record (a JSONL line or a table row) in Milady's column order."""
    values = dict(record)
    values["steps_json"] = _text(values.get("steps_json"), "[]")
    values["metadata"] = _text(values.get("metadata", values.get("metadata_json")), "{}")
    for key in ("created_at", "updated_at"):
        values[key] = _text(values.get(key), "")
    return tuple(values.get(c) for c in COLUMNS)


class ArchiveSource(SQLiteSource):
    """The archive (table rows and files) as a source of ``archived`` trajectories."""

    def __init__(
        self, table_rows: ArchiveRows, folders: Sequence[Path], cache: Path, owner: str = ""
    ) -> None:
        self._table_rows = table_rows
        self.folders = [Path(f) for f in folders]
        self._cache_dir = cache / "archive"
        self._built: str | None = None
        self._checked = 0.0
        self._build_lock = threading.Lock()
        self.skipped_rows = 0
        # One index per database and folders: two agents' archives never share a file.
        parts = [owner, *map(str, self.folders)]
        key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        super().__init__(self._cache_dir / f"{key}.sqlite", archived=True)
        self.description = "archive:" + ",".join(str(f) for f in self.folders)

    # -- keeping the cache current ---------------------------------------------------------------
    def _files(self, table: list[tuple[Any, ...]]) -> list[Path]:
        """The files this database's ``trajectory_archive`` names (``archive_blob_path``),
        found where it says or, when moved, by name in the archive folders. Files in a
        folder that no row names are not this agent's to list (another agent's, or a prune
        that stopped before its rows left ``trajectories``)."""
        found: set[Path] = set()
        for named in {Path(r[_BLOB]) for r in table if r[_BLOB]}:
            candidates = [named, *(folder / named.name for folder in self.folders)]
            hit = next((p for p in candidates if p.is_file()), None)
            if hit is not None:
                found.add(hit)
        return sorted(found)

    def refresh(self) -> None:
        """Rebuild the cache when the archive table or any archive file changed."""
        with self._build_lock:
            table = self._table_rows()
            files = self._files(table)
            stamp = hashlib.sha256(
                json.dumps(
                    [_CACHE_VERSION, [list(map(str, r)) for r in table],
                     [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
                ).encode()
            ).hexdigest()  # fmt: skip
            if stamp == self._built and self.path.exists():
                return
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.path) as tmp:
                self.skipped_rows = _load(tmp, table, files)
            self.close()  # reopen on the new file
            self._built = stamp

    def _connection(self) -> sqlite3.Connection:
        if self._built is None or time.monotonic() - self._checked > REFRESH_S:
            self.refresh()
            self._checked = time.monotonic()
        return super()._connection()

    def unavailable_reason(self) -> str | None:
        try:
            self.refresh()
        except SourceUnavailable as exc:
            return str(exc)
        return super().unavailable_reason()


def _load(target: Path, table: list[tuple[Any, ...]], files: list[Path]) -> int:
    """Fill a new cache file; returns how many corrupt lines were skipped."""
    conn = sqlite3.connect(target)
    skipped = 0
    try:
        conn.execute(TABLE_DDL)
        conn.execute(LISTING_INDEX_DDL)
        # Summary rows first: a file's full row replaces its summary.
        summaries = [dict(zip(TABLE_COLUMNS, r, strict=True)) for r in table]
        insert = INSERT_SQL.replace("INSERT", "INSERT OR REPLACE", 1)
        conn.executemany(insert, [_row(r) for r in summaries])
        for path in files:
            skipped += _load_file(conn, insert, path)
        conn.commit()
    finally:
        conn.close()
    return skipped


def _load_file(conn: sqlite3.Connection, insert: str, path: Path) -> int:
    skipped = 0
    batch: list[tuple[Any, ...]] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                        raise ValueError("not a trajectory row")
                    batch.append(_row(record))
                except (ValueError, TypeError):
                    skipped += 1
                    continue
                if len(batch) >= _BATCH:
                    conn.executemany(insert, batch)
                    batch.clear()
    except EOFError:
        skipped += 1  # a file cut short: its whole rows were kept, the torn one counted
    except (OSError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SourceUnavailable(f"cannot read the archive file {path}: {reason}") from None
    conn.executemany(insert, batch)
    return skipped


def archive_folders(primary: Path | None) -> list[Path]:
    """Where the agent writes archive files: its workspace's folder, then the fallback."""
    tmp = Path(os.environ.get("TMPDIR") or "/tmp") / "eliza" / "trajectory-archive"
    return [p for p in (primary, tmp) if p is not None]


class WithArchive:
    """A live source and its archive as one: the listing merges both in listing order;
    ``iter_steps`` reads the live rows, then (``include_archived``) the archived ones.

    A deep page costs reading ``offset + limit`` summaries from each side; archived
    trajectories are usually a minority of what an operator pages through."""

    def __init__(self, live: TrajectorySource, archive: ArchiveSource) -> None:
        self.live = live
        self.archive = archive
        self.description = live.description

    @property
    def skipped_rows(self) -> int:
        return self.archive.skipped_rows

    def unavailable_reason(self) -> str | None:
        return self.live.unavailable_reason() or self.archive.unavailable_reason()

    def count(self) -> int:
        return self.live.count() + self.archive.count()

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        if limit <= 0 or offset < 0:
            return self.live.summaries(limit, offset)
        if self.archive.count() == 0:
            return self.live.summaries(limit, offset)
        both = pl.concat(
            [self.live.summaries(offset + limit, 0), self.archive.summaries(offset + limit, 0)]
        )
        return _ordered(both).slice(offset, limit)

    def detail(self, trajectory_id: str) -> DetailRow | None:
        return self.live.detail(trajectory_id) or self.archive.detail(trajectory_id)

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        yield from self.live.iter_steps(batch_rows, where)
        if where is None or where.include_archived:
            yield from self.archive.iter_steps(batch_rows, where)

    def rewards_filled(self, field: str) -> bool:
        return self.live.rewards_filled(field) or self.archive.rewards_filled(field)

    def summaries_frame(self) -> pl.LazyFrame:
        frames = [self.live.summaries_frame(), self.archive.summaries_frame()]
        return _ordered(pl.concat(frames))

    def llm_calls_frame(self) -> pl.LazyFrame:
        return pl.concat([self.live.llm_calls_frame(), self.archive.llm_calls_frame()])

    def close(self) -> None:
        for side in (self.live, self.archive):
            closer = getattr(side, "close", None)
            if closer is not None:
                closer()


F = TypeVar("F", pl.DataFrame, pl.LazyFrame)


def _ordered(frame: F) -> F:
    """Listing order: newest first (nulls last), ties by id in byte order."""
    return frame.sort(["startTime", "id"], descending=[True, False], nulls_last=True)
