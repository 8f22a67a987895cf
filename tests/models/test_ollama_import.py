"""Import into Ollama, end to end against the stand-in server (real HTTP on loopback)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError, InputError, UpstreamError
from milady_lab.models.handoff.ollama import default_model_name, import_model
from milady_lab.state import StateStore

from .conftest import insert_model
from .ollama_standin import OllamaStandIn


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(store: StateStore, model: dict[str, Any]) -> None:
    after = store.get_model(model["id"])
    assert after == model
    assert not [e for e in store.events() if e["kind"] == "model_imported"]


def _creates(ollama: OllamaStandIn) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in ollama.requests if r.path == "/api/create"]


def _gguf_fields(data: bytes, tmp_path: Path) -> dict[str, Any]:
    import gguf

    path = tmp_path / "uploaded.gguf"
    path.write_bytes(data)
    reader = gguf.GGUFReader(str(path))
    fields = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("tok")}
    fields["tensor_types"] = {t.name: t.tensor_type.name for t in reader.tensors}
    return fields


def test_default_import_sends_one_gguf_model_with_template_and_stop(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, float]] = []
    body = import_model(
        settings,
        store,
        model,
        {"modelName": "milady-v1", "ollamaUrl": ollama.url},
        progress=lambda phase, pct: seen.append((phase, pct)),
    )
    # One blob, HEAD then POST, after asking Ollama's version; then one create.
    calls = [(r.method, r.path) for r in ollama.requests]
    digest = body["import"]["digest"]
    assert calls == [
        ("GET", "/api/version"),
        ("HEAD", f"/api/blobs/{digest}"),
        ("POST", f"/api/blobs/{digest}"),
        ("POST", "/api/create"),
    ]
    blob = ollama.blobs[digest]
    assert blob[:4] == b"GGUF" and len(blob) == body["import"]["bytes"]
    fields = _gguf_fields(blob, tmp_path)
    assert fields["general.architecture"] == "llama"
    assert fields.get("general.type", "model") == "model"
    assert fields["tensor_types"]["blk.0.attn_q.weight"] == "F16"  # the default quantization

    (create,) = _creates(ollama)
    assert set(create) == {"model", "files", "template", "parameters", "stream"}
    assert create["files"] == {"milady-v1.gguf": digest}
    assert create["parameters"] == {"stop": ["<|im_start|>", "<|im_end|>"]}
    assert ".Messages" in create["template"] and "<|im_start|>" in create["template"]
    assert not any(b"safetensors" in r.body or "safetensors" in r.path for r in ollama.requests)

    rec = store.get_model(model["id"])
    assert rec is not None
    assert body["model"].to_dict() == {
        "id": model["id"],
        "ollamaName": "milady-v1",
        "importedAt": rec["importedAt"],
    }
    assert body["import"].to_dict() == {
        "mode": "model",
        "quantization": "f16",
        "bytes": len(blob),
        "digest": digest,
    }
    assert rec["ollamaName"] == "milady-v1" and isinstance(rec["importedAt"], int)
    events = [e for e in store.events() if e["kind"] == "model_imported"]
    assert len(events) == 1 and events[0]["ollamaName"] == "milady-v1"
    # Progress: the caller's callback and the event log (SSE) both reach 100 %.
    assert seen[-1] == ("done", 100.0)
    assert [p for _, p in seen] == sorted(p for _, p in seen)
    steps = [e["percent"] for e in store.events() if e["kind"] == "model_import_progress"]
    assert steps == sorted(steps) and steps[-1] == 100.0 and len(steps) >= 3
    # The temporary GGUF is gone.
    assert not list(settings.home.glob(".ollama-import-*"))


@pytest.mark.parametrize(("quantization", "kind"), [("q8_0", "Q8_0"), ("f32", "F32")])
def test_quantization(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    tmp_path: Path,
    quantization: str,
    kind: str,
) -> None:
    body = import_model(
        settings, store, model, {"quantization": quantization, "ollamaUrl": ollama.url}
    )
    fields = _gguf_fields(ollama.blobs[body["import"]["digest"]], tmp_path)
    assert fields["tensor_types"]["blk.0.attn_q.weight"] == kind
    assert fields["tensor_types"]["blk.0.attn_norm.weight"] == "F32"
    assert body["import"]["quantization"] == quantization


def test_adapter_mode_sends_one_gguf_lora(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    tmp_path: Path,
) -> None:
    body = import_model(
        settings,
        store,
        model,
        {"mode": "adapter", "baseModel": "smollm2:135m", "ollamaUrl": ollama.url},
    )
    (create,) = _creates(ollama)
    digest = body["import"]["digest"]
    name = default_model_name(model)
    assert create == {
        "model": name,
        "from": "smollm2:135m",
        "adapters": {f"{name}-lora.gguf": digest},
        "stream": True,
    }
    fields = _gguf_fields(ollama.blobs[digest], tmp_path)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == pytest.approx(16.0)
    assert fields["tensor_types"]["blk.0.attn_q.weight.lora_a"] == "F16"
    assert body["import"]["mode"] == "adapter"


def test_adapter_refused_by_ollama_is_502_suggesting_the_default_mode(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.accept_adapters = False
    with pytest.raises(UpstreamError) as info:
        import_model(
            settings,
            store,
            model,
            {"mode": "adapter", "baseModel": "smollm2:135m", "ollamaUrl": ollama.url},
        )
    assert info.value.status == 502
    assert "creating a model from an adapter is not supported" in info.value.message
    assert "default mode" in info.value.message
    _unchanged(store, model)


def test_the_old_safetensors_upload_is_refused_like_ollama_refuses_it(
    tiny_adapter: Path, ollama: OllamaStandIn
) -> None:
    """What earlier versions sent: PEFT safetensors + a config with a float lora_alpha."""
    config = json.loads((tiny_adapter / "adapter_config.json").read_text())
    config["lora_alpha"] = 16.0  # what the training backends write
    files = {
        "adapter_model.safetensors": (tiny_adapter / "adapter_model.safetensors").read_bytes(),
        "adapter_config.json": json.dumps(config).encode(),
    }
    digests = {}
    for name, data in files.items():
        digests[name] = "sha256:" + hashlib.sha256(data).hexdigest()
        r = httpx.post(f"{ollama.url}/api/blobs/{digests[name]}", content=data, trust_env=False)
        assert r.status_code == 201
    old = {"model": "milady-v1", "from": "smollm2:135m", "adapters": digests, "stream": False}
    r = httpx.post(ollama.url + "/api/create", json=old, trust_env=False)
    assert r.status_code == 400
    assert r.json()["error"] == (
        "json: cannot unmarshal number 16.0 into Go struct field .lora_alpha of type uint32"
    )
    # Even with an integer alpha, Ollama converts safetensors adapters only onto llama/gemma2.
    config["lora_alpha"] = 16
    data = json.dumps(config).encode()
    digests["adapter_config.json"] = "sha256:" + hashlib.sha256(data).hexdigest()
    httpx.post(f"{ollama.url}/api/blobs/{digests['adapter_config.json']}", content=data)
    r = httpx.post(
        ollama.url + "/api/create",
        json={**old, "from": "qwen2.5:0.5b", "adapters": digests},
        trust_env=False,
    )
    assert r.status_code == 400 and "unsupported architecture" in r.json()["error"]
    assert "milady-v1" not in ollama.models


def test_existing_blobs_are_not_uploaded_again(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    body = {"modelName": "a", "ollamaUrl": ollama.url}
    import_model(settings, store, model, body)
    ollama.requests.clear()
    import_model(settings, store, model, {**body, "modelName": "b"})
    assert [r.method for r in ollama.requests if r.path.startswith("/api/blobs/")] == ["HEAD"]
    assert set(ollama.models) == {"a", "b"}


def test_default_names_from_the_model_and_the_base_table(
    settings: Settings,
    store: StateStore,
    tiny_adapter: Path,
    tiny_base: Path,
    ollama: OllamaStandIn,
) -> None:
    model = insert_model(store, tiny_adapter, tiny_base, baseModel="smollm2-135m-instruct")
    body = import_model(settings, store, model, {"mode": "adapter", "ollamaUrl": ollama.url})
    assert body["model"]["ollamaName"] == "milady-tiny-v1"
    create = _creates(ollama)[-1]
    assert create["model"] == "milady-tiny-v1" and create["from"] == "smollm2:135m"
    hub = insert_model(
        store, tiny_adapter, tiny_base, baseModel="HuggingFaceTB/SmolLM2-360M-Instruct"
    )
    import_model(settings, store, hub, {"mode": "adapter", "ollamaUrl": ollama.url})
    assert _creates(ollama)[-1]["from"] == "smollm2:360m"


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


def test_adapter_mode_with_an_unknown_base_needs_base_model(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    with pytest.raises(InputError, match="pass baseModel"):
        import_model(settings, store, model, {"mode": "adapter", "ollamaUrl": ollama.url})
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
        {"mode": "safetensors"},
        {"quantization": "q4_0"},
        {"mode": "adapter", "quantization": "q8_0"},
        {"quantization": 8},
    ],
)
def test_bad_input_is_400_before_any_request(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn, body: Any
) -> None:
    if isinstance(body, dict):
        body = {"baseModel": "llama3.2:3b", **body}
    with pytest.raises(InputError):
        import_model(settings, store, model, body)
    assert ollama.requests == []
    _unchanged(store, model)


def test_userinfo_url_never_contacted(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    url = ollama.url.replace("http://", "http://user:token@")
    with pytest.raises(InputError) as info:
        import_model(settings, store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": url})
    assert "token" not in info.value.message
    assert ollama.requests == []


def test_create_error_is_502_with_ollamas_message(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.fail_create = (404, "model 'llama3.2:3b' not found, try pulling it first")
    with pytest.raises(UpstreamError) as info:
        import_model(settings, store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
    assert info.value.status == 502
    assert "model 'llama3.2:3b' not found, try pulling it first" in info.value.message
    _unchanged(store, model)


def test_error_line_in_stream_is_502(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.stream_error = "unsupported architecture"
    with pytest.raises(UpstreamError, match="unsupported architecture"):
        import_model(settings, store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
    _unchanged(store, model)


def test_stream_without_success_is_502(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    ollama.truncate_stream = True
    with pytest.raises(UpstreamError, match="without success"):
        import_model(settings, store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url})
    _unchanged(store, model)


def test_missing_base_in_standin_is_reported(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
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
            "from": "smollm2:135m",
            "adapters": {"adapter_model.safetensors": f"sha256:{good}"},
        },
        trust_env=False,
    )
    assert r.status_code == 400 and "adapter_config.json" in r.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_is_502_naming_the_url(
    settings: Settings, store: StateStore, model: dict[str, Any]
) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(UpstreamError) as info:
        import_model(settings, store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": url})
    assert url in info.value.message and info.value.status == 502
    _unchanged(store, model)


def test_redirect_is_refused_and_target_never_contacted(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    target = OllamaStandIn().start()
    try:
        ollama.redirect_to = target.url
        with pytest.raises(UpstreamError, match="redirect"):
            import_model(
                settings, store, model, {"baseModel": "llama3.2:3b", "ollamaUrl": ollama.url}
            )
        assert target.requests == []
        assert len(ollama.requests) == 1
    finally:
        target.stop()
    _unchanged(store, model)


def test_redirect_on_create_is_refused(
    settings: Settings, store: StateStore, model: dict[str, Any], ollama: OllamaStandIn
) -> None:
    target = OllamaStandIn().start()
    try:
        # Blobs are already there; the redirect now meets the first request of the next import.
        import_model(
            settings, store, model, {"modelName": "warm", "baseModel": "b", "ollamaUrl": ollama.url}
        )
        ollama.redirect_to = target.url
        before = store.get_model(model["id"])
        with pytest.raises(UpstreamError, match="redirect"):
            import_model(
                settings,
                store,
                model,
                {"modelName": "other", "baseModel": "b", "ollamaUrl": ollama.url},
            )
        assert target.requests == []
        assert store.get_model(model["id"]) == before
    finally:
        target.stop()


@pytest.mark.parametrize("upper", [True, False])
def test_proxy_variables_are_ignored(
    settings: Settings,
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
        import_model(
            settings, store, model, {"modelName": "p", "baseModel": "b", "ollamaUrl": ollama.url}
        )
        assert proxy.requests == []
        assert "p" in ollama.models
    finally:
        proxy.stop()


def test_missing_adapter_files_is_409(
    settings: Settings, store: StateStore, tiny_base: Path, tmp_path: Path, ollama: OllamaStandIn
) -> None:
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    model = insert_model(store, empty, tiny_base)
    with pytest.raises(ConflictError, match=r"adapter_config\.json"):
        import_model(settings, store, model, {"baseModel": "b", "ollamaUrl": ollama.url})
    assert ollama.requests == []
