"""Import a fine-tuned adapter into Ollama over its current HTTP API.

Ollama ≥ 0.5.5 builds a model from blobs: each adapter file is uploaded once
(``HEAD`` then ``POST /api/blobs/sha256:<hex>``), then ``POST /api/create`` names the
base model (``from``) and the adapter blobs (``adapters``, ``adapter_config.json``
included). The old ``modelfile`` field is silently ignored by current Ollama, so it is
never used. The create answer is a stream of JSON status lines; only a final
``{"status": "success"}`` counts as success.

Safety: the URL must pass the loopback rule before any connection; requests go out
with ``trust_env=False`` (a proxy variable would route loopback traffic elsewhere) and
``follow_redirects=False`` (a redirect answer is an error, never followed). The model
record changes only after Ollama reported success.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import httpx

from .. import validation as v
from ..errors import ConflictError, InputError, UpstreamError
from ..state import StateStore, now_ms
from .loopback import check_loopback_url

DEFAULT_URL = "http://localhost:11434"
#: The PEFT files Ollama needs, in upload order.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
#: Ollama model names: optional namespace, name, optional tag.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
_OLLAMA_NAME = re.compile(rf"(?:{_PART}/)?{_PART}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,79}})?")
#: Base models Ollama pulls may carry a registry host and namespaces.
_OLLAMA_BASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}")
_CHUNK = 1 << 20
_MAX_MESSAGE = 500


def import_model(store: StateStore, model: Mapping[str, Any], body: Any = None) -> dict[str, Any]:
    """Upload the model's adapter to Ollama and create ``modelName`` from it."""
    fields = v.body_object(body, ("modelName", "baseModel", "ollamaUrl"))
    name = v.text(fields.get("modelName"), "modelName", max_length=200) or default_model_name(model)
    if not _OLLAMA_NAME.fullmatch(name):
        raise InputError(
            "modelName must be an Ollama model name: letters, digits, '.', '_' and '-', "
            "an optional 'namespace/' and ':tag'"
        )
    base = v.text(fields.get("baseModel"), "baseModel", max_length=200)
    if base is None:
        base = default_ollama_base(model)
        if base is None:
            raise InputError(
                f"no Ollama name is known for the base model {str(model.get('baseModel'))[:80]!r}; "
                "pass baseModel (the base as Ollama names it, e.g. llama3.2:3b)"
            )
    if not _OLLAMA_BASE.fullmatch(base):
        raise InputError("baseModel must be an Ollama model name such as llama3.2:3b")
    url = check_loopback_url(
        DEFAULT_URL if fields.get("ollamaUrl") is None else fields["ollamaUrl"]
    )

    files = _adapter_files(model)
    digests = {path.name: _sha256(path) for path in files}
    with httpx.Client(
        base_url=url,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(30.0, read=600.0),
    ) as client:
        try:
            for path in files:
                _push_blob(client, path, digests[path.name])
            _create(client, name, base, digests)
        except httpx.ConnectError:
            raise UpstreamError(f"cannot reach Ollama at {url}: is it running?") from None
        except httpx.TimeoutException:
            raise UpstreamError(f"Ollama at {url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"talking to Ollama at {url} failed: {type(exc).__name__}"
            ) from None

    imported_at = now_ms()
    with store.transaction() as conn:
        store.update_model(model["id"], conn, ollamaName=name, importedAt=imported_at)
        store.emit(
            "model_imported",
            f"model {model['id']} imported into Ollama as {name}",
            conn,
            modelId=model["id"],
            ollamaName=name,
            baseModel=base,
        )
    return {"model": {"id": model["id"], "ollamaName": name, "importedAt": imported_at}}


def default_model_name(model: Mapping[str, Any]) -> str:
    """An Ollama-safe name from the model's own name (lower case, '-' for anything odd)."""
    raw = str(model.get("name") or "").lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", raw).strip("-._")[:80].rstrip("-._")
    return name or f"milady-{model['id']}".lower()[:80]


def default_ollama_base(model: Mapping[str, Any]) -> str | None:
    """The Ollama name of the model's base from the base-model table (None when unknown).

    The table (``training.base_models.OLLAMA_NAMES``) is keyed by friendly name; a hub id
    is mapped through ``FRIENDLY_MODELS``.
    """
    from ..training.base_models import FRIENDLY_MODELS, OLLAMA_NAMES

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


def _adapter_files(model: Mapping[str, Any]) -> list[Path]:
    folder = Path(str(model.get("adapterPath") or ""))
    files = [folder / name for name in ADAPTER_FILES]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise ConflictError(
            f"model {model['id']} has no {', '.join(missing)} in its adapter folder; "
            "Ollama needs a PEFT adapter"
        )
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _push_blob(client: httpx.Client, path: Path, hexdigest: str) -> None:
    """Upload one file unless Ollama has it already (blobs are content-addressed)."""
    blob = f"/api/blobs/sha256:{hexdigest}"
    head = client.head(blob)
    if head.status_code == 200:
        return
    if head.status_code != 404:
        _fail(head, f"checking blob {path.name}")
    size = path.stat().st_size
    with path.open("rb") as f:
        resp = client.post(
            blob,
            content=_chunks(f),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
    if resp.status_code not in (200, 201):
        _fail(resp, f"uploading {path.name}")


def _chunks(f: Any):
    while chunk := f.read(_CHUNK):
        yield chunk


def _create(client: httpx.Client, name: str, base: str, digests: Mapping[str, str]) -> None:
    request = {
        "model": name,
        "from": base,
        "adapters": {filename: f"sha256:{hexdigest}" for filename, hexdigest in digests.items()},
        "stream": True,
    }
    with client.stream("POST", "/api/create", json=request) as resp:
        if not resp.is_success:
            resp.read()
            _fail(resp, f"creating {name}")
        last: Any = None
        for line in resp.iter_lines():
            if not line.strip():
                continue
            try:
                last = json.loads(line)
            except ValueError:
                raise UpstreamError("Ollama answered create with a line that is not JSON") from None
            if isinstance(last, dict) and last.get("error"):
                raise UpstreamError(f"Ollama could not create {name}: {_clean(last['error'])}")
    if not (isinstance(last, dict) and last.get("status") == "success"):
        raise UpstreamError(f"Ollama's answer to create {name} ended without success")


def _fail(resp: httpx.Response, what: str) -> NoReturn:
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
    raise UpstreamError(
        f"Ollama failed {what} (HTTP {resp.status_code})" + (f": {message}" if message else "")
    )


def _clean(message: Any) -> str:
    """Ollama's message, one line, bounded, without control characters."""
    text = str(message)
    text = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text).strip()
    return text[:_MAX_MESSAGE] + ("…" if len(text) > _MAX_MESSAGE else "")
