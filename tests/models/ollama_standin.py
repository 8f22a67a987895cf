"""A local stand-in for Ollama's blob and create endpoints (no Ollama binary installs here).

It implements what Ollama documents for its current API, strictly enough to catch a
client that gets it wrong:

* ``HEAD /api/blobs/sha256:<hex>`` → 200 when the blob exists, 404 otherwise;
* ``POST /api/blobs/sha256:<hex>`` with the raw file as body → 201, or 400 when the
  body's SHA-256 is not the digest in the path;
* ``POST /api/create`` with ``model`` (or its alias ``name``), ``from`` or ``files``,
  ``adapters`` ``{filename: "sha256:<hex>"}`` → streamed JSON status lines ending in
  ``{"status":"success"}`` (one object when ``stream`` is false). Every referenced blob
  must exist, and a safetensors adapter needs ``adapter_config.json`` beside it; errors
  are ``{"error": "..."}`` with a 4xx status. The removed ``modelfile``/``path`` fields
  are ignored, as Ollama does.

Requests are recorded in ``requests`` for assertions; ``fail_create``,
``stream_error``, ``redirect_to`` and ``truncate_stream`` inject failures.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_BLOB_PATH = re.compile(r"/api/blobs/sha256[:-](?P<hex>[0-9a-f]{64})")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class OllamaStandIn:
    """State and failure knobs of one stand-in server."""

    blobs: dict[str, bytes] = field(default_factory=dict)  # "sha256:<hex>" -> content
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    fail_create: tuple[int, str] | None = None  # answer create with this status and error
    stream_error: str | None = None  # an {"error"} line in the middle of the stream
    truncate_stream: bool = False  # end the stream without the final success line
    redirect_to: str | None = None  # answer every request with 307 to this URL
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OllamaStandIn:
        standin = self

        class Handler(_Handler):
            state = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]


class _Handler(BaseHTTPRequestHandler):
    state: OllamaStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    # -- plumbing ------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, body: bytes) -> None:
        with self.state.lock:
            self.state.requests.append(
                Recorded(self.command, self.path, dict(self.headers.items()), body)
            )

    def _send(self, status: int, obj: Any = None, *, head: bool = False) -> None:
        data = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _redirected(self) -> bool:
        if self.state.redirect_to is None:
            return False
        self.send_response(307)
        self.send_header("Location", self.state.redirect_to + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    # -- verbs ----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._record(b"")
        if self._redirected():
            return
        m = _BLOB_PATH.fullmatch(self.path)
        if m is None:
            self._send(404, head=True)
            return
        exists = f"sha256:{m['hex']}" in self.state.blobs
        self._send(200 if exists else 404, head=True)

    def do_POST(self) -> None:
        body = self._read_body()
        self._record(body)
        if self._redirected():
            return
        m = _BLOB_PATH.fullmatch(self.path)
        if m is not None:
            if hashlib.sha256(body).hexdigest() != m["hex"]:
                self._send(400, {"error": "digest mismatch"})
                return
            with self.state.lock:
                self.state.blobs[f"sha256:{m['hex']}"] = body
            self._send(201)
            return
        if self.path == "/api/create":
            self._create(body)
            return
        self._send(404, {"error": "not found"})

    def _create(self, raw: bytes) -> None:
        try:
            req = json.loads(raw)
        except ValueError:
            self._send(400, {"error": "invalid JSON body"})
            return
        if not isinstance(req, dict):
            self._send(400, {"error": "invalid request"})
            return
        if self.state.fail_create is not None:
            status, message = self.state.fail_create
            self._send(status, {"error": message})
            return
        name = req.get("model") or req.get("name")
        if not isinstance(name, str) or not name:
            self._send(400, {"error": "model is required"})
            return
        if not req.get("from") and not req.get("files"):
            self._send(400, {"error": "neither 'from' or 'files' was specified"})
            return
        adapters = req.get("adapters") or {}
        files = req.get("files") or {}
        for table in (adapters, files):
            if not isinstance(table, dict):
                self._send(400, {"error": "files and adapters must be objects"})
                return
            for digest in table.values():
                if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                    self._send(400, {"error": f"invalid digest {digest!r}"})
                    return
                if digest not in self.state.blobs:
                    self._send(400, {"error": f"blob {digest} not found"})
                    return
        if (
            any(k.endswith(".safetensors") for k in adapters)
            and "adapter_config.json" not in adapters
        ):
            self._send(400, {"error": "adapter_config.json is required for safetensors adapters"})
            return
        lines: list[dict[str, Any]] = [{"status": "parsing adapter"}]
        lines += [{"status": f"using existing layer {d}"} for d in adapters.values()]
        if self.state.stream_error is not None:
            lines.append({"error": self.state.stream_error})
        else:
            lines += [{"status": "writing manifest"}]
            if not self.state.truncate_stream:
                lines.append({"status": "success"})
                with self.state.lock:
                    self.state.models[name] = req
        if req.get("stream") is False:
            self._send(200, lines[-1])
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = json.dumps(line).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
