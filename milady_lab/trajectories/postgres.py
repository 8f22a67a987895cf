"""Milady's ``trajectories`` table in PostgreSQL (the agent's production database).

Read-only transactions, values always passed as parameters. Ordering matches the
SQLite source exactly: ``start_time DESC NULLS LAST`` (PostgreSQL puts NULLs first by
default) and ``id COLLATE "C"`` (byte order, as SQLite and Polars sort; a locale
collation would order mixed-case or punctuated ids differently).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl
import psycopg

from . import _rows
from .base import (
    REWARD_COLUMNS,
    SUMMARY_SCHEMA,
    DetailRow,
    SourceUnavailable,
    StepsFilter,
)

_ORDER = 'ORDER BY start_time DESC NULLS LAST, id COLLATE "C"'
_SECRET_PARAMS = {"password", "passfile", "sslpassword", "token"}


def mask_url(url: str) -> str:
    """The URL with any password (userinfo or query parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
        query = urlencode(
            [
                (k, "***" if k.lower() in _SECRET_PARAMS else v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
            ]
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "postgresql://***"


class PostgresSource:
    """Trajectories from a PostgreSQL database named by a ``postgresql://`` URL."""

    #: psycopg prepares a statement run this often (None: never; see ``PGliteSource``).
    prepare_threshold: int | None = 5

    def __init__(self, url: str, *, connect_timeout: int = 5) -> None:
        self._url = url
        self._timeout = connect_timeout
        self.description = mask_url(url)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._select = _rows.pg_select()  # for the table's columns, set on connecting

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = urlsplit(self._url).password if "://" in self._url else None
        return text.replace(password, "***") if password else text

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._url,
                connect_timeout=self._timeout,
                autocommit=False,
                prepare_threshold=self.prepare_threshold,
            )
        except (psycopg.Error, ValueError) as exc:
            raise SourceUnavailable(
                f"cannot connect to {self.description}: {self._scrub(exc)}"
            ) from None
        conn.read_only = True
        try:
            columns = table_columns(conn)
        except psycopg.Error as exc:
            conn.close()
            raise SourceUnavailable(f"cannot read {self.description}: {self._scrub(exc)}") from None
        self._select = _rows.pg_select(columns)
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._close()
            self._conn = self._connect()
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _read(self, work: Any) -> Any:
        """Run ``work(cursor)`` in one read-only transaction. A failure raises
        SourceUnavailable naming the cause: never an empty answer that looks like no data."""
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    return work(cur)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self._close()
                if isinstance(exc, psycopg.errors.UndefinedTable):
                    missing = f"{self.description} has no trajectories table"
                    raise SourceUnavailable(missing) from None
                raise SourceUnavailable(
                    f"cannot read {self.description}: {self._scrub(exc)}"
                ) from None

    # -- protocol ---------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM trajectories LIMIT 0")
            except SourceUnavailable as exc:
                return str(exc)
            except psycopg.errors.UndefinedTable:
                return f"{self.description} has no trajectories table"
            except psycopg.Error as exc:
                self._close()
                return f"cannot read {self.description}: {self._scrub(exc)}"
        return None

    def count(self) -> int:
        def work(cur: psycopg.Cursor[Any]) -> int:
            cur.execute("SELECT count(*) FROM trajectories")
            row = cur.fetchone()
            return int(row[0]) if row else 0

        return self._read(work)

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        if limit <= 0 or offset < 0:
            return pl.DataFrame(schema=SUMMARY_SCHEMA)

        def work(cur: psycopg.Cursor[Any]) -> list[Any]:
            cur.execute(
                f"SELECT {self._select} FROM trajectories {_ORDER} LIMIT %s OFFSET %s",
                (limit, offset),
            )
            return cur.fetchall()

        return _rows.summaries_from_rows(self._read(work))

    def detail(self, trajectory_id: str) -> DetailRow | None:
        tid = _rows.clean_id(trajectory_id)
        if tid is None or "\x00" in tid:  # PostgreSQL text cannot hold NUL
            return None

        def work(cur: psycopg.Cursor[Any]) -> Any:
            cur.execute(
                f"SELECT {self._select}, CAST(steps_json AS text) FROM trajectories WHERE id = %s",
                (tid,),
            )
            return cur.fetchone()

        row = self._read(work)
        return None if row is None else _rows.detail_body(row[:-1], row[-1])

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        """Steps text in listing order through a server-side cursor on its own connection.

        A source that cannot be read yields nothing; one failing midway raises
        SourceUnavailable rather than pass for complete."""
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor(name="milady_lab_steps") as cur:
                cur.itersize = max(1, batch_rows)
                columns = table_columns(conn)
                clause, params = (where or StepsFilter()).sql("postgres", columns)
                cur.execute(
                    f"SELECT {steps_select(columns)} FROM trajectories {clause} {_ORDER}", params
                )
                while batch := cur.fetchmany(max(1, batch_rows)):
                    yield _rows.steps_from_rows(batch)
        except psycopg.Error as exc:
            raise SourceUnavailable(
                f"reading {self.description} failed: {self._scrub(exc)}"
            ) from None
        finally:
            conn.close()

    def rewards_filled(self, field: str) -> bool:
        column = REWARD_COLUMNS[field]

        def work(cur: psycopg.Cursor[Any]) -> bool:
            if column not in table_columns(cur.connection):
                return False
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM trajectories WHERE {column} <> 0)")
            row = cur.fetchone()
            return bool(row and row[0])

        return self._read(work)

    def archive_rows(self) -> list[tuple[Any, ...]]:
        """The agent's ``trajectory_archive`` rows (``archive.TABLE_COLUMNS`` order, every
        value as text or number); [] when the agent never archived."""
        from .archive import TABLE_COLUMNS

        def work(cur: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE "
                "table_name = 'trajectory_archive' AND table_schema = ANY (current_schemas(false))"
            )
            present = {str(r[0]) for r in cur.fetchall()}
            if not present:
                return []
            cols = ", ".join(
                f"CAST({c} AS text)" if c in present else "NULL" for c in TABLE_COLUMNS
            )
            cur.execute(f"SELECT {cols} FROM trajectory_archive")
            return [tuple(r) for r in cur.fetchall()]

        return self._read(work)

    def summaries_frame(self) -> pl.LazyFrame:
        def load() -> pl.DataFrame:
            def work(cur: psycopg.Cursor[Any]) -> list[Any]:
                cur.execute(f"SELECT {self._select} FROM trajectories {_ORDER}")
                return cur.fetchall()

            return _rows.summaries_from_rows(self._read(work))

        return _rows.deferred_summaries(load)

    def llm_calls_frame(self) -> pl.LazyFrame:
        return _rows.deferred_calls(self.iter_steps)


def table_columns(conn: psycopg.Connection[Any]) -> frozenset[str]:
    """The columns of the visible ``trajectories`` table: the agent's two writers differ
    (``metadata`` or ``metadata_json``, ``scenario_id`` only in newer ones)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE "
            "table_name = 'trajectories' AND table_schema = ANY (current_schemas(false))"
        )
        return frozenset(str(r[0]) for r in cur.fetchall())


def steps_select(columns: frozenset[str]) -> str:
    """``iter_steps``'s SELECT list; a REAL goes through its shortest text form, as in
    ``pg_select``; steps are TEXT (the agent package) or JSONB (the core's service)."""
    return _rows.STEPS_SELECT.format(
        text="text", int="bigint", real="double precision",
        reward="CAST(total_reward AS text)", steps="CAST(steps_json AS text)",
        judge="CAST(ai_judge_reward AS text)" if "ai_judge_reward" in columns else "NULL",
    )  # fmt: skip
