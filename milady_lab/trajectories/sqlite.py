"""Milady's ``trajectories`` table in a SQLite file, opened read-only.

The agent may be writing while we read, so the file is opened with ``mode=ro`` (never
``immutable``), each call sees a consistent snapshot, and cached figures (the count,
the paging anchors) are dropped whenever ``PRAGMA data_version`` says another
connection committed, or the file was replaced (a new inode).

Fast pages at any offset: ``LIMIT/OFFSET`` walks every skipped index entry, which is
~50 ms at offset 1M. For offsets past ``ANCHOR_EVERY`` the source keeps an anchor —
the (start_time, id) key — every ``ANCHOR_EVERY`` rows of the listing order, built
in one pass over the index, and pages from the nearest anchor with a keyset query.
New trajectories added on top (an agent at work) only shift the anchors; other changes
rebuild them (about 1 s per million rows). That needs the index
``(start_time DESC, id)`` (``milady-lab demo-data`` creates it as
``trajectories_listing``). Without it every answer is still correct, only each deep
page costs a sort of the table.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import polars as pl

from . import _rows
from .base import (
    REWARD_COLUMNS,
    SUMMARY_SCHEMA,
    DetailRow,
    SourceUnavailable,
    StepsFilter,
    SummaryRow,
)

ANCHOR_EVERY = 1024
_ORDER = "ORDER BY start_time DESC, id"


class _Figures(TypedDict, total=False):
    """What one ``data_version`` of the file is known to hold."""

    count: int  # trajectories
    nulls: bool  # whether any has no start_time (deep pages then skip the anchors)


class _Anchors(TypedDict):
    """Paging anchors (``_anchors``): (start_time, id) every ANCHOR_EVERY rows from
    ``shift``, valid for ``version`` while the table holds ``count`` rows."""

    version: int | None
    count: int
    keys: list[tuple[Any, str]]
    shift: int


def _lenient(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class SQLiteSource:
    """Trajectories from a SQLite file; see the module docstring for the paging scheme."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        description: str | None = None,
        archived: bool = False,
    ) -> None:
        self.path = Path(path).expanduser()
        self._archived = archived  # rows read as ``archived`` (the agent's archive cache)
        self.description = description or f"sqlite:{self.path}"
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None
        self._version: int | None = None
        self._cache: _Figures = {}  # figures valid for one data_version
        self._anchor_state: _Anchors | None = None  # paging anchors, see _anchors
        self._columns: frozenset[str] = frozenset()
        self._select = _rows.sqlite_select(archived=archived)  # per table, see _connection

    # -- connection -------------------------------------------------------------------------
    def _open(self, *, immutable: bool = False) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
        try:
            conn = sqlite3.connect(
                uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10
            )
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"cannot open {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA query_only=1")
            conn.execute("SELECT 1 FROM trajectories LIMIT 0").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            if "no such table" in str(exc):
                raise SourceUnavailable(f"{self.path} has no trajectories table") from None
            if not immutable and self._read_only_wal():
                # A WAL database needs its -shm file; in a read-only folder with no writer
                # around (none made one) nothing can change it: open it as immutable.
                return self._open(immutable=True)
            raise SourceUnavailable(f"cannot read {self.path}: {exc}") from None
        return conn

    def _read_only_wal(self) -> bool:
        """A WAL-mode file whose folder we cannot write and that has no -shm file yet."""
        try:
            with open(self.path, "rb") as fh:
                header = fh.read(20)
        except OSError:
            return False
        wal = len(header) == 20 and header[:16] == b"SQLite format 3\0" and header[18] == 2
        shm = Path(str(self.path) + "-shm")
        return wal and not shm.exists() and not os.access(self.path.parent, os.W_OK)

    def _connection(self) -> sqlite3.Connection:
        """The shared connection, reopened when the file was replaced; caches dropped on
        any committed change."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._close()
            raise SourceUnavailable(f"no trajectory database at {self.path}") from None
        except OSError as exc:
            self._close()
            raise SourceUnavailable(f"cannot read {self.path}: {exc.strerror}") from None
        ident = (st.st_dev, st.st_ino)
        if self._conn is None or ident != self._ident:
            self._close()
            self._conn, self._ident = self._open(), ident
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._cache.clear()
            self._version = version
            self._columns = table_columns(self._conn)
            self._select = _rows.sqlite_select(self._columns, archived=self._archived)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn, self._ident, self._version = None, None, None
        self._cache.clear()
        self._anchor_state = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _read(self, work: Any) -> Any:
        """Run ``work(conn)`` in one read snapshot; an unreadable source raises
        SourceUnavailable with the cause (never an empty answer that looks like no data)."""
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN")
                try:
                    return work(conn)
                except sqlite3.OperationalError as exc:
                    if "decode" not in str(exc):
                        raise
                    conn.text_factory = _lenient  # invalid UTF-8 in some row
                    try:
                        return work(conn)
                    finally:
                        conn.text_factory = str
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._close()
                raise SourceUnavailable(f"cannot read {self.path}: {exc}") from None

    # -- protocol ---------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("SELECT 1 FROM trajectories LIMIT 0")
            except SourceUnavailable as exc:
                return str(exc)
            except sqlite3.Error as exc:
                self._close()
                if "no such table" in str(exc):
                    return f"{self.path} has no trajectories table"
                return f"cannot read {self.path}: {exc}"
        return None

    def count(self) -> int:
        return self._read(self._count)

    def _count(self, conn: sqlite3.Connection) -> int:
        if "count" not in self._cache:
            self._cache["count"] = conn.execute("SELECT count(*) FROM trajectories").fetchone()[0]
        return self._cache["count"]

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        if limit <= 0 or offset < 0:
            return pl.DataFrame(schema=SUMMARY_SCHEMA)
        rows = self._read(lambda conn: self._page(conn, limit, offset))
        return _rows.summaries_from_rows(rows)

    def page_now(self, limit: int, offset: int) -> tuple[list[SummaryRow], int] | None:
        """A listing page (summary dicts) and the total, or None when answering needs
        slow work: another thread holds the source, or the count or the paging anchors
        are not cached for the current ``data_version`` (the caller then uses
        ``summaries`` + ``count`` in a thread, which warm them). A REST server answers
        it on its event loop: well under a millisecond, no thread hop."""
        if limit <= 0 or offset < 0 or not self._lock.acquire(blocking=False):
            return None
        try:
            return self._read(lambda conn: self._page_if_warm(conn, limit, offset))
        except SourceUnavailable:
            return None  # the slow path says why
        finally:
            self._lock.release()

    def _page_if_warm(
        self, conn: sqlite3.Connection, limit: int, offset: int
    ) -> tuple[list[SummaryRow], int] | None:
        if "count" not in self._cache:
            return None
        if offset >= ANCHOR_EVERY:
            state = self._anchor_state
            if self._cache.get("nulls") is not False or state is None:
                return None
            if state["version"] != self._version:
                return None
        rows = self._page(conn, limit, offset)
        return _rows.summary_dicts(rows), self._cache["count"]

    def _page(self, conn: sqlite3.Connection, limit: int, offset: int) -> list[Any]:
        if offset < ANCHOR_EVERY or self._has_null_start(conn):
            sql = f"SELECT {self._select} FROM trajectories {_ORDER} LIMIT ? OFFSET ?"
            return conn.execute(sql, (limit, offset)).fetchall()
        anchors, shift = self._anchors(conn)
        if offset < shift + ANCHOR_EVERY:  # among rows added on top since the build
            sql = f"SELECT {self._select} FROM trajectories {_ORDER} LIMIT ? OFFSET ?"
            return conn.execute(sql, (limit, offset)).fetchall()
        slot = (offset - shift) // ANCHOR_EVERY
        if slot >= len(anchors):
            return []
        start, anchor_id = anchors[slot]
        skip = offset - shift - slot * ANCHOR_EVERY
        # Rows from the anchor on: the rest of its start_time tie group, then older rows.
        tied = conn.execute(
            "SELECT count(*) FROM trajectories WHERE start_time = ? AND id >= ?",
            (start, anchor_id),
        ).fetchone()[0]
        rows: list[Any] = []
        if skip < tied:
            rows = conn.execute(
                f"SELECT {self._select} FROM trajectories WHERE start_time = ? AND id >= ? "
                "ORDER BY id LIMIT ? OFFSET ?",
                (start, anchor_id, limit, skip),
            ).fetchall()
        if len(rows) < limit:
            rows += conn.execute(
                f"SELECT {self._select} FROM trajectories WHERE start_time < ? {_ORDER} "
                "LIMIT ? OFFSET ?",
                (start, limit - len(rows), max(0, skip - tied)),
            ).fetchall()
        return rows

    def _has_null_start(self, conn: sqlite3.Connection) -> bool:
        if "nulls" not in self._cache:
            sql = "SELECT EXISTS (SELECT 1 FROM trajectories WHERE start_time IS NULL)"
            self._cache["nulls"] = bool(conn.execute(sql).fetchone()[0])
        return self._cache["nulls"]

    def _anchors(self, conn: sqlite3.Connection) -> tuple[list[tuple[Any, str]], int]:
        """Anchor keys at listing positions ``shift + i * ANCHOR_EVERY``.

        Built in one pass over the index. After a change, the anchors are kept when the
        only growth is above them — an agent adding new trajectories — checked by
        counting the rows before the first anchor (a short index range); their positions
        just shift. Anything else (rows inserted among older ones, deletions) rebuilds.
        Not detected: as many rows deleted as inserted below the first anchor at once.
        """
        state = self._anchor_state
        if state is not None and state["version"] == self._version:
            return state["keys"], state["shift"]
        count = self._count(conn)
        if state is not None and state["keys"]:
            start, anchor_id = state["keys"][0]
            before = conn.execute(
                "SELECT (SELECT count(*) FROM trajectories WHERE start_time > ?) + "
                "(SELECT count(*) FROM trajectories WHERE start_time = ? AND id < ?)",
                (start, start, anchor_id),
            ).fetchone()[0]
            grown = count - state["count"]
            if before == state["shift"] + grown and before <= 16 * ANCHOR_EVERY:
                state.update(version=self._version, count=count, shift=before)
                return state["keys"], before
        sql = (
            "SELECT start_time, id FROM (SELECT start_time, id, "
            f"row_number() OVER ({_ORDER}) - 1 AS n FROM trajectories) "
            "WHERE n % ? = 0 ORDER BY n"
        )
        keys = conn.execute(sql, (ANCHOR_EVERY,)).fetchall()
        self._anchor_state = {"version": self._version, "count": count, "keys": keys, "shift": 0}
        return keys, 0

    def detail(self, trajectory_id: str) -> DetailRow | None:
        tid = _rows.clean_id(trajectory_id)
        if tid is None:
            return None

        def work(conn: sqlite3.Connection) -> Any:
            sql = f"SELECT {self._select}, steps_json FROM trajectories WHERE id = ?"
            return conn.execute(sql, (tid,)).fetchone()

        row = self._read(work)
        if row is None:
            return None
        return _rows.detail_body(row[:-1], row[-1])

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        """Steps text in listing order, on a private connection holding one snapshot."""
        self._read(lambda conn: None)  # an unreadable source raises here, with its cause
        conn = self._open()
        columns = table_columns(conn)
        clause, params = (where or StepsFilter()).sql("sqlite", columns)
        select = _rows.STEPS_SELECT.format(
            text="TEXT", int="INTEGER", real="REAL", reward="total_reward", steps="steps_json",
            judge="ai_judge_reward" if "ai_judge_reward" in columns else "NULL",
        )  # fmt: skip
        sql = f"SELECT {select} FROM trajectories {clause} {_ORDER}"
        done = 0
        try:
            conn.execute("BEGIN")
            while True:
                try:
                    cursor = conn.execute(sql + " LIMIT -1 OFFSET ?", (*params, done))
                    while batch := cursor.fetchmany(max(1, batch_rows)):
                        frame = _rows.steps_from_rows(batch)
                        done += len(batch)
                        yield frame
                    return
                except sqlite3.OperationalError as exc:
                    if "decode" not in str(exc) or conn.text_factory is _lenient:
                        raise SourceUnavailable(f"reading {self.path} failed: {exc}") from None
                    conn.text_factory = _lenient  # carry on after the rows already read
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"reading {self.path} failed: {exc}") from None
        finally:
            conn.close()

    def rewards_filled(self, field: str) -> bool:
        column = REWARD_COLUMNS[field]

        def work(conn: sqlite3.Connection) -> bool:
            if column not in table_columns(conn):
                return False
            sql = f"SELECT EXISTS (SELECT 1 FROM trajectories WHERE CAST({column} AS REAL) <> 0)"
            return bool(conn.execute(sql).fetchone()[0])

        return self._read(work)

    def summaries_frame(self) -> pl.LazyFrame:
        def load() -> pl.DataFrame:
            def work(conn: sqlite3.Connection) -> Any:
                return conn.execute(f"SELECT {self._select} FROM trajectories {_ORDER}").fetchall()

            return _rows.summaries_from_rows(self._read(work))

        return _rows.deferred_summaries(load)

    def llm_calls_frame(self) -> pl.LazyFrame:
        return _rows.deferred_calls(self.iter_steps)


def table_columns(conn: sqlite3.Connection) -> frozenset[str]:
    """The columns of the ``trajectories`` table (empty when there is none)."""
    return frozenset(r[1] for r in conn.execute("PRAGMA table_info(trajectories)"))
