"""Builds and previews with the privacy pass (issue 13), on real SQLite (and one
PostgreSQL) trajectory databases with secrets planted the way agents record them."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from milady_lab.cli import main as cli
from milady_lab.config import Settings
from milady_lab.datasets import build as ds
from milady_lab.errors import InputError
from milady_lab.privacy import PrivacyOptions
from milady_lab.service import TrainingService
from milady_lab.state import StateStore
from milady_lab.trajectories import open_source

from .plant import planted_db


class Home:
    """A home reading a planted database, wired like the service does it."""

    def __init__(self, tmp: Path, trajectories: str | Path) -> None:
        self.tmp = tmp
        self.settings = Settings.from_env(home=tmp / "home", trajectories=trajectories, cache=tmp)
        self.store = StateStore(self.settings.state_db)
        self.source = open_source(str(self.settings.trajectories), self.settings)

    def build(self, **body) -> dict:
        opts = ds.BuildOptions.from_body(body)
        return ds.build_dataset(self.source, self.settings, self.store, opts)

    def texts(self, rec: dict) -> str:
        folder = Path(rec["path"])
        return (folder / "train.jsonl").read_text("utf-8") + (folder / "valid.jsonl").read_text(
            "utf-8"
        )


@pytest.fixture
def planted(tmp_path: Path):
    db, expected, secrets = planted_db(tmp_path / "traj.sqlite")
    return Home(tmp_path, db), expected, secrets


def _needles(secret: str) -> set[bytes]:
    """A secret as it would show in raw text, in JSON, and each long line of a multi-line
    one (a PEM block's base64 lines are secret on their own)."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    if "\n" in secret:
        forms |= {line for line in secret.splitlines() if len(line) >= 16 and "-----" not in line}
    return {f.encode() for f in forms}


def _leaks(blob: bytes | str, secrets: list[str]) -> list[str]:
    data = blob if isinstance(blob, bytes) else blob.encode()
    return [s for s in secrets if any(n in data for n in _needles(s))]


def test_no_secret_reaches_files_record_events_logs_or_output(planted, caplog, capsys) -> None:
    home, _expected, secrets = planted
    caplog.set_level(logging.DEBUG)
    rec = home.build()
    preview = ds.preview(home.source, ds.BuildOptions.from_body({}), home=home.settings.home)
    where = ["--home", str(home.settings.home), "--trajectories", str(home.settings.trajectories)]
    code = cli([*where, "datasets", "build", "--json"])
    assert code == 0
    out = capsys.readouterr()
    assert not _leaks(out.out + out.err, secrets)
    assert json.loads(out.out)["dataset"]["redactions"] == rec["redactions"]
    # Every file of the home: both datasets, their metadata.json, the state db and its WAL.
    files = [p for p in home.settings.home.rglob("*") if p.is_file()]
    assert any(p.name == "train.jsonl" for p in files) and any(p.suffix == ".sqlite" for p in files)
    for path in files:
        assert not _leaks(path.read_bytes(), secrets), path
    assert not _leaks(msgspec.json.encode([rec, preview, home.store.list_datasets()]), secrets)
    assert not _leaks(json.dumps(home.store.events()), secrets)
    assert not _leaks(caplog.text, secrets)
    # And the secrets really were in the source: the check above can fail.
    assert _leaks(Path(home.settings.trajectories).read_bytes(), secrets) == secrets


def test_counts_per_kind_in_record_preview_and_metadata(planted) -> None:
    home, expected, _secrets = planted
    rec = home.build()
    assert rec["redactions"] == dict(expected)
    assert Counter(rec["redactions"]) == expected
    preview = ds.preview(home.source, ds.BuildOptions.from_body({}), home=home.settings.home)
    assert preview["redactions"] == rec["redactions"]
    meta = json.loads((Path(rec["path"]) / "metadata.json").read_text("utf-8"))
    assert meta["redactions"] == rec["redactions"]
    assert meta["options"]["privacy"] == {"redact": True, "anonymizeHandles": False}
    assert home.store.get_dataset(rec["id"])["redactions"] == rec["redactions"]
    text = home.texts(rec)
    for kind, n in expected.items():
        placeholder = {"email": "<EMAIL>", "phone": "<PHONE>", "ip_address": "<IP>"}
        assert text.count(placeholder.get(kind, f"<SECRET:{kind}>")) == n, kind
    # Everything else is kept: all trajectories, all examples, the conversation around.
    assert rec["trajectoryCount"] == rec["exampleCount"] == home.source.count()
    assert text.count("gm milady, how was your night") == rec["exampleCount"]


def test_redaction_is_off_only_when_asked_explicitly(planted) -> None:
    home, _expected, secrets = planted
    rec = home.build(privacy={"redact": False})
    assert rec["redactions"] == {}
    assert rec["options"]["privacy"] == {"redact": False, "anonymizeHandles": False}
    assert _leaks(home.texts(rec), secrets) == secrets  # exactly as recorded
    for body in ({}, {"privacy": None}, {"privacy": {}}, {"privacy": {"anonymizeHandles": False}}):
        assert ds.BuildOptions.from_body(body).privacy.redact is True, body


@pytest.mark.parametrize(
    ("privacy", "words"),
    [
        ("on", "privacy must be an object"),
        ([], "privacy must be an object"),
        ({"redact": "no"}, "privacy.redact must be true or false"),
        ({"redact": 0}, "privacy.redact must be true or false"),
        ({"anonymizeHandles": "yes"}, "privacy.anonymizeHandles must be true or false"),
        ({"redact": True, "level": "max"}, "unknown privacy key(s) level"),
    ],
)
def test_bad_privacy_options_say_which_key(planted, privacy, words) -> None:
    home, _e, _s = planted
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        home.build(privacy=privacy)
    assert home.store.list_datasets() == []


def test_examples_that_differ_only_in_a_secret_become_one(tmp_path) -> None:
    from test_datasets import call, make_db

    rows = [
        (f"t{i}", 100 + i, [call(f"my key is sk-proj-{'ab12' * 8}{i}x, keep it", "noted")])
        for i in range(4)
    ]
    home = Home(tmp_path, make_db(tmp_path / "t.sqlite", rows))
    rec = home.build()
    assert rec["trajectoryCount"] == 4 and rec["exampleCount"] == 1
    # Counted in the calls the build read, before de-duplication.
    assert rec["redactions"] == {"openai_key": 4}


def test_search_text_is_redacted_where_it_is_kept(planted) -> None:
    home, _e, _s = planted
    needle = "kai.tanaka+milady@example.com"
    rec = home.build(search=needle)
    assert rec["trajectoryCount"] == 1
    assert rec["options"]["search"] == "<EMAIL>"
    assert needle not in (Path(rec["path"]) / "metadata.json").read_text("utf-8")
    with pytest.raises(InputError) as err:
        home.build(search="nobody+" + needle)
    assert needle not in str(err.value)


def test_clean_demo_build_changes_no_example(tmp_path) -> None:
    from milady_lab.demo import write_demo_db

    home = Home(
        tmp_path, write_demo_db(tmp_path / "demo.sqlite", count=400, seed=3, shape="regular")
    )
    redacted = home.build()
    plain = home.build(privacy={"redact": False})
    assert redacted["redactions"] == {}
    assert redacted["exampleCount"] == plain["exampleCount"] > 500
    for name in ("train.jsonl", "valid.jsonl"):
        assert (Path(redacted["path"]) / name).read_bytes() == (
            Path(plain["path"]) / name
        ).read_bytes()


def test_postgres_source_is_redacted_the_same(planted, postgres_url, tmp_path) -> None:
    from trajectories.kit import pg_database, raw_rows

    home, expected, secrets = planted
    pg = Home(
        tmp_path / "pg", pg_database(postgres_url, raw_rows(Path(home.settings.trajectories)))
    )
    rec = pg.build()
    assert rec["redactions"] == dict(expected)
    assert not _leaks(pg.texts(rec), secrets)
    assert pg.texts(rec) == home.texts(home.build())


def test_service_and_rest_bodies_take_privacy(planted) -> None:
    home, expected, _s = planted
    service = TrainingService(home.settings)
    try:
        body = service.preview_dataset({"privacy": {"redact": True}})
        assert body["redactions"] == dict(expected)
        built = service.build_dataset({"privacy": {"redact": True, "anonymizeHandles": True}})
        assert built["dataset"]["options"]["privacy"]["anonymizeHandles"] is True
    finally:
        service.close()


def test_python_api_takes_privacy_options(planted) -> None:
    home, _e, secrets = planted
    opts = ds.BuildOptions(privacy=PrivacyOptions(redact=False))
    rec = ds.build_dataset(home.source, home.settings, home.store, opts)
    assert _leaks(home.texts(rec), secrets) == secrets


def test_cli_flags_turn_redaction_off_and_handles_on(planted, capsys) -> None:
    home, expected, secrets = planted
    where = ["--home", str(home.settings.home), "--trajectories", str(home.settings.trajectories)]
    assert cli([*where, "datasets", "preview"]) == 0
    out = capsys.readouterr().out
    assert "redacted: " in out and f"{expected['openai_key']} openai_key" in out
    assert not _leaks(out, secrets)
    assert cli([*where, "datasets", "build", "--no-redact", "--anonymize-handles", "--json"]) == 0
    ds_rec = json.loads(capsys.readouterr().out)["dataset"]
    assert ds_rec["options"]["privacy"] == {"redact": False, "anonymizeHandles": True}
    assert ds_rec["redactions"] == {}
    text = home.texts(ds_rec)
    # Kept as recorded, but for the one planted email that holds a handle ("kai.…@").
    kept = [s for s in secrets if not re.search(r"\bkai\b", s)]
    assert _leaks(text, secrets) == kept and len(kept) == len(secrets) - 1
    assert "kai: gm milady" not in text


def test_client_sends_privacy_only_when_given() -> None:
    from milady_lab.client import _build_body

    assert "privacy" not in _build_body(None, None, source="chat")  # the server's defaults
    assert _build_body(None, None, redact=False)["privacy"] == {"redact": False}
    both = _build_body(5, None, redact=True, anonymize_handles=True)
    assert both == {"limit": 5, "privacy": {"redact": True, "anonymizeHandles": True}}
