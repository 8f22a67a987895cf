"""Base model resolution: friendly names, folders, GGUF conversion cache, hub ids."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from milady_lab.errors import InputError
from milady_lab.training import base_models as bm


@pytest.fixture
def settings(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(cache=tmp_path / "cache")


@pytest.fixture
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    return hub


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the (20 s) real conversion by one that writes a config and counts calls."""
    calls: list[Path] = []

    def convert(gguf: Path, out_dir: Path) -> None:
        calls.append(gguf)
        time.sleep(0.2)  # long enough for a racing second caller to arrive
        (out_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))

    monkeypatch.setattr(bm, "convert_gguf", convert)
    return calls


def test_tables_are_consistent() -> None:
    assert bm.DEFAULT_MODEL in bm.FRIENDLY_MODELS
    assert set(bm.OLLAMA_NAMES) <= set(bm.FRIENDLY_MODELS)
    assert bm.FRIENDLY_MODELS["llama-3.2-3b"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert bm.OLLAMA_NAMES["llama-3.2-3b"] == "llama3.2:3b"


@pytest.mark.parametrize("name", ["", "  ", "no-such-model", "../../etc", "a/b/c"])
def test_unknown_names_are_input_errors(name: str, settings: SimpleNamespace) -> None:
    with pytest.raises(InputError):
        bm.resolve_base_model(name, settings)


def test_missing_hub_id_names_what_is_missing(
    settings: SimpleNamespace, empty_hub_cache: Path
) -> None:
    with pytest.raises(InputError, match="someone/not-cached-model"):
        bm.resolve_base_model("someone/not-cached-model", settings)
    with pytest.raises(InputError, match=r"meta-llama/Llama-3\.2-3B-Instruct") as err:
        bm.resolve_base_model("llama-3.2-3b", settings)
    assert "huggingface-cli download" in err.value.message


def test_cached_hub_id_resolves_to_its_snapshot(
    settings: SimpleNamespace, empty_hub_cache: Path
) -> None:
    repo = empty_hub_cache / "models--meta-llama--Llama-3.2-3B-Instruct"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    r = bm.resolve_base_model("llama-3.2-3b", settings)
    assert r.hf_path == snap.resolve()
    assert (r.hub_id, r.ollama_name) == ("meta-llama/Llama-3.2-3B-Instruct", "llama3.2:3b")
    r = bm.resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", settings)
    assert r.ollama_name == "llama3.2:3b"


def test_local_folder(tmp_path: Path, settings: SimpleNamespace) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(InputError, match=r"config\.json"):
        bm.resolve_base_model(str(folder), settings)
    (folder / "config.json").write_text("{}")
    r = bm.resolve_base_model(str(folder), settings)
    assert r.hf_path == folder.resolve() and r.hub_id is None


def test_gguf_is_converted_once_and_again_when_it_changes(
    tmp_path: Path, settings: SimpleNamespace, fake_convert: list[Path]
) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    first = bm.resolve_base_model(str(gguf), settings)
    second = bm.resolve_base_model(str(gguf), settings)
    assert first.hf_path == second.hf_path and len(fake_convert) == 1
    assert first.hf_path.parent == settings.cache / "models"
    assert not [p for p in first.hf_path.parent.iterdir() if p.name.startswith(".")]
    st = gguf.stat()
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = bm.resolve_base_model(str(gguf), settings)
    assert third.hf_path != first.hf_path and len(fake_convert) == 2
    with pytest.raises(InputError, match="not found"):
        bm.resolve_base_model(str(tmp_path / "missing.gguf"), settings)


def test_concurrent_resolves_convert_once(
    tmp_path: Path, settings: SimpleNamespace, fake_convert: list[Path]
) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(bm.resolve_base_model(str(gguf), settings).hf_path)
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_convert) == 1 and len(set(results)) == 1 and len(results) == 3


def test_failed_conversion_leaves_nothing(
    tmp_path: Path, settings: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(gguf: Path, out_dir: Path) -> None:
        (out_dir / "partial").write_text("x")
        raise InputError("cannot read GGUF")

    monkeypatch.setattr(bm, "convert_gguf", broken)
    gguf = tmp_path / "bad.gguf"
    gguf.write_bytes(b"nope")
    with pytest.raises(InputError):
        bm.resolve_base_model(str(gguf), settings)
    left = [p for p in (settings.cache / "models").iterdir() if not p.name.endswith(".lock")]
    assert left == []


@pytest.mark.slow
def test_builtin_smollm2_is_converted_and_cached(smollm2_dir: Path) -> None:
    """The real conversion (session fixture); resolving again is instant."""
    from transformers import AutoConfig, AutoTokenizer

    from milady_lab.config import Settings

    start = time.perf_counter()
    r = bm.resolve_base_model("SmolLM2-135M-Instruct", Settings.from_env())
    assert time.perf_counter() - start < 1.0
    assert r.hf_path == smollm2_dir and r.ollama_name == "smollm2:135m"
    assert AutoConfig.from_pretrained(str(r.hf_path)).model_type == "llama"
    tok = AutoTokenizer.from_pretrained(str(r.hf_path))
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert "quantization_config" not in json.loads((r.hf_path / "config.json").read_text())
