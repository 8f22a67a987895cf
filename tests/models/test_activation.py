"""Activation: provider model rules, the agent config edit, one active model, races."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError, InputError
from milady_lab.models.handoff import activation
from milady_lab.models.handoff.activation import JsonStyle, activate, deactivate
from milady_lab.state import EvalStore, StateStore

from .conftest import insert_model as _insert_model
from .ollama_standin import OllamaStandIn

#: A stored benchmark that passes the gate: these tests are about the config edit.
BENCHED = {
    "modelId": "any",
    "scores": {"formatValid": 1.0, "actionAccuracy": 1.0},
    "baseline": {"formatValid": 1.0, "actionAccuracy": 1.0},
    "completedAt": 1,
}


def insert_model(store: StateStore, adapter: Path, base: Path, **extra: Any) -> dict[str, Any]:
    return _insert_model(store, adapter, base, **{"benchmark": BENCHED, **extra})


ORIGINAL = {
    "name": "Milady",
    "agents": {
        "defaults": {"model": {"primary": "openai/gpt-4o", "fallbacks": ["x"]}, "temp": 0.7}
    },
    "env": {"OPENAI_API_KEY": "sk-keep-me", "OLLAMA_MODEL": "old"},
    "plugins": ["a", "b"],
    "zeta": None,
    "émoji": "🦊",
}


@pytest.fixture(autouse=True)
def ollama_has(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Ollama activation asks (``/api/tags``): it has milady-v1 … milady-v4."""
    server = OllamaStandIn().start()
    server.bases.update({f"milady-v{i}": "llama" for i in range(1, 5)})
    monkeypatch.setattr(activation, "DEFAULT_OLLAMA_URL", server.url)
    yield server
    server.stop()


@pytest.fixture
def tiny_adapter(tmp_path: Path) -> Path:
    """Activation never reads the adapter: a path on record is enough (no model built)."""
    return tmp_path / "adapter"


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    return tmp_path / "base"


def _models(
    store: StateStore, tiny_adapter: Path, tiny_base: Path, n: int = 2
) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        rec = insert_model(store, tiny_adapter, tiny_base)
        store.update_model(rec["id"], ollamaName=f"milady-v{i + 1}", importedAt=1)
        out.append(store.get_model(rec["id"]))
    return out


def _active(store: StateStore) -> list[str]:
    return [m["id"] for m in store.list_models() if m["active"]]


