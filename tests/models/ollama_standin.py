"""A local stand-in for Ollama's HTTP API (no Ollama binary installs here).

It follows Ollama's documented protocol and the rules its source applies
(``server/create.go``, ``convert/``), strictly enough to refuse what Ollama refuses:

* ``GET /api/version`` → ``{"version": ...}``; ``GET /api/tags`` → the models it has;
* ``HEAD /api/blobs/sha256:<hex>`` → 200 when the blob exists, 404 otherwise;
  ``POST`` the same path with the raw file → 201, or 400 when the body's SHA-256 is not
  the digest in the path;
* ``POST /api/create`` with ``model`` (or its alias ``name``) and ``from`` and/or
  ``files``, ``adapters``, ``template``, ``parameters``, ``stream``:
  - every digest in ``files``/``adapters`` must be an uploaded blob;
  - a ``.gguf`` model file must start with the GGUF magic, be a model (not
    ``general.type=adapter``) of an architecture Ollama's runner knows; one GGUF only;
  - adapters: either one GGUF LoRA file (``general.type=adapter``, same architecture
    as the ``from`` model) or safetensors with ``adapter_config.json``, which is decoded
    the way Go's ``encoding/json`` decodes it into ``Alpha uint32 `json:"lora_alpha"```:
    ``16.0`` is refused; safetensors adapters convert only onto llama and gemma2 bases;
  - ``from`` must name a model it has (``bases``, or one created earlier);
  - ``parameters.stop`` must be a list of strings.
  Answers are streamed JSON status lines ending in ``{"status":"success"}`` (one object
  when ``stream`` is false); errors are ``{"error": "..."}`` with a 4xx status. The
  removed ``modelfile``/``path`` fields are ignored, as Ollama does.

Requests are recorded in ``requests`` (the uploaded bytes are in ``blobs``) for
assertions; ``fail_create``, ``stream_error``, ``redirect_to``, ``truncate_stream`` and
``accept_adapters`` inject failures or older/newer server behaviour.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
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
    accept_adapters: bool = True  # False: a server that no longer creates from adapters
    version: str = "0.34.2"
    #: Models it "has" (as if pulled), name -> architecture.
    bases: dict[str, str] = field(
        default_factory=lambda: {
            "smollm2:135m": "llama",
            "smollm2:360m": "llama",
            "llama3.2:3b": "llama",
            "qwen2.5:0.5b": "qwen2",
            "qwen3:0.6b": "qwen3",
        }
    )
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

    def do_GET(self) -> None:
        self._record(b"")
        if self._redirected():
            return
        if self.path == "/api/version":
            self._send(200, {"version": self.state.version})
            return
        if self.path == "/api/tags":  # what ``ollama list`` shows: "name:tag" for each
            with self.state.lock:
                names = [*self.state.bases, *self.state.models]
            tagged = [n if ":" in n else f"{n}:latest" for n in names]
            self._send(200, {"models": [{"name": n, "model": n} for n in tagged]})
            return
        self._send(404, {"error": "not found"})

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
        try:
            name, arch = _check_create(self.state, req)
        except _Refused as exc:
            self._send(exc.status, {"error": str(exc)})
            return
        layers = {**(req.get("files") or {}), **(req.get("adapters") or {})}
        lines: list[dict[str, Any]] = [{"status": "parsing GGUF"}]
        lines += [{"status": f"using existing layer {d}"} for d in layers.values()]
        if self.state.stream_error is not None:
            lines.append({"error": self.state.stream_error})
        else:
            lines += [{"status": "writing manifest"}]
            if not self.state.truncate_stream:
                lines.append({"status": "success"})
                with self.state.lock:
                    self.state.models[name] = req
                    self.state.bases[name] = arch
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


# -- Ollama's create rules ----------------------------------------------------------------------
#: Architectures Ollama's llama.cpp runner loads from a GGUF (the ones milady-lab may send).
RUNNER_ARCHITECTURES = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "mistral", "phi3"}
#: Bases Ollama's safetensors adapter converter handles (convert/convert.go).
SAFETENSORS_ADAPTER_ARCHITECTURES = {"llama", "gemma2"}


class _Refused(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _GoFloat(float):
    """A JSON number written with a fraction or exponent (Go won't put it in an integer)."""

    text: str = ""


def _go_float(text: str) -> _GoFloat:
    value = _GoFloat(text)
    value.text = text
    return value


def _check_create(state: OllamaStandIn, req: dict[str, Any]) -> tuple[str, str]:
    """Apply Ollama's rules to a create body; the created model's name and architecture."""
    name = req.get("model") or req.get("name")
    if not isinstance(name, str) or not name:
        raise _Refused("model is required")
    if not req.get("from") and not req.get("files"):
        raise _Refused("neither 'from' or 'files' was specified")
    tables = {}
    for key in ("files", "adapters"):
        table = req.get(key) or {}
        if not isinstance(table, dict):
            raise _Refused("files and adapters must be objects")
        for digest in table.values():
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
                raise _Refused(f"invalid digest {digest!r}")
            if digest not in state.blobs:
                raise _Refused(f"blob {digest} not found")
        tables[key] = table
    params = req.get("parameters") or {}
    stop = params.get("stop", []) if isinstance(params, dict) else None
    if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
        raise _Refused("parameters must be an object and stop a list of strings")
    arch = _model_files(state, tables["files"])
    if arch is None:
        base = req.get("from")
        if not isinstance(base, str) or base not in state.bases:
            raise _Refused(f"model '{base}' not found, try pulling it first", 404)
        arch = state.bases[base]
    if tables["adapters"]:
        _adapters(state, tables["adapters"], arch)
    return name, arch


def _model_files(state: OllamaStandIn, files: dict[str, str]) -> str | None:
    ggufs = [k for k in files if k.endswith(".gguf")]
    if not files:
        return None
    if not ggufs:
        raise _Refused("safetensors model conversion needs config.json and tokenizer files")
    if len(ggufs) > 1:
        raise _Refused("only one GGUF model file is supported")
    meta = _gguf_meta(state.blobs[files[ggufs[0]]])
    if meta.get("general.type") == "adapter":
        raise _Refused("the GGUF in files is an adapter, not a model")
    arch = str(meta.get("general.architecture"))
    if arch not in RUNNER_ARCHITECTURES:
        raise _Refused(f'unsupported architecture "{arch}"')
    return arch


def _adapters(state: OllamaStandIn, adapters: dict[str, str], arch: str) -> None:
    if not state.accept_adapters:
        raise _Refused("creating a model from an adapter is not supported")
    ggufs = [k for k in adapters if k.endswith(".gguf")]
    if ggufs:
        if len(adapters) != 1:
            raise _Refused("only one adapter is currently supported")
        meta = _gguf_meta(state.blobs[adapters[ggufs[0]]])
        if meta.get("general.type") != "adapter":
            raise _Refused("the adapter GGUF is not an adapter (general.type)")
        if meta.get("general.architecture") != arch:
            raise _Refused(
                f"adapter architecture {meta.get('general.architecture')} does not match "
                f"the base model's {arch}"
            )
        return
    if not any(k.endswith(".safetensors") for k in adapters):
        raise _Refused("no adapter file found")
    if "adapter_config.json" not in adapters:
        raise _Refused("adapter_config.json is required for safetensors adapters")
    config = json.loads(state.blobs[adapters["adapter_config.json"]], parse_float=_go_float)
    alpha = config.get("lora_alpha", (config.get("lora_parameters") or {}).get("alpha"))
    if isinstance(alpha, _GoFloat) or (isinstance(alpha, int) and not 0 <= alpha < 2**32):
        shown = alpha.text if isinstance(alpha, _GoFloat) else alpha
        raise _Refused(
            f"json: cannot unmarshal number {shown} into Go struct field .lora_alpha of type uint32"
        )
    if arch not in SAFETENSORS_ADAPTER_ARCHITECTURES:
        raise _Refused(f'unsupported architecture "{arch}"')


def _gguf_meta(data: bytes) -> dict[str, Any]:
    """The GGUF's key-value metadata (read with gguf-py, llama.cpp's own reader)."""
    import gguf

    if data[:4] != b"GGUF":
        raise _Refused("invalid file magic")
    fd, name = tempfile.mkstemp(suffix=".gguf")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        reader = gguf.GGUFReader(name)
        return {
            f.name: f.contents() for f in reader.fields.values() if f.name.startswith("general.")
        }
    except (ValueError, IndexError) as exc:
        raise _Refused(f"invalid GGUF: {exc}") from None
    finally:
        os.unlink(name)
