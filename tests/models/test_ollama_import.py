"""Import into Ollama, end to end against the stand-in server (real HTTP on loopback)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from milady_lab.errors import ConflictError, InputError, UpstreamError
from milady_lab.models.ollama import default_model_name, import_model
from milady_lab.state import StateStore

from .conftest import insert_model
from .ollama_standin import OllamaStandIn


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(store: StateStore, model: dict[str, Any]) -> None:
    after = store.get_model(model["id"])
    assert after == model
    assert not [e for e in store.events() if e["kind"] == "model_imported"]


def test_end_to_end(store: StateStore, model: dict[str, Any], ollama: OllamaStandIn) -> None:
    adapter = Path(model["adapterPath"])
    body = import_model(
        store,
        model,
        {"modelName": "milady-v1", "baseModel": "llama3.2:3b", "ollamaUrl": ollama.url},
    )
    files = {n: adapter / n for n in ("adapter_model.safetensors", "adapter_config.json")}
    digests = {n: _digest(p) for n, p in files.items()}

    # Blobs: HEAD then POST for each file, raw bytes, digest in the path.
    blob_calls = [(r.method, r.path) for r in ollama.requests if r.path.startswith("/api/blobs/")]
    assert blob_calls == [
        ("HEAD", f"/api/blobs/{digests['adapter_model.safetensors']}"),
        ("POST", f"/api/blobs/{digests['adapter_model.safetensors']}"),
        ("HEAD", f"/api/blobs/{digests['adapter_config.json']}"),
        ("POST", f"/api/blobs/{digests['adapter_config.json']}"),
    ]
    for n, p in files.items():
        assert ollama.blobs[digests[n]] == p.read_bytes()
    posts = [r for r in ollama.requests if r.method == "POST" and r.path.startswith("/api/blobs/")]
    assert all(r.headers["Content-Length"] == str(len(r.body)) for r in posts)

    # Create: exactly the current API's fields, nothing else (no modelfile).
    creates = [r for r in ollama.requests if r.path == "/api/create"]
    assert len(creates) == 1
    assert json.loads(creates[0].body) == {
        "model": "milady-v1",
        "from": "llama3.2:3b",
        "adapters": digests,
        "stream": True,
    }
    assert ollama.models["milady-v1"]["adapters"] == digests

    rec = store.get_model(model["id"])
    assert rec is not None
    assert body == {
        "model": {"id": model["id"], "ollamaName": "milady-v1", "importedAt": rec["importedAt"]}
    }
    assert rec["ollamaName"] == "milady-v1" and isinstance(rec["importedAt"], int)
    events = [e for e in store.events() if e["kind"] == "model_imported"]
    assert len(events) == 1 and events[0]["ollamaName"] == "milady-v1"


def test_existing_blobs_are_not_uploaded_again(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    body = {"modelName": "a", "baseModel": "llama3.2:3b", "ollamaUrl": ollama.url}
    import_model(store, model, body)
    ollama.requests.clear()
    import_model(store, model, {**body, "modelName": "b"})
    assert [r.method for r in ollama.requests if r.path.startswith("/api/blobs/")] == [
        "HEAD",
        "HEAD",
    ]
    assert set(ollama.models) == {"a", "b"}


def test_defaults_from_name_and_base_table(
    store: StateStore, tiny_adapter: Path, tiny_base: Path, ollama: OllamaStandIn
) -> None:
    model = insert_model(store, tiny_adapter, tiny_base, baseModel="smollm2-135m-instruct")
    body = import_model(store, model, {"ollamaUrl": ollama.url})
    assert body["model"]["ollamaName"] == "milady-tiny-v1"
    create = json.loads(next(r.body for r in ollama.requests if r.path == "/api/create"))
    assert create["model"] == "milady-tiny-v1" and create["from"] == "smollm2:135m"
    hub = insert_model(
        store, tiny_adapter, tiny_base, baseModel="HuggingFaceTB/SmolLM2-360M-Instruct"
    )
    import_model(store, hub, {"ollamaUrl": ollama.url})
    create = json.loads([r.body for r in ollama.requests if r.path == "/api/create"][-1])
    assert create["from"] == "smollm2:360m"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Milady Tiny v1", "milady-tiny-v1"),
        ("..//", "milady-m1"),
        ("a:b/c", "a-b-c"),
        ("x" * 300, "x" * 80),
    ],
)
def test_default_model_name(name: str, expected: str) -> None:
    assert default_model_name({"id": "m1", "name": name}) == expected


def test_unknown_base_needs_base_model(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    with pytest.raises(InputError, match="pass baseModel"):
        import_model(store, model, {"ollamaUrl": ollama.url})
    assert ollama.requests == []
    _unchanged(store, model)


@pytest.mark.parametrize(
    "body",
    [
        {"modelName": "bad name"},
        {"modelName": "../x"},
        {"modelName": ""},
        {"modelName": 5},
        {"baseModel": "bad base"},
        {"unknown": 1},
        [],
        {"ollamaUrl": "http://10.0.0.1:11434"},
        {"ollamaUrl": "http://localhost.:11434"},
    ],
)
def test_bad_input_is_400_before_any_request(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn, body: Any
) -> None:
    if isinstance(body, dict):
        body = {"baseModel": "llama3.2:3b", **body}
    with pytest.raises(InputError):
        import_model(store, model, body)
    assert ollama.requests == []
    _unchanged(store, model)


def test_userinfo_url_never_contacted(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    url = ollama.url.replace("http://", "http://user:token@")
    with pytest.raises(InputError) as info:
        import_model(store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": url})
    assert "token" not in info.value.message
    assert ollama.requests == []


def test_create_error_is_502_with_ollamas_message(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.fail_create = (404, "model 'llama3.2:3b' not found, try pulling it first")
    with pytest.raises(UpstreamError) as info:
        import_model(store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
    assert info.value.status == 502
    assert "model 'llama3.2:3b' not found, try pulling it first" in info.value.message
    _unchanged(store, model)


def test_error_line_in_stream_is_502(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.stream_error = "unsupported architecture"
    with pytest.raises(UpstreamError, match="unsupported architecture"):
        import_model(store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
    _unchanged(store, model)


def test_stream_without_success_is_502(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.truncate_stream = True
    with pytest.raises(UpstreamError, match="without success"):
        import_model(store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
    _unchanged(store, model)


def test_missing_base_in_standin_is_reported(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    # The stand-in itself enforces the documented create rules.
    r = httpx.post(ollama.url + "/api/create", json={"model": "x"}, trust_env=False)
    assert r.status_code == 400 and "from" in r.json()["error"]
    r = httpx.post(
        ollama.url + "/api/create",
        json={"model": "x", "from": "b", "adapters": {"a.safetensors": "sha256:" + "0" * 64}},
        trust_env=False,
    )
    assert r.status_code == 400 and "not found" in r.json()["error"]
    r = httpx.post(ollama.url + "/api/blobs/sha256:" + "0" * 64, content=b"abc", trust_env=False)
    assert r.status_code == 400 and "digest" in r.json()["error"]
    data = b"x"
    good = hashlib.sha256(data).hexdigest()
    assert (
        httpx.post(
            f"{ollama.url}/api/blobs/sha256:{good}", content=data, trust_env=False
        ).status_code
        == 201
    )
    r = httpx.post(
        ollama.url + "/api/create",
        json={
            "model": "x",
            "from": "b",
            "adapters": {"adapter_model.safetensors": f"sha256:{good}"},
        },
        trust_env=False,
    )
    assert r.status_code == 400 and "adapter_config.json" in r.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_is_502_naming_the_url(store: StateStore, model: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(UpstreamError) as info:
        import_model(store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": url})
    assert url in info.value.message and info.value.status == 502
    _unchanged(store, model)


def test_redirect_is_refused_and_target_never_contacted(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    target = OllamaStandIn().start()
    try:
        ollama.redirect_to = target.url
        with pytest.raises(UpstreamError, match="redirect"):
            import_model(store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
        assert target.requests == []
        assert len(ollama.requests) == 1
    finally:
        target.stop()
    _unchanged(store, model)


def test_redirect_on_create_is_refused(
    store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    target = OllamaStandIn().start()
    try:
        # Blobs are already there (HEAD 200 is checked first, so redirect only create).
        import_model(store, model, {"modelName": "warm", "baseModel": "b", "ollamaUrl": ollama.url})
        ollama.redirect_to = target.url
        before = store.get_model(model["id"])
        with pytest.raises(UpstreamError, match="redirect"):
            import_model(
                store, model, {"modelName": "other", "baseModel": "b", "ollamaUrl": ollama.url}
            )
        assert target.requests == []
        assert store.get_model(model["id"]) == before
    finally:
        target.stop()


@pytest.mark.parametrize("upper", [True, False])
def test_proxy_variables_are_ignored(
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    monkeypatch: pytest.MonkeyPatch,
    upper: bool,
) -> None:
    proxy = OllamaStandIn().start()  # records anything sent through it
    try:
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            name = var if upper else var.lower()
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        import_model(store, model, {"modelName": "p", "baseModel": "b", "ollamaUrl": ollama.url})
        assert proxy.requests == []
        assert "p" in ollama.models
    finally:
        proxy.stop()


def test_missing_adapter_files_is_409(
    store: StateStore, tiny_base: Path, tmp_path: Path, ollama: OllamaStandIn
) -> None:
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    model = insert_model(store, empty, tiny_base)
    with pytest.raises(ConflictError, match=r"adapter_config\.json"):
        import_model(store, model, {"baseModel": "b", "ollamaUrl": ollama.url})
    assert ollama.requests == []
