"""Import a fine-tuned model into Ollama over its HTTP API, as one GGUF Ollama can run.

Default (``mode: "model"``): the adapter is fused into its base and written as one
self-contained GGUF (``export.write_fused_gguf``), uploaded as one blob (``HEAD`` then
``POST /api/blobs/sha256:<hex>``), and ``POST /api/create`` names it in ``files`` with
the chat format as a Go ``template`` and the end-of-turn strings as
``parameters.stop``. Every Ollama from 0.5.5 on accepts this, 0.34+ included (0.34.1
removed creating models from a LoRA adapter in its CLI).

``mode: "adapter"`` writes the LoRA alone in llama.cpp's GGUF LoRA layout and creates
the model ``from`` the base as Ollama names it. Safetensors are never sent: Ollama's
safetensors adapter converter rejects a float ``lora_alpha`` and re-orders PEFT's q/k
matrices on the wrong axis.

Safety: the URL must pass the loopback rule before any connection; requests go out with
``trust_env=False`` and ``follow_redirects=False``. Ollama is asked for its version
before the (slow) conversion, so a stopped Ollama is a 502 at once. The model record
changes only after Ollama reported success; the temporary GGUF is always removed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

import httpx

from ...api import decode
from ...api.schema import (
    ImportedModel,
    ImportOllamaAnswer,
    ImportOllamaRequest,
    ImportReport,
    JsonObject,
)
from ...config import Settings
from ...errors import InputError, UpstreamError
from ...state import StateStore, now_ms
from .loopback import check_loopback_url

DEFAULT_URL = "http://localhost:11434"
Mode = Literal["model", "adapter"]
Quantization = Literal["f16", "q8_0", "f32"]
#: Ollama model names: optional namespace, name, optional tag.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
_OLLAMA_NAME = re.compile(rf"(?:{_PART}/)?{_PART}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,79}})?")
#: Base models Ollama pulls may carry a registry host and namespaces.
_OLLAMA_BASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}")
_CHUNK = 1 << 20
_MAX_MESSAGE = 500
#: Called with (phase, percent of the whole import done).
ImportProgress = Callable[[str, float], None]


@dataclass(frozen=True)
class ImportRequest:
    """A checked import body."""

    name: str
    mode: Mode
    quantization: Quantization
    base: str | None  # the base as Ollama names it (adapter mode)
    url: str

    @classmethod
    def from_body(
        cls, model: Mapping[str, Any], body: ImportOllamaRequest | JsonObject | None
    ) -> ImportRequest:
        if not isinstance(body, ImportOllamaRequest):
            body = decode.body(body, ImportOllamaRequest)
        name = body.model_name or default_model_name(model)
        if not _OLLAMA_NAME.fullmatch(name):
            raise InputError(
                "modelName must be an Ollama model name: letters, digits, '.', '_' and '-', "
                "an optional 'namespace/' and ':tag'"
            )
        mode = body.mode or "model"
        quant = body.quantization or "f16"
        if mode == "adapter" and quant == "q8_0":
            raise InputError("mode 'adapter' writes the LoRA as f16 or f32, not q8_0")
        base = body.base_model
        if base is None and mode == "adapter":
            base = default_ollama_base(model)
            if base is None:
                raise InputError(
                    "no Ollama name is known for the base model "
                    f"{str(model.get('baseModel'))[:80]!r}; pass baseModel (the base as "
                    "Ollama names it, e.g. llama3.2:3b) or use the default mode"
                )
        if base is not None and not _OLLAMA_BASE.fullmatch(base):
            raise InputError("baseModel must be an Ollama model name such as llama3.2:3b")
        url = check_loopback_url(DEFAULT_URL if body.ollama_url is None else body.ollama_url)
        return cls(name=name, mode=mode, quantization=quant, base=base, url=url)


def import_model(
    settings: Settings,
    store: StateStore,
    model: Mapping[str, Any],
    body: ImportOllamaRequest | JsonObject | None = None,
    progress: ImportProgress | None = None,
) -> ImportOllamaAnswer:
    """Convert the model to GGUF, upload it and create ``modelName`` in Ollama."""
    req = ImportRequest.from_body(model, body)
    plan = _Plan.check(settings, model, req)  # every 400/409 before Ollama is contacted
    report = _Reporter(store, model["id"], progress)
    with _ollama(req.url) as client:
        _guard(req.url, lambda: _version(client))
        settings.home.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=".ollama-import-", dir=settings.home))
        try:
            blob = plan.write(workdir, report)
            size = blob.stat().st_size
            report("uploading", 60.0)  # hashing first: the blob's name is its digest
            digest = _sha256(blob)
            _guard(req.url, lambda: _push_blob(client, blob, digest, report))
            create = plan.create_body({blob.name: f"sha256:{digest}"})
            report("creating", 96.0)  # Ollama reads the GGUF and writes its manifest
            _guard(req.url, lambda: _create(client, create, req.mode))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    report("done", 100.0)

    imported_at = now_ms()
    details = {"mode": req.mode, "quantization": req.quantization, "bytes": size}
    answer = ImportOllamaAnswer(
        model=ImportedModel(id=model["id"], ollama_name=req.name, imported_at=imported_at),
        report=ImportReport(
            mode=req.mode,
            quantization=req.quantization,
            bytes=size,
            digest=f"sha256:{digest}",
        ),
    )
    with store.transaction() as conn:
        store.update_model(model["id"], conn, ollamaName=req.name, importedAt=imported_at)
        store.emit(
            "model_imported",
            f"model {model['id']} imported into Ollama as {req.name} "
            f"({req.mode}, {req.quantization}, {size} bytes)",
            conn,
            modelId=model["id"],
            ollamaName=req.name,
            baseModel=req.base,
            **details,
        )
    return answer


@dataclass(frozen=True)
class _Plan:
    """What will be written and sent, checked before any slow work or request."""

    settings: Settings
    model: Mapping[str, Any]
    req: ImportRequest
    adapter: Path
    config: Any
    chat: Any  # ChatFormat (model mode) or None

    @classmethod
    def check(cls, settings: Settings, model: Mapping[str, Any], req: ImportRequest) -> _Plan:
        from transformers import AutoConfig, AutoTokenizer

        from ..artifacts import require_peft_adapter, resolve_base_path
        from .chat_format import chat_format
        from .gguf import gguf_architecture

        adapter = require_peft_adapter(model)
        base_path = resolve_base_path(settings, model)
        what = "config"
        try:  # a base folder without a config or a tokenizer: the user's to fix, not a bug
            config = AutoConfig.from_pretrained(base_path)
            what = "tokenizer"
            tokenizer = AutoTokenizer.from_pretrained(base_path) if req.mode == "model" else None
        except (OSError, ValueError) as exc:
            cause = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise InputError(
                f"cannot load the {what} of {model['id']}'s base model from {base_path}: {cause}"
            ) from None
        gguf_architecture(config)
        chat = chat_format(tokenizer) if tokenizer is not None else None
        return cls(settings, model, req, adapter, config, chat)

    def write(self, workdir: Path, report: _Reporter) -> Path:
        """The one GGUF to upload: the fused model, or the LoRA alone."""
        from . import gguf
        from .export import write_fused_gguf

        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", self.req.name).strip("-.") or "model"
        if self.req.mode == "adapter":
            path = workdir / f"{safe}-lora.gguf"
            report("converting", 5.0)
            gguf.write_lora(
                self.adapter, self.config, path, outtype=self.req.quantization, name=self.req.name
            )
            return path
        path = workdir / f"{safe}.gguf"
        write_fused_gguf(
            self.settings,
            self.model,
            path,
            outtype=self.req.quantization,
            progress=lambda phase, frac: report(phase, 5.0 + 55.0 * frac),
        )
        return path

    def create_body(self, blob: dict[str, str]) -> JsonObject:
        if self.req.mode == "adapter":
            return {"model": self.req.name, "from": self.req.base, "adapters": blob, "stream": True}
        return {
            "model": self.req.name,
            "files": blob,
            "template": self.chat.go_template(),
            "parameters": self.chat.ollama_parameters(),
            "stream": True,
        }


class _Reporter:
    """Progress to the caller (tqdm, widget) and, at each new phase (merging, converting,
    uploading, creating, done) and every 5 %, to the event log (SSE)."""

    def __init__(self, store: StateStore, model_id: str, progress: ImportProgress | None) -> None:
        self.store, self.model_id, self.progress = store, model_id, progress
        self.last_event = -100.0
        self.last_phase: str | None = None

    def __call__(self, phase: str, percent: float) -> None:
        percent = max(0.0, min(100.0, percent))
        if self.progress is not None:
            self.progress(phase, percent)
        new_phase, self.last_phase = phase != self.last_phase, phase
        if new_phase or percent - self.last_event >= 5.0 or (percent >= 100.0 > self.last_event):
            self.last_event = percent
            self.store.emit(
                "model_import_progress",
                f"model {self.model_id}: {phase} {percent:.0f}%",
                modelId=self.model_id,
                phase=phase,
                percent=round(percent, 1),
            )


def default_model_name(model: Mapping[str, Any]) -> str:
    """An Ollama-safe name from the model's own name (lower case, '-' for anything odd)."""
    raw = str(model.get("name") or "").lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:80].rstrip("-._")
    return name or f"milady-{model['id']}".lower()[:80]


