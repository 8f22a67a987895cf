"""The activation gate (409 naming the score that fell, ``force``) and rollback (the agent
config back byte for byte, permissions too; kill -9 mid-rollback leaves old or new)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError
from milady_lab.models.evaluation import scores
from milady_lab.models.evaluation.benchmark import add_preference, report
from milady_lab.models.handoff.activation import activate, deactivate
from milady_lab.state import EvalStore, StateStore

from .conftest import insert_model

ORIGINAL = {
    "agents": {"defaults": {"model": {"primary": "openai/gpt-4o"}, "temp": 0.7}},
    "env": {"OPENAI_API_KEY": "sk-keep"},
    "unrelated": [1, 2, {"x": None}],
}
RAW = json.dumps(ORIGINAL, indent=3) + "\n"


def _pe(valid: list[bool]) -> dict[str, Any]:
    n = len(valid)
    return scores.PerExample(
        [1.0] * n, [2] * n, [0.5] * n, [0.5] * n, list(valid), list(valid)
    ).as_dict()


def _bench(model_id: str, tuned: list[bool], base: list[bool]) -> dict[str, Any]:
    body = report({"scores": _pe(tuned), "baseline": _pe(base)}, [""] * len(tuned), 0)
    return {"modelId": model_id, "completedAt": 1, "examples": len(tuned), **body}


def _model(store: StateStore, tmp_path: Path, name: str, bench: Any) -> dict[str, Any]:
    m = insert_model(store, tmp_path / "a", tmp_path / "b")
    store.update_model(m["id"], ollamaName=name, benchmark=bench and {**bench, "modelId": m["id"]})
    return store.get_model(m["id"])


@pytest.fixture
def config(settings: Settings) -> Path:
    path = settings.agent_config
    path.parent.mkdir(parents=True)
    path.write_text(RAW)
    os.chmod(path, 0o640)
    return path


def test_a_purpose_that_fell_is_refused_though_the_pooled_scores_rose(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path
) -> None:
    # 30 should_respond examples the model now gets right, 12 replies whose format it broke:
    # pooled formatValid rose from 12/42 to 30/42, the replies fell from 12/12 to 0/12.
    tuned = [True] * 30 + [False] * 12
    base = [False] * 30 + [True] * 12
    purposes = ["should_respond"] * 30 + ["response"] * 12
    body = report({"scores": _pe(tuned), "baseline": _pe(base)}, purposes, 0)
    bench = {"modelId": "x", "completedAt": 1, "examples": 42, **body}
    pooled = bench["differences"]["baseline"]["formatValid"]
    assert pooled["low"] > 0  # the pooled gate alone would let it through
    broke = _model(store, tmp_path, "broke", bench)
    with pytest.raises(ConflictError) as err:
        activate(settings, store, broke, None)
    msg = err.value.message
    assert "the base model on formatValid for purpose response by 1.00" in msg
    assert "should_respond" not in msg and config.read_text() == RAW
    # A purpose with too few examples to judge is not gated on its own.
    few = report({"scores": _pe(tuned[:35]), "baseline": _pe(base[:35])}, purposes[:35], 0)
    assert few["byPurpose"]["response"]["counts"]["formatValid"] == 5
    fine = _model(store, tmp_path, "few", {"modelId": "y", "completedAt": 1, **few})
    assert activate(settings, store, fine, None)["ok"] is True


def test_worse_than_base_is_refused_with_the_reason_and_force_passes(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path
) -> None:
    worse = _model(
        store, tmp_path, "worse", _bench("x", [i % 2 == 0 for i in range(40)], [True] * 40)
    )
    with pytest.raises(ConflictError) as err:
        activate(settings, store, worse, None)
    msg = err.value.message
    assert "the base model on formatValid by 0.50" in msg and "actionAccuracy" in msg
    assert "force" in msg
    assert config.read_text() == RAW and not store.get_model(worse["id"])["active"]
    assert activate(settings, store, worse, {"force": True})["ok"] is True
    hist = EvalStore(store).activations()
    assert hist[0]["forced"] is True and hist[0]["modelId"] == worse["id"]
    assert "previousConfig" not in hist[0]  # the old config (secrets) is never listed


def test_noise_is_not_a_fall_and_worse_than_active_is(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path
) -> None:
    good = _model(store, tmp_path, "good", _bench("x", [True] * 40, [i != 0 for i in range(40)]))
    activate(settings, store, good, None)  # one example apart from the base: noise
    worse = _model(
        store, tmp_path, "worse", _bench("x", [i % 3 != 0 for i in range(40)], [False] * 40)
    )
    good_bench = dict(store.get_model(good["id"])["benchmark"])
    good_bench["intervals"] = {
        "scores": scores.interval(scores.PerExample.from_dict(_pe([True] * 40)))
    }
    store.update_model(good["id"], benchmark=good_bench)
    with pytest.raises(ConflictError, match=f"the active model {good['id']} on formatValid"):
        activate(settings, store, worse, None)


def test_a_fall_of_preference_accuracy_is_refused_too(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path
) -> None:
    """Issue 27: a model that prefers the rejected replies more often than the base did
    is refused, though its format and actions held."""
    bench = _bench("x", [True] * 40, [True] * 40)
    add_preference(bench, {"scores": [i % 4 == 0 for i in range(40)], "baseline": [True] * 40}, 0)
    worse = _model(store, tmp_path, "prefers-rejected", bench)
    with pytest.raises(ConflictError, match=r"the base model on preferenceAccuracy by 0\.75"):
        activate(settings, store, worse, None)
    assert config.read_text() == RAW
    same = dict(bench)
    add_preference(same, {"scores": [True] * 40, "baseline": [True] * 40}, 0)
    assert activate(settings, store, _model(store, tmp_path, "same", same), None)["ok"] is True


def test_never_benchmarked_is_409_saying_how_to_benchmark_and_runs_nothing(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    from milady_lab.models.evaluation import benchmark

    def no_benchmark(*_a: Any, **_k: Any) -> None:
        raise AssertionError("activation must never run a benchmark")

    monkeypatch.setattr(benchmark, "run_benchmark", no_benchmark)
    m = _model(store, tmp_path, "fresh", None)
    t0 = time.monotonic()
    with pytest.raises(ConflictError) as err:
        activate(settings, store, m, None)
    assert time.monotonic() - t0 < 5
    msg = err.value.message
    assert "has not been benchmarked" in msg and f"milady-lab models benchmark {m['id']}" in msg
    assert f"POST /api/training/models/{m['id']}/benchmark" in msg and "force=true" in msg
    assert config.read_text() == RAW and not store.get_model(m["id"])["active"]
    assert activate(settings, store, m, {"force": True})["ok"] is True


def test_rollback_restores_bytes_and_mode_and_the_previous_active(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path
) -> None:
    ok = _bench("x", [True] * 10, [True] * 10)
    a, b = _model(store, tmp_path, "a", ok), _model(store, tmp_path, "b", ok)
    activate(settings, store, a, None)
    after_a = config.read_bytes()
    activate(settings, store, b, None)
    assert json.loads(config.read_text())["env"]["OLLAMA_MODEL"] == "b"
    body = deactivate(settings, store)
    assert body == {"ok": True, "deactivatedModel": b["id"], "activeModelId": a["id"],
                    "restored": "exact"}  # fmt: skip
    assert config.read_bytes() == after_a
    assert deactivate(settings, store)["activeModelId"] is None
    assert config.read_bytes() == RAW.encode() and stat.S_IMODE(config.stat().st_mode) == 0o640
    assert [m["id"] for m in store.list_models() if m["active"]] == []
    with pytest.raises(ConflictError, match="no activation to roll back"):
        deactivate(settings, store)
    kinds = [e["kind"] for e in store.events()]
    assert kinds.count("model_deactivated") == 2


def test_rollback_after_an_outside_edit_puts_back_only_the_written_keys(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path
) -> None:
    m = _model(store, tmp_path, "a", _bench("x", [True] * 10, [True] * 10))
    activate(settings, store, m, None)
    cfg = json.loads(config.read_text())
    cfg["added"] = "by the user"
    config.write_text(json.dumps(cfg, indent=3) + "\n")
    assert deactivate(settings, store)["restored"] == "keys"
    assert json.loads(config.read_text()) == {**ORIGINAL, "added": "by the user"}


def test_rollback_of_a_created_file_removes_it(
    settings: Settings, store: StateStore, tmp_path: Path
) -> None:
    m = _model(store, tmp_path, "a", _bench("x", [True] * 10, [True] * 10))
    activate(settings, store, m, {"create": True})
    assert settings.agent_config.exists()
    deactivate(settings, store)
    assert not settings.agent_config.exists()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import milady_lab.atomic as atomic
    from milady_lab.config import Settings
    from milady_lab.models.handoff.activation import deactivate
    from milady_lab.state import StateStore
    home, traj, cfg, where = sys.argv[1:5]
    real = {"fsync_path": atomic.fsync_path, "fsync_dir": atomic.fsync_dir}
    def slow(path, _name=where):
        Path(home, "reached").write_text("x")
        time.sleep(60)
    setattr(atomic, where, slow)  # before the rename (fsync_path) or after it (fsync_dir)
    s = Settings.from_env(home=home, trajectories=traj, agent_config=cfg)
    deactivate(s, StateStore(s.state_db))
    """
)


@pytest.mark.parametrize("where", ["fsync_path", "fsync_dir"])
def test_kill_9_mid_rollback_leaves_old_or_new_never_a_mix(
    settings: Settings, store: StateStore, config: Path, tmp_path: Path, where: str
) -> None:
    m = _model(store, tmp_path, "a", _bench("x", [True] * 10, [True] * 10))
    activate(settings, store, m, None)
    activated = config.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(settings.home), str(settings.trajectories),
         str(config), where],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (settings.home / "reached").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    now = config.read_bytes()
    assert now == (activated if where == "fsync_path" else RAW.encode())
    # The next rollback finishes the job: the config as before, the stray temp file gone.
    assert deactivate(settings, store)["restored"] == "exact"
    assert config.read_bytes() == RAW.encode()
    assert [p.name for p in config.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert EvalStore(store).activations()[0]["rolledBackAt"] is not None
