"""A running Milady agent's REST API (``milady+http://host:port``), mirrored locally.

The agent pages ``GET /api/trajectories`` (limit ≤ 500, newest first) and gives one
trajectory with its calls at ``GET /api/trajectories/:id``. Asking it for every page
on every listing would be slow and would make the service depend on the agent being
up, so this source keeps a SQLite mirror under ``$MILADY_LAB_HOME/cache/`` and serves
everything from it, exactly like ``SQLiteSource``.

Syncing (at most every ``refresh_s`` seconds, on use): fetch listing pages newest first
until a page reaches trajectories already mirrored and unchanged, then fetch the new or
changed ones — in bulk through ``POST /api/trajectories/export`` with ``jsonShape:
"legacy"`` (whole trajectories: every call with its tool calls, and the provider
accesses, which the default ``eliza_native_v1`` rows leave out; an agent that answers
rows anyway is read by grouping them), else one by one from the detail route.

"Unchanged" is judged on what the listing itself says (status, end time, step, call and
provider-access counts, and ``updatedAt`` where the agent sends one), stored as the
listing gave it: the agent's detail carries other timestamps, and comparing those made
every sync fetch everything again. A second sync with nothing new is one request, plus
one export of the ``active`` trajectories the pages read did not reach (they may have
ended since; an agent that crashed leaves some active for good).
The listing's source and status also win over the detail's (whose ``source`` defaults to
"chat"). Trajectories the agent deleted stay in the mirror. An unreachable agent or a
rejected token sets ``unavailable_reason``, and reads then fail with it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import polars as pl

from ..api.schema import JsonObject
from ..config import Settings
from .base import DetailRow, SourceUnavailable, StepsFilter, SummaryRow
from .export import create_cache_db, entries_of, entry_id, trajectory_row, upsert_rows
from .sqlite import SQLiteSource

PAGE = 500  # the agent's largest page
EXPORT_BATCH = 200
ACTIVE_REFRESH_LIMIT = 200
#: Listing fields that change when a trajectory does, and their mirror columns.
_CHANGE_KEYS = (
    ("status", "status"),
    ("endTime", "end_time"),
    ("stepCount", "step_count"),
    ("llmCallCount", "llm_call_count"),
    ("providerAccessCount", "provider_access_count"),
    ("updatedAt", "updated_at"),
)


class AgentApiSource(SQLiteSource):
    """Trajectories of a Milady agent, read through its REST API into a local mirror."""

    def __init__(
        self,
        spec: str,
        settings: Settings,
        *,
        refresh_s: float = 10.0,
        timeout_s: float = 10.0,
    ) -> None:
        self._spec_error: str | None = None
        token = settings.agent_token
        try:
            parts = urlsplit(spec)
            scheme = parts.scheme.lower().removeprefix("milady+")
            host = parts.hostname or ""
            port = parts.port
            if parts.password or parts.username:
                token = token or parts.password or parts.username  # milady+http://:TOKEN@host
            if scheme not in ("http", "https") or not host:
                raise ValueError("expected milady+http://host:port")
        except ValueError as exc:
            self._spec_error = f"bad agent URL: {exc}"
            scheme, host, port, parts = "http", "invalid", None, urlsplit("")
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        path = (parts.path or "").rstrip("/")
        self.base_url = f"{scheme}://{netloc}{path}"
        digest = hashlib.sha256(self.base_url.encode()).hexdigest()[:16]
        # v2: the table gained the agent's grouping columns; an older mirror is rebuilt.
        cache = settings.home / "cache" / f"agent-{digest}-v2.sqlite"
        super().__init__(cache, description=f"milady+{self.base_url}")
        self._token = token
        self._refresh_s = refresh_s
        self._timeout = timeout_s
        self._sync_lock = threading.Lock()
        self._synced_at = float("-inf")
        self._error: str | None = self._spec_error
        self._export_works: bool | None = None

    # -- syncing ----------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self._timeout,
            trust_env=False,  # a proxy variable must not route the agent's traffic away
            follow_redirects=False,
        )

    def sync(self, *, force: bool = False) -> str | None:
        """Bring the mirror up to date; returns the problem, if any (never raises)."""
        if self._spec_error:
            return self._spec_error
        with self._sync_lock:
            if not force and time.monotonic() - self._synced_at < self._refresh_s:
                return self._error
            try:
                self._sync()
                self._error = None
            except _AgentError as exc:
                self._error = str(exc)
            except httpx.HTTPError as exc:
                self._error = f"cannot reach the agent at {self.base_url}: {_brief(exc)}"
            except (sqlite3.Error, OSError) as exc:
                self._error = f"cannot write the mirror {self.path}: {exc}"
            self._synced_at = time.monotonic()
            return self._error

    def _sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            create_cache_db(conn)
            with self._client() as client:
                seen: set[str] = set()
                wanted = self._new_or_changed(client, conn, seen)
                # Active ones the pages read did not reach may have ended since: ask again.
                for (tid,) in conn.execute(
                    "SELECT id FROM trajectories WHERE status = 'active' "
                    "ORDER BY start_time DESC LIMIT ?",
                    (ACTIVE_REFRESH_LIMIT,),
                ):
                    if tid not in seen:
                        wanted.setdefault(tid, {})
                rows = self._fetch(client, wanted) if wanted else []
            conn.execute("BEGIN IMMEDIATE")
            upsert_rows(conn, rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _get_json(self, client: httpx.Client, url: str, **kw: Any) -> Any:
        response = client.get(url, **kw)
        if response.status_code in (401, 403):
            raise _AgentError(
                f"the agent at {self.base_url} refused the token ({response.status_code}); "
                "set MILADY_LAB_AGENT_TOKEN"
            )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _AgentError(f"the agent at {self.base_url} answered {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise _AgentError(f"the agent at {self.base_url} did not answer JSON") from None

    def _new_or_changed(
        self, client: httpx.Client, conn: sqlite3.Connection, seen: set[str]
    ) -> dict[str, JsonObject]:
        """Listing items not mirrored or changed, newest first, paging until caught up."""
        wanted: dict[str, JsonObject] = {}
        offset = 0
        while True:
            page = self._get_json(
                client, "/api/trajectories", params={"limit": PAGE, "offset": offset}
            )
            items = page.get("trajectories") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise _AgentError(f"unexpected listing from {self.base_url}")
            items = [i for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]
            ids = [i["id"] for i in items]
            seen.update(ids)
            known = _mirrored(conn, ids)
            caught_up = False
            for item in items:
                if _unchanged(item, known.get(item["id"])):
                    caught_up = True
                else:
                    wanted[item["id"]] = item
            total = page.get("total")
            offset += len(items)
            if caught_up or len(items) < PAGE or (isinstance(total, int) and offset >= total):
                return wanted

    def _fetch(self, client: httpx.Client, wanted: dict[str, JsonObject]) -> list[tuple[Any, ...]]:
        """Rows for the wanted ids: exported in bulk when possible, else one by one."""
        rows: dict[str, tuple[Any, ...]] = {}
        ids = list(wanted)
        if self._export_works is not False:
            for lo in range(0, len(ids), EXPORT_BATCH):
                entries = self._export(client, ids[lo : lo + EXPORT_BATCH])
                if entries is None:
                    self._export_works = False
                    break
                self._export_works = True
                for entry in entries:
                    tid = entry_id(entry)
                    if tid in wanted and tid not in rows:
                        row = trajectory_row(entry, wanted[tid])
                        if row is not None:
                            rows[tid] = row
        for tid in ids:
            if tid in rows:
                continue
            body = self._get_json(client, f"/api/trajectories/{quote(tid, safe='')}")
            row = trajectory_row(body, wanted[tid]) if isinstance(body, dict) else None
            if row is not None and row[0] == tid:
                rows[tid] = row
        return list(rows.values())

    def _export(self, client: httpx.Client, ids: list[str]) -> list[Any] | None:
        """Full trajectories in one request, or None when the agent cannot export."""
        try:
            response = client.post(
                "/api/trajectories/export",
                json={
                    "format": "json",
                    "jsonShape": "legacy",
                    "includePrompts": True,
                    "trajectoryIds": ids,
                },
            )
        except httpx.HTTPError:
            return None
        if response.status_code in (401, 403):
            raise _AgentError(
                f"the agent at {self.base_url} refused the token ({response.status_code})"
            )
        if response.status_code != 200:
            return None
        try:
            return entries_of(response.json())
        except ValueError:
            return None

    # -- protocol: sync, then read the mirror ----------------------------------------------
    def _synced(self) -> None:
        """Sync; an agent that cannot be read is an error, never a stale or empty answer."""
        problem = self.sync()
        if problem:
            raise SourceUnavailable(problem)

    def unavailable_reason(self) -> str | None:
        return self.sync() or super().unavailable_reason()

    def count(self) -> int:
        self._synced()
        return super().count()

    def summaries(self, limit: int, offset: int) -> pl.DataFrame:
        self._synced()
        return super().summaries(limit, offset)

    def page_now(self, limit: int, offset: int) -> tuple[list[SummaryRow], int] | None:
        return None  # every answer may need a sync: never on the server's event loop

    def detail(self, trajectory_id: str) -> DetailRow | None:
        self._synced()
        return super().detail(trajectory_id)

    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        self._synced()
        return super().iter_steps(batch_rows, where)

    def rewards_filled(self, field: str) -> bool:
        self._synced()
        return super().rewards_filled(field)

    def summaries_frame(self) -> pl.LazyFrame:
        self._synced()
        return super().summaries_frame()


def _mirrored(conn: sqlite3.Connection, ids: list[str]) -> dict[str, JsonObject]:
    """The change fields of the mirrored ones among ``ids``."""
    columns = ", ".join(c for _, c in _CHANGE_KEYS)
    out: dict[str, JsonObject] = {}
    for lo in range(0, len(ids), 500):
        chunk = ids[lo : lo + 500]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, {columns} FROM trajectories WHERE id IN ({marks})"
        for tid, *values in conn.execute(sql, chunk):
            out[tid] = dict(zip((k for k, _ in _CHANGE_KEYS), values, strict=True))
    return out


def _unchanged(item: JsonObject, mirrored: JsonObject | None) -> bool:
    """Whether the listing item says nothing changed since it was mirrored."""
    if mirrored is None:
        return False
    for key, _ in _CHANGE_KEYS:
        if key in item and item[key] is not None and item[key] != mirrored[key]:
            return False
    return True


class _AgentError(Exception):
    """The agent answered, but not usefully."""


def _brief(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
