"""The privacy options through REST (issue 13): validated at the edge with a message that
names the key, redaction counts in the preview and the dataset record, no secret in any
answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from privacy.plant import planted_db


@pytest.fixture
def lab(lab: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The usual settings, reading a database with secrets planted in it."""
    db, expected, secrets = planted_db(tmp_path / "planted.sqlite")
    lab["expected"], lab["secrets"] = expected, secrets  # type: ignore[assignment]
    return {**lab, "trajectories": db}


@pytest.mark.parametrize(
    ("privacy", "words"),
    [
        ("on", "privacy must be a JSON object"),
        ({"redact": "no"}, "privacy.redact must be true or false"),
        ({"anonymizeHandles": 1}, "privacy.anonymizeHandles must be true or false"),
        ({"redact": True, "level": "max"}, "unknown privacy key(s) level; expected redact"),
    ],
)
async def test_bad_privacy_is_a_400_naming_the_key(api, privacy, words) -> None:
    for route in ("datasets/preview", "datasets/build"):
        code, body = await api("POST", route, body={"privacy": privacy})
        assert code == 400 and words in body["message"], body
    code, listed = await api("GET", "datasets")
    assert listed["datasets"] == []


async def test_preview_and_build_report_redactions_and_leak_nothing(api, lab, store) -> None:
    expected, secrets = lab["expected"], lab["secrets"]
    code, preview = await api("POST", "datasets/preview", body={})
    assert code == 200 and preview["redactions"] == dict(expected), preview
    code, built = await api("POST", "datasets/build", body={"privacy": {"redact": True}})
    assert code == 201, built
    rec = built["dataset"]
    assert rec["redactions"] == dict(expected)
    assert rec["options"]["privacy"] == {"redact": True, "anonymizeHandles": False}
    code, listed = await api("GET", "datasets")
    answers = json.dumps([preview, built, listed, store.events()])
    assert not [s for s in secrets if s in answers or json.dumps(s)[1:-1] in answers]
    text = (Path(rec["path"]) / "train.jsonl").read_text("utf-8")
    assert not [s for s in secrets if json.dumps(s)[1:-1] in text]


async def test_redaction_off_only_with_explicit_false(api, lab) -> None:
    code, built = await api("POST", "datasets/build", body={"privacy": {"redact": False}})
    assert code == 201 and built["dataset"]["redactions"] == {}
    folder = Path(built["dataset"]["path"])
    text = (folder / "train.jsonl").read_text("utf-8") + (folder / "valid.jsonl").read_text("utf-8")
    assert all(json.dumps(s)[1:-1] in text for s in lab["secrets"])
