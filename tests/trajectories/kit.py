"""Real stand-ins for the places trajectories live: a PostgreSQL database loaded with a
SQLite file's rows, a loopback HTTP server answering Milady's documented
``/api/trajectories`` shapes, and export files."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import psycopg

from milady_lab.demo import COLUMNS, TABLE_DDL
from milady_lab.trajectories.sqlite import SQLiteSource

# -- PostgreSQL ----------------------------------------------------------------------------


def raw_rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        # A table made before the agent's scenario_id/batch_id columns reads them as null.
        have = {r[1] for r in conn.execute("PRAGMA table_info(trajectories)")}
        cols = ", ".join(c if c in have else "NULL" for c in COLUMNS)
        return conn.execute(f"SELECT {cols} FROM trajectories").fetchall()
    finally:
        conn.close()


def pg_database(server_url: str, rows: list[tuple[Any, ...]], *, table: bool = True) -> str:
    """A fresh database on the test server holding ``rows`` in Milady's table; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    if table:
        with psycopg.connect(url) as conn:
            # PostgreSQL INTEGER is 32-bit; ms timestamps need BIGINT there.
            conn.execute(TABLE_DDL.replace("INTEGER", "BIGINT"))
            conn.execute("CREATE INDEX trajectories_listing ON trajectories (start_time DESC, id)")
            with conn.cursor().copy(f"COPY trajectories ({', '.join(COLUMNS)}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
    return url


# -- a Milady agent's REST API -------------------------------------------------------------

_LIST_SQL = (
    "SELECT id, agent_id, source, status, start_time, end_time, duration_ms, llm_call_count,"
    " provider_access_count, total_prompt_tokens, total_completion_tokens, metadata,"
    " created_at, updated_at FROM trajectories ORDER BY start_time DESC, id LIMIT ? OFFSET ?"
)
_LIST_KEYS = (
    "id", "agentId", "source", "status", "startTime", "endTime", "durationMs", "llmCallCount",
    "providerAccessCount", "totalPromptTokens", "totalCompletionTokens", "metadata",
    "createdAt", "updatedAt",
)  # fmt: skip


class AgentStandIn:
    """Answers GET /api/trajectories, GET /api/trajectories/:id and (optionally) POST
    /api/trajectories/export from a Milady-schema SQLite file, checking a Bearer token."""

    def __init__(self, db: Path, token: str | None = "s3cret", *, export: bool = True) -> None:
        self.db = db
        self.token = token
        self.export = export
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"milady+http://{host}:{port}"

    def __enter__(self) -> AgentStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # the documented shapes, built from the table
    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    @staticmethod
    def _item(row: tuple[Any, ...]) -> dict[str, Any]:
        item = dict(zip(_LIST_KEYS, row, strict=True))
        item["metadata"] = json.loads(item["metadata"] or "{}")
        return item

    def listing(self, limit: int, offset: int) -> dict[str, Any]:
        items = [self._item(r) for r in self._query(_LIST_SQL, (limit, offset))]
        total = self._query("SELECT count(*) FROM trajectories", ())[0][0]
        return {"trajectories": items, "total": total, "offset": offset, "limit": limit}

    def detail(self, tid: str) -> dict[str, Any] | None:
        source = SQLiteSource(self.db)
        try:
            d = source.detail(tid)
        finally:
            source.close()
        if d is None:
            return None
        calls = d.pop("llmCalls")
        accesses = d.pop("providerAccesses")
        sql = _LIST_SQL.replace("ORDER BY start_time DESC, id LIMIT ? OFFSET ?", "WHERE id = ?")
        trajectory = {**self._item(self._query(sql, (tid,))[0]), "totalReward": d["totalReward"]}
        return {
            "trajectory": trajectory,
            "llmCalls": [
                {
                    "id": c["callId"], "trajectoryId": tid, "stepId": c["stepId"],
                    "model": c["model"], "systemPrompt": c["systemPrompt"],
                    "userPrompt": c["userPrompt"], "response": c["response"],
                    "temperature": c["temperature"], "maxTokens": c["maxTokens"],
                    "purpose": c["purpose"], "actionType": c["actionType"],
                    "latencyMs": c["latencyMs"], "promptTokens": c["promptTokens"],
                    "completionTokens": c["completionTokens"], "timestamp": c["timestamp"],
                    "createdAt": trajectory.get("createdAt"),
                }
                for c in calls
            ],
            "providerAccesses": [
                {
                    "id": a["providerId"], "trajectoryId": tid, "stepId": a["stepId"],
                    "providerName": a["providerName"], "purpose": a["purpose"],
                    "data": a["data"], "timestamp": a["timestamp"],
                    "createdAt": trajectory.get("createdAt"),
                }
                for a in accesses
            ],
        }  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if agent.token is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {agent.token}":
                    return True
                self._send(401, {"error": "Unauthorized"})
                return False

            def do_GET(self) -> None:
                agent.requests.append(f"GET {self.path}")
                if not self._authorized():
                    return
                parts = urlsplit(self.path)
                if parts.path == "/api/trajectories":
                    q = parse_qs(parts.query)
                    try:
                        limit = int(q.get("limit", ["50"])[0])
                        offset = int(q.get("offset", ["0"])[0])
                    except ValueError:
                        return self._send(400, {"error": "bad paging"})
                    if not 1 <= limit <= 500 or offset < 0:
                        return self._send(400, {"error": "limit must be 1-500"})
                    return self._send(200, agent.listing(limit, offset))
                if parts.path.startswith("/api/trajectories/"):
                    body = agent.detail(unquote(parts.path[len("/api/trajectories/") :]))
                    if body is None:
                        return self._send(404, {"error": "Trajectory not found"})
                    return self._send(200, body)
                self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                agent.requests.append(f"POST {self.path}")
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/api/trajectories/export" or not agent.export:
                    return self._send(404, {"error": "not found"})
                ids = body.get("trajectoryIds") or []
                found = [agent.detail(i) for i in ids]
                self._send(200, {"trajectories": [d for d in found if d is not None]})

        return Handler


# -- export files ----------------------------------------------------------------------------


def write_api_export(agent: AgentStandIn, ids: list[str], path: Path, *, wrap: bool) -> Path:
    """An export in the agent API shape: a bare array, or under "trajectories"."""
    entries = [agent.detail(i) for i in ids]
    doc: Any = {"trajectories": entries} if wrap else entries
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def write_row_export(db: Path, folder: Path, files: int = 3) -> Path:
    """An export folder in the raw row shape (snake_case columns, steps_json text)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [dict(zip(COLUMNS, r, strict=True)) for r in raw_rows(db)]
    for n in range(files):
        chunk = rows[n::files]
        (folder / f"part-{n}.json").write_text(json.dumps(chunk), encoding="utf-8")
    return folder


def null_some_start_times(db: Path) -> None:
    """Rebuild the table without its NOT NULL constraint (as another writer might have
    made it) and clear every 50th trajectory's start time."""
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE trajectories RENAME TO old")
    conn.execute("CREATE TABLE trajectories AS SELECT * FROM old")
    conn.execute("DROP TABLE old")
    conn.execute("UPDATE trajectories SET start_time = NULL WHERE rowid % 50 = 0")
    conn.commit()
    conn.close()
