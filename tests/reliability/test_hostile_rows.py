"""Crafted trajectory rows: 100k-deep nesting, a 10 MB reply, wrong types in every place
(steps_json = 42, "null", {"steps": "x"}, llmCalls not a list, numbers as strings,
invalid UTF-8, NUL characters, text start times, blob ids). Listing, detail and dataset
builds survive each of them, through the Python API, REST and the CLI: a bad row is
skipped, the others are used.

Unit-level messy rows are ``tests/trajectories/test_parse.py`` and
``tests/test_datasets.py::test_messy_rows_never_fail_a_build``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from milady_lab.config import Settings
from milady_lab.datasets.build import load_examples
from milady_lab.service import TrainingService

from .relkit import HOSTILE_STEPS, TEN_MB, USABLE, cli


def _service(tmp_path: Path, db: Path) -> TrainingService:
    return TrainingService(
        Settings.from_env(
            home=tmp_path / "home",
            trajectories=db,
            agent_config=tmp_path / "a.json",
            cache=tmp_path / "c",
        )
    )


def _count(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT count(*) FROM trajectories").fetchone()[0]
    finally:
        conn.close()


def test_python_api_survives_every_crafted_row(tmp_path: Path, hostile_db: Path) -> None:
    svc = _service(tmp_path, hostile_db)
    total = _count(hostile_db)
    ids = []
    for offset in range(0, total, 500):
        page = svc.list_trajectories(500, offset)
        assert page["total"] == total
        ids += [t["id"] for t in page["trajectories"]]
    assert len(ids) == total and "text-start" in ids and "12345" in ids
    assert set(HOSTILE_STEPS) <= set(ids[: len(HOSTILE_STEPS) + 2])  # the newest rows

    for tid in HOSTILE_STEPS:
        detail = svc.get_trajectory(tid)["trajectory"]
        json.dumps(detail.to_dict())  # the REST layer can always encode it
        usable = [c for c in detail["llmCalls"] if c.get("userPrompt") and c.get("response")]
        assert bool(usable) == (tid in USABLE), (tid, detail["llmCalls"][:2])
    big = svc.get_trajectory("ten-mb-reply")["trajectory"]["llmCalls"][0]
    assert len(big["response"]) == TEN_MB
    strings = svc.get_trajectory("numbers-as-strings")["trajectory"]["llmCalls"][0]
    assert (strings.prompt_tokens, strings.completion_tokens) == (12, None)
    assert strings.timestamp is None and strings.latency_ms is None
    assert strings["stepId"] == "5"

    rec = svc.build_dataset({})["dataset"]
    examples = load_examples(rec["path"], "all")
    used = set(examples["trajectoryId"].to_list())
    assert used >= USABLE
    assert not (set(HOSTILE_STEPS) - USABLE) & used
    assert (
        examples.filter(examples["trajectoryId"] == "ten-mb-reply")["assistant"].str.len_chars()[0]
        == TEN_MB
    )
    preview = svc.preview_dataset({})
    counts = ("trajectoryCount", "exampleCount", "redactions")
    assert preview.to_dict() == {k: rec[k] for k in counts}
    frame = svc.llm_calls_frame().collect()
    assert set(frame["trajectoryId"].to_list()) >= USABLE
    svc.close()


def test_rest_and_cli_survive_every_crafted_row(hostile_lab) -> None:
    server = hostile_lab["server"]
    total = _count(hostile_lab["trajectories"])
    with httpx.Client(
        base_url=f"{server.url}api/training/",
        trust_env=False,
        timeout=120,
        headers={"Authorization": f"token {server.token}"},
    ) as http:
        page = http.get("trajectories", params={"limit": 500})
        assert page.status_code == 200 and page.json()["total"] == total
        for tid in HOSTILE_STEPS:
            r = http.get(f"trajectories/{tid}")
            assert r.status_code == 200, (tid, r.text[:300])
            assert r.json()["trajectory"]["id"] == tid
        assert len(http.get("trajectories/ten-mb-reply").content) > TEN_MB
        built = http.post("datasets/build", json={})
        assert built.status_code == 201, built.text
        assert built.json()["dataset"]["trajectoryCount"] >= len(USABLE)
        assert http.get("status").json()["runtimeAvailable"] is True

    base = ["--home", str(hostile_lab["home"]), "--trajectories", str(hostile_lab["trajectories"])]
    r = cli(*base, "trajectories", "list", "--limit", "500", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == total
    r = cli(*base, "trajectories", "show", "deep-list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["trajectory"]["llmCalls"] == [], r.stderr
    r = cli(*base, "trajectories", "list", "--limit", "30")  # the table view, not JSON
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
