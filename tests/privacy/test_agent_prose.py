"""The privacy pass on agent-shaped prose (``prose``): long multi-speaker English
prompts, where a "12 short lowercase words" pre-check fires on nearly every text.
Ordinary prose comes out byte for byte; planted secrets are all found, once each."""

from __future__ import annotations

from pathlib import Path

from .prose import write_agent_db
from .test_build import Home


def test_clean_agent_prose_changes_no_example(tmp_path: Path) -> None:
    db, planted = write_agent_db(tmp_path / "agent.sqlite", 120, seed=2, secret_rate=0.0)
    home = Home(tmp_path, db)
    redacted = home.build()
    plain = home.build(privacy={"redact": False})
    assert planted == 0 and redacted["redactions"] == {}
    assert redacted["exampleCount"] == plain["exampleCount"] > 300
    for name in ("train.jsonl", "valid.jsonl"):
        assert (Path(redacted["path"]) / name).read_bytes() == (
            Path(plain["path"]) / name
        ).read_bytes()


def test_every_secret_planted_in_agent_prose_is_found_once(tmp_path: Path) -> None:
    db, planted = write_agent_db(tmp_path / "agent.sqlite", 120, seed=3, secret_rate=0.1)
    rec = Home(tmp_path, db).build()
    assert planted > 20
    assert sum(rec["redactions"].values()) == planted
    assert len(rec["redactions"]) > 10  # many kinds at once