def default_ollama_base(model: Mapping[str, Any]) -> str | None:
    """The Ollama name of the model's base from the base-model table (None when unknown)."""
    from ...training.base_models import FRIENDLY_MODELS, OLLAMA_NAMES

    base = model.get("baseModel")
    if not isinstance(base, str):
        return None
    key = base.strip().lower()
    if key in OLLAMA_NAMES:
        return OLLAMA_NAMES[key]
    for friendly, hub_id in FRIENDLY_MODELS.items():
        if hub_id.lower() == key and friendly in OLLAMA_NAMES:
            return OLLAMA_NAMES[friendly]
    return None


# -- HTTP -------------------------------------------------------------------------------------
def _ollama(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(30.0, read=600.0),
    )


def _guard(url: str, call: Callable[[], Any]) -> Any:
    """Transport failures as 502s that say what to check."""
    try:
        return call()
    except httpx.ConnectError:
        raise UpstreamError(f"cannot reach Ollama at {url}: is it running?") from None
    except httpx.TimeoutException:
        raise UpstreamError(f"Ollama at {url} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"talking to Ollama at {url} failed: {type(exc).__name__}") from None


def missing_model_warning(url: str, name: str, timeout: float = 3.0) -> str | None:
    """Why the agent may not find the Ollama model ``name`` at ``url`` (``/api/tags``),
    or None when Ollama lists it. Never raises: activation warns, it does not fail,
    when Ollama is down (it may be started before the agent is)."""
    try:
        with httpx.Client(
            base_url=url, trust_env=False, follow_redirects=False, timeout=timeout
        ) as client:
            resp = client.get("/api/tags")
        listed = resp.json().get("models") if resp.is_success else None
    except httpx.HTTPError as exc:
        return (
            f"could not check that Ollama has {name}: nothing answered at {url} "
            f"({type(exc).__name__}); start Ollama before restarting the agent"
        )
    except (ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        return f"could not check that Ollama has {name}: {url} does not answer like Ollama"
    names = {m.get(k) for m in listed if isinstance(m, dict) for k in ("name", "model")}
    if {name, name if ":" in name else f"{name}:latest"} & names:
        return None
    return (
        f"Ollama at {url} has no model {name}: the agent will fail to load it; import it "
        "first (milady-lab models import-ollama ID) or name a model `ollama list` shows"
    )


def _version(client: httpx.Client) -> str:
    resp = client.get("/api/version")
    if not resp.is_success:
        _fail(resp, "answering /api/version")
    try:
        return str(resp.json().get("version", "?"))
    except (ValueError, AttributeError):
        raise UpstreamError("the server at this URL does not answer like Ollama") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _push_blob(client: httpx.Client, path: Path, hexdigest: str, report: _Reporter) -> None:
    """Upload one file unless Ollama has it already (blobs are content-addressed)."""
    blob = f"/api/blobs/sha256:{hexdigest}"
    head = client.head(blob)
    if head.status_code == 200:
        report("uploading", 95.0)
        return
    if head.status_code != 404:
        _fail(head, f"checking blob {path.name}")
    size = path.stat().st_size
    with path.open("rb") as f:
        resp = client.post(
            blob,
            content=_chunks(f, size, report),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
    if resp.status_code not in (200, 201):
        _fail(resp, f"uploading {path.name}")


def _chunks(f: IO[bytes], size: int, report: _Reporter) -> Iterator[bytes]:
    sent = 0
    while chunk := f.read(_CHUNK):
        sent += len(chunk)
        report("uploading", 60.0 + 35.0 * sent / max(size, 1))
        yield chunk


def _create(client: httpx.Client, request: JsonObject, mode: str) -> None:
    name = request["model"]
    with client.stream("POST", "/api/create", json=request) as resp:
        if not resp.is_success:
            resp.read()
            _fail(resp, f"creating {name}", adapter_hint=mode == "adapter")
        last: Any = None
        for line in resp.iter_lines():
            if not line.strip():
                continue
            try:
                last = json.loads(line)
            except ValueError:
                raise UpstreamError("Ollama answered create with a line that is not JSON") from None
            if isinstance(last, dict) and last.get("error"):
                raise UpstreamError(
                    f"Ollama could not create {name}: {_clean(last['error'])}"
                    + (_ADAPTER_HINT if mode == "adapter" else "")
                )
    if not (isinstance(last, dict) and last.get("status") == "success"):
        raise UpstreamError(f"Ollama's answer to create {name} ended without success")


_ADAPTER_HINT = (
    "; this Ollama may not accept LoRA adapters (0.34.1 removed them from its CLI): "
    "import with the default mode, which sends one self-contained GGUF model"
)


def _fail(resp: httpx.Response, what: str, *, adapter_hint: bool = False) -> NoReturn:
    if resp.is_redirect:
        raise UpstreamError(
            f"Ollama answered {what} with a redirect ({resp.status_code}); "
            "redirects are not followed"
        )
    message = ""
    try:
        obj = resp.json()
        if isinstance(obj, dict) and obj.get("error"):
            message = _clean(obj["error"])
    except ValueError:
        message = _clean(resp.text)
    hint = _ADAPTER_HINT if adapter_hint and 400 <= resp.status_code < 500 else ""
    raise UpstreamError(
        f"Ollama failed {what} (HTTP {resp.status_code})"
        + (f": {message}" if message else "")
        + hint
    )


def _clean(message: Any) -> str:
    """Ollama's message, one line, bounded, without control characters."""
    text = str(message)
    text = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text).strip()
    return text[:_MAX_MESSAGE] + ("…" if len(text) > _MAX_MESSAGE else "")