def test_imported_model_sets_primary_and_env(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    settings.agent_config.parent.mkdir(parents=True)
    settings.agent_config.write_text(json.dumps(ORIGINAL, indent=2, ensure_ascii=False) + "\n")
    m1, _ = _models(store, tiny_adapter, tiny_base)
    body = activate(settings, store, m1, None)
    assert body.to_dict() == {"ok": True, "activeModel": "ollama/milady-v1"}
    cfg = json.loads(settings.agent_config.read_text())
    expected = json.loads(json.dumps(ORIGINAL))
    expected["agents"]["defaults"]["model"]["primary"] = "ollama/milady-v1"
    expected["env"].update(OLLAMA_MODEL="milady-v1", AGENT_LLM_PROVIDER="ollama")
    assert cfg == expected
    assert list(cfg) == list(ORIGINAL)  # key order kept
    assert list(cfg["env"]) == ["OPENAI_API_KEY", "OLLAMA_MODEL", "AGENT_LLM_PROVIDER"]
    rec = store.get_model(m1["id"])
    assert rec["active"] and rec["providerModel"] == "ollama/milady-v1" and rec["activatedAt"]
    assert [e["kind"] for e in store.events()][-1] == "model_activated"


def test_provider_model_wins(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    m = insert_model(store, tiny_adapter, tiny_base)  # not imported
    answer = activate(settings, store, m, {"providerModel": "openai/my-ft", "create": True})
    assert answer.to_dict() == {"ok": True, "activeModel": "openai/my-ft"}
    cfg = json.loads(settings.agent_config.read_text())
    assert cfg == {
        "agents": {"defaults": {"model": {"primary": "openai/my-ft"}}}
    }  # no env for non-Ollama


def test_not_imported_without_provider_is_409(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    m = insert_model(store, tiny_adapter, tiny_base)
    with pytest.raises(
        ConflictError, match="import the model into Ollama first or pass providerModel"
    ):
        activate(settings, store, m, {})
    assert not settings.agent_config.exists()
    assert _active(store) == []


@pytest.mark.parametrize(
    "body", [{"providerModel": ""}, {"providerModel": 3}, {"providerModel": "a\nb"}, {"x": 1}, "s"]
)
def test_bad_body_is_400(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, body: Any
) -> None:
    m = _models(store, tiny_adapter, tiny_base, 1)[0]
    with pytest.raises(InputError):
        activate(settings, store, m, body)
    assert not settings.agent_config.exists()


def test_exactly_one_active(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    models = _models(store, tiny_adapter, tiny_base, 3)
    for m in [*models, models[0]]:
        activate(settings, store, m, {"create": True})
        assert _active(store) == [m["id"]]
    assert json.loads(settings.agent_config.read_text())["env"]["OLLAMA_MODEL"] == "milady-v1"


def test_missing_file_created_0600_with_parent(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    path = settings.agent_config
    assert not path.parent.exists()
    activate(settings, store, _models(store, tiny_adapter, tiny_base, 1)[0], {"create": "true"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["env"]["AGENT_LLM_PROVIDER"] == "ollama"
    assert path.read_text().endswith("\n")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        '{"a": 1,}',
        "[1, 2]",
        '"just a string"',
        '{"agents": []}',
        '{"agents": {"defaults": "x"}}',
        '{"agents": {"defaults": {"model": "openai/gpt-4o"}}}',
        '{"env": ["OLLAMA_MODEL"]}',
        '{"env": null}',
    ],
)
def test_unusable_config_is_409_and_untouched(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, text: str
) -> None:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_text(text)
    os.chmod(path, 0o640)
    before = path.stat()
    m = _models(store, tiny_adapter, tiny_base, 1)[0]
    with pytest.raises(ConflictError) as info:
        activate(settings, store, m, None)
    assert str(path) in info.value.message and "untouched" in info.value.message
    assert path.read_text() == text
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (
        before.st_ino,
        before.st_mtime_ns,
        0o640,
    )
    assert _active(store) == []


def test_non_utf8_config_is_409(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConflictError, match="UTF-8"):
        activate(settings, store, _models(store, tiny_adapter, tiny_base, 1)[0], None)
    assert path.read_bytes() == b'{"a": "\xff"}'


def test_config_that_is_a_directory_is_409(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    settings.agent_config.mkdir(parents=True)
    with pytest.raises(ConflictError, match="cannot read"):
        activate(settings, store, _models(store, tiny_adapter, tiny_base, 1)[0], None)


_UNREADABLE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from milady_lab.errors import ConflictError
    from milady_lab.models.handoff.activation import update_agent_config
    try:
        update_agent_config(Path(sys.argv[1]), "ollama/x", "x")
    except ConflictError as exc:
        print(json.dumps({"status": exc.status, "message": exc.message}))
    """
)


def _drop_dac_capabilities() -> None:
    """In the child before exec: root without CAP_DAC_OVERRIDE/READ_SEARCH obeys file modes."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_permission_denied_is_409_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "milady.json"
    path.write_text('{"secret": true}\n')
    os.chmod(path, 0o000)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _UNREADABLE_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
            preexec_fn=_drop_dac_capabilities if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as exc:  # no CAP_SETPCAP in this sandbox
        pytest.skip(f"cannot drop privileges to test file modes: {exc}")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["status"] == 409 and "cannot read" in answer["message"]
    assert "untouched" in answer["message"]
    os.chmod(path, 0o600)
    assert path.read_text() == '{"secret": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["milady.json"]


@pytest.mark.parametrize(
    "dump",
    [
        lambda o: json.dumps(o, indent=2, ensure_ascii=False) + "\n",
        lambda o: json.dumps(o, indent=4, ensure_ascii=False),
        lambda o: json.dumps(o, indent="\t", ensure_ascii=False) + "\n",
        lambda o: json.dumps(o, separators=(",", ":"), ensure_ascii=False),
        lambda o: json.dumps(o) + "\n",
        lambda o: json.dumps(o, indent=2),
    ],
    ids=["indent2", "indent4-no-newline", "tab", "compact", "one-line-ascii", "indent2-ascii"],
)
def test_formatting_and_permissions_kept(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, dump: Any
) -> None:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_text(dump(ORIGINAL))
    os.chmod(path, 0o640)
    m = _models(store, tiny_adapter, tiny_base, 1)[0]
    activate(settings, store, m, None)
    expected = json.loads(json.dumps(ORIGINAL))
    expected["agents"]["defaults"]["model"]["primary"] = "ollama/milady-v1"
    expected["env"].update(OLLAMA_MODEL="milady-v1", AGENT_LLM_PROVIDER="ollama")
    assert path.read_text() == dump(expected)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_hand_edited_style_is_approximated() -> None:
    text = '{\n   "a" : 1,\n   "b": [1,2]\n}'
    style = JsonStyle.detect(text)
    assert style.indent == 3 and style.key_sep == " : " and not style.trailing_newline


def test_symlinked_config_stays_a_symlink(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, tmp_path: Path
) -> None:
    real = tmp_path / "dotfiles" / "milady.json"
    real.parent.mkdir()
    real.write_text("{}\n")
    settings.agent_config.parent.mkdir(parents=True)
    settings.agent_config.symlink_to(real)
    activate(settings, store, _models(store, tiny_adapter, tiny_base, 1)[0], None)
    assert settings.agent_config.is_symlink()
    assert (
        json.loads(real.read_text())["agents"]["defaults"]["model"]["primary"] == "ollama/milady-v1"
    )


def _check_consistent(settings: Settings, store: StateStore) -> None:
    active = [m for m in store.list_models() if m["active"]]
    assert len(active) == 1
    cfg = json.loads(settings.agent_config.read_text())
    assert cfg["agents"]["defaults"]["model"]["primary"] == active[0]["providerModel"]
    assert cfg["env"]["OLLAMA_MODEL"] == active[0]["ollamaName"]
    assert cfg["keep"] == "me"


def test_activation_race_threads(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    settings.agent_config.parent.mkdir(parents=True)
    settings.agent_config.write_text('{"keep": "me"}\n')
    models = _models(store, tiny_adapter, tiny_base, 4)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(models))

    def run(m: dict[str, Any]) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                activate(settings, store, m, None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    _check_consistent(settings, store)


def _activate_in_process(settings: Settings, model_id: str, rounds: int, start: Any) -> None:
    store = StateStore(settings.state_db)
    model = store.get_model(model_id)
    start.wait()
    for _ in range(rounds):
        activate(settings, store, model, None)
    store.close()


def test_activation_race_processes(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    settings.agent_config.parent.mkdir(parents=True)
    settings.agent_config.write_text('{"keep": "me"}\n')
    models = _models(store, tiny_adapter, tiny_base, 3)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_activate_in_process, args=(settings, m["id"], 4, start)) for m in models
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    _check_consistent(settings, store)
    assert len([e for e in store.events() if e["kind"] == "model_activated"]) == 12


# -- issue 25: activation that tells the truth -------------------------------------------------
def test_missing_config_is_refused_unless_create(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    m = _models(store, tiny_adapter, tiny_base, 1)[0]
    with pytest.raises(InputError) as err:
        activate(settings, store, m, None)
    assert str(settings.agent_config) in err.value.message and "create=true" in err.value.message
    assert not settings.agent_config.parent.exists()  # no folder, no file, no lock
    assert _active(store) == [] and EvalStore(store).activations() == []
    with pytest.raises(InputError, match="create must be true or false"):
        activate(settings, store, m, {"create": "perhaps"})
    assert activate(settings, store, m, {"create": True})["ok"] is True
    assert settings.agent_config.is_file()


INLINE = """{
  "name": "Milady",
  "agents": {"defaults": {"model": {"primary": "openai/gpt-4o", "fallbacks": ["x"]}}},
  "env": {"OPENAI_API_KEY": "sk-keep-me"},
  "plugins": [ "a",   "b" ],
  "nested": {
    "inline": {"a": 1, "b": [1, 2]},
    "n": 1.50
  }
}
"""


def test_inline_objects_and_everything_else_stay_as_written(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_text(INLINE)
    activate(settings, store, _models(store, tiny_adapter, tiny_base, 1)[0], None)
    expected = INLINE.replace('"openai/gpt-4o"', '"ollama/milady-v1"').replace(
        '"sk-keep-me"}',
        '"sk-keep-me", "OLLAMA_MODEL": "milady-v1", "AGENT_LLM_PROVIDER": "ollama"}',
    )
    assert path.read_text() == expected
    # A rollback after an outside edit puts back only the written keys, in place too.
    path.write_text(path.read_text().replace('"n": 1.50', '"n": 2.50'))
    assert deactivate(settings, store)["restored"] == "keys"
    assert path.read_text() == INLINE.replace('"n": 1.50', '"n": 2.50')


def test_missing_objects_are_added_in_the_files_layout(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_text('{\r\n\t"name": "Milady",\r\n\t"env": {}\r\n}')
    activate(settings, store, _models(store, tiny_adapter, tiny_base, 1)[0], None)
    assert path.read_bytes().decode() == (
        '{\r\n\t"name": "Milady",\r\n\t"env": {"OLLAMA_MODEL": "milady-v1", '
        '"AGENT_LLM_PROVIDER": "ollama"},\r\n\t"agents": {\r\n\t\t"defaults": {\r\n'
        '\t\t\t"model": {\r\n\t\t\t\t"primary": "ollama/milady-v1"\r\n\t\t\t}\r\n'
        "\t\t}\r\n\t}\r\n}"
    )


def test_no_lock_file_is_left_and_an_old_one_is_removed(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path
) -> None:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    (path.parent / "milady.json.lock").write_bytes(b"")  # left by an earlier version
    m = _models(store, tiny_adapter, tiny_base, 1)[0]
    activate(settings, store, m, None)
    assert sorted(p.name for p in path.parent.iterdir()) == ["milady.json"]
    path.write_text("{not json")
    with pytest.raises(ConflictError):  # an error inside the lock leaves nothing either
        activate(settings, store, m, None)
    assert sorted(p.name for p in path.parent.iterdir()) == ["milady.json"]


def test_ollama_model_missing_or_ollama_down_is_a_recorded_warning(
    settings: Settings,
    store: StateStore,
    tiny_adapter: Path,
    tiny_base: Path,
    ollama_has: OllamaStandIn,
) -> None:
    settings.agent_config.parent.mkdir(parents=True)
    settings.agent_config.write_text("{}\n")
    m = _models(store, tiny_adapter, tiny_base, 1)[0]
    assert "warnings" not in activate(settings, store, m, None)  # Ollama lists milady-v1
    body = activate(settings, store, m, {"providerModel": "ollama/never-imported"})
    assert body["activeModel"] == "ollama/never-imported"
    assert body["warnings"] == [
        f"Ollama at {ollama_has.url} has no model never-imported: the agent will fail to load "
        "it; import it first (milady-lab models import-ollama ID) or name a model `ollama list` "
        "shows"
    ]
    assert EvalStore(store).activations()[0]["warnings"] == body["warnings"]
    assert "warning: Ollama at" in store.events()[-1]["message"]
    down = activate(settings, store, m, {"ollamaUrl": "http://127.0.0.1:9"})
    assert down["warnings"][0].startswith("could not check that Ollama has milady-v1")
    assert EvalStore(store).activations()[0]["warnings"] == down["warnings"]
    with pytest.raises(InputError, match="loopback"):
        activate(settings, store, m, {"ollamaUrl": "http://example.com"})
    # A provider model outside Ollama is not Ollama's to check.
    assert "warnings" not in activate(settings, store, m, {"providerModel": "openai/x"})
