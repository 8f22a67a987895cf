"""Auto-improve on a tiny model: new trajectories in a SQLite source → skip, then build →
train → benchmark → activate-if-better by itself, with the events; two watchers at once do
the work once; the cooldown holds."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from test_datasets import make_db

from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.models.auto import AutoImprover, check_policy
from milady_lab.service import TrainingService

from .conftest import agent_reply
from .ollama_standin import OllamaStandIn


def _rows(start: int, n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(start)
    return [
        (f"t-{i}", 1_700_000_000_000 + i, [
            {"callId": f"c-{i}", "model": "m", "purpose": "response",
             "systemPrompt": "You are Milady. Answer in <response> XML.",
             "userPrompt": f"hello friend {i} how are you", "response": agent_reply(rng)}
        ])
        for i in range(start, start + n)
    ]  # fmt: skip


def _add(db: Path, start: int, n: int) -> None:
    import sqlite3

    tmp = db.with_name(f"more-{start}.sqlite")
    make_db(tmp, _rows(start, n))
    conn = sqlite3.connect(db)
    conn.execute("ATTACH ? AS more", (str(tmp),))
    conn.execute("INSERT INTO trajectories SELECT * FROM more.trajectories")
    conn.commit()
    conn.close()


def test_policy_checks() -> None:
    p = check_policy({"enabled": True, "minNewTrajectories": "5"}, {})
    assert p["enabled"] is True and p["minNewTrajectories"] == 5 and p["cooldownHours"] == 12
    assert p["activate"] == "never"
    for bad in ({"activate": "x"}, {"cooldownHours": -1}, {"ollamaUrl": "http://10.0.0.1"},
                {"unknown": 1}, {"enabled": "maybe"}):  # fmt: skip
        with pytest.raises(InputError):
            check_policy(bad, {})


@pytest.mark.slow
def test_auto_round_by_itself_once_and_cooldown(
    tmp_path: Path, tiny_base: Path, ollama: OllamaStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    db = make_db(tmp_path / "traj.sqlite", _rows(0, 5))
    settings = Settings.from_env(
        home=tmp_path / "home", trajectories=db, agent_config=tmp_path / "agent.json",
        cache=tmp_path / "cache",
    )  # fmt: skip
    settings.agent_config.write_text("{}\n")  # the agent's config: activation never creates it
    a, b = TrainingService(settings), TrainingService(settings)
    try:
        a.set_auto({
            "enabled": True, "minNewTrajectories": 10, "cooldownHours": 1, "iterations": 2,
            "backend": "cpu", "model": str(tiny_base), "activate": "if-better",
            "maxExamples": 4, "ollamaUrl": ollama.url, "ollamaBaseModel": "tiny:1",
        })  # fmt: skip
        first = a.auto.tick()
        assert first == {**first, "kind": "auto_skipped", "message": "5 new trajectories < 10"}
        assert a.auto.tick()["kind"] == "auto_skipped"  # the same decision: logged once

        _add(db, 5, 40)
        one, two = AutoImprover(a), AutoImprover(b)
        out: dict[str, list[dict[str, Any]]] = {}
        threads = [
            threading.Thread(target=lambda k=k, w=w: out.__setitem__(k, w.run_once(0.5, 240)))
            for k, w in (("a", one), ("b", two))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        kinds = [d["kind"] for d in out["a"] + out["b"]]
        assert "auto_busy" in kinds or len(out["a"]) == 1 or len(out["b"]) == 1, out
        assert len(a.list_datasets()["datasets"]) == 1  # one build, one job: the work once
        assert len(a.list_jobs()["jobs"]) == 1
        events = [
            e for e in a.events() if e["kind"].startswith("auto_") and e["kind"] != "auto_policy"
        ]
        seq = [e["kind"] for e in events]
        assert seq[:1] == ["auto_skipped"] and seq.count("auto_skipped") == 1
        assert seq[1:] == ["auto_built", "auto_training", "auto_benchmarked", "auto_activated"], (
            events
        )
        # No auto dataset before: every usable trajectory is new.
        assert "45 new trajectories ≥ 10" in events[1]["message"]
        model = a.list_models()["models"][0]
        assert model["active"] and model["benchmark"]["scores"]["formatValid"] is not None
        cfg = json.loads(settings.agent_config.read_text())
        assert cfg["agents"]["defaults"]["model"]["primary"] == f"ollama/{model['ollamaName']}"

        _add(db, 45, 40)  # enough new trajectories again, but the cooldown holds
        d = a.auto.tick()
        assert d["kind"] == "auto_skipped" and d["message"].startswith("cooldown:")
        assert len(a.list_jobs()["jobs"]) == 1
        assert a.get_auto()["state"]["lastRound"]["outcome"] == "auto_activated"
    finally:
        a.close()
        b.close()
