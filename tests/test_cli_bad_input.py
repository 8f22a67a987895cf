"""Careless input through the real ``milady-lab`` process (issue 25): every case below is
one line on stderr that names the cause, exit 1 or 2, and never a traceback. Also the
activation that tells the truth, the CLI's own flag names in messages, models named by
name or ``latest``, the base model checked before a job is accepted, the 409 of a
second cancel, trajectories that are missing or not a database, a build that counts the
rows it could not read, and an import into an Ollama that is not running, all as a user
at a shell sees them.

Each command is a fresh process (``python -c`` over this checkout), as from a shell."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from milady_lab.demo import write_demo_db
from milady_lab.state import StateStore, now_ms

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from milady_lab.cli import main; sys.exit(main())"


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Any]:
    """A home, an empty Hugging Face cache and an agent config path (not created)."""
    return {
        "home": tmp_path / "home",
        "agent_config": tmp_path / "agent" / "milady.json",
        "env": {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache"),
            "HF_HUB_OFFLINE": "1",
            "MILADY_LAB_TRAJECTORIES": str(tmp_path / "no-trajectories.sqlite"),
            "MILADY_LAB_CACHE": str(tmp_path / "cache"),
        },
    }


def run(lab: dict[str, Any], *args: str, home: str | Path | None = None) -> Any:
    argv = [sys.executable, "-c", CLI, "--home", str(home or lab["home"])]
    argv += ["--agent-config", str(lab["agent_config"]), *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=lab["env"], cwd=ROOT
    )


def refused(out: Any, code: int, *words: str) -> str:
    """The one-line refusal: its exit code, the words that name the cause, no traceback."""
    err = out.stderr
    assert out.returncode == code, (out.returncode, err, out.stdout)
    assert "Traceback" not in err and "Traceback" not in out.stdout, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("milady-lab: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# -- a home that cannot be used ---------------------------------------------------------------
def test_home_that_is_a_file(lab: dict[str, Any], tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    for command in (["models", "list"], ["status"], ["jobs", "list"]):
        refused(run(lab, *command, home=a_file), 2, str(a_file), "is a file, not a folder")
    below = a_file / "home"
    refused(run(lab, "models", "list", home=below), 2, str(below), "Not a directory")


def test_home_that_cannot_be_made(lab: dict[str, Any]) -> None:
    refused(run(lab, "models", "list", home="/proc/nope"), 2, "/proc/nope", "cannot create")


def test_corrupt_state_database(lab: dict[str, Any]) -> None:
    home = lab["home"]
    home.mkdir()
    db = home / "state.sqlite"
    db.write_bytes(os.urandom(4096))  # garbage from the first byte
    refused(run(lab, "jobs", "list"), 1, str(db), "file is not a database", "move it aside")
    db.unlink()
    assert run(lab, "models", "list").returncode == 0  # a good database …
    with db.open("r+b") as f:  # … with garbage over its pages
        f.seek(100)
        f.write(os.urandom(8000))
    for command in (["models", "list"], ["status"]):
        refused(run(lab, *command), 1, str(db), "malformed")


# -- trajectories that cannot be read --------------------------------------------------------
def test_trajectories_that_are_missing_or_not_a_database(
    lab: dict[str, Any], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such.sqlite"
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(4096))
    for source, cause in ((missing, "no trajectory database at"), (garbage, "not a database")):
        for command in (["trajectories", "list"], ["datasets", "build"]):
            line = refused(run(lab, "--trajectories", str(source), *command), 1, cause)
            assert str(source) in line and "cannot read the trajectories" in line
    assert not (lab["home"] / "datasets").exists() or not any((lab["home"] / "datasets").iterdir())


def test_build_counts_the_rows_it_could_not_read(lab: dict[str, Any], tmp_path: Path) -> None:
    """200 scrambled bytes inside one row's steps: the build says it skipped that row
    (as it does the demo's own rows that are not JSON), never a quietly smaller build."""
    import sqlite3

    db = write_demo_db(tmp_path / "trajectories.sqlite", count=40, seed=6)  # the default shape

    def build() -> dict[str, Any]:
        out = run(lab, "--trajectories", str(db), "datasets", "build", "--json")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return json.loads(out.stdout)["dataset"]

    clean = build()
    assert clean["skippedRows"] >= 1  # the demo's rows whose steps are not JSON
    conn = sqlite3.connect(db)
    (steps,) = conn.execute(
        "SELECT steps_json FROM trajectories WHERE json_valid(steps_json) ORDER BY id LIMIT 1"
    ).fetchone()
    conn.close()
    head = steps.encode()[:400]
    data = bytearray(db.read_bytes())
    assert data.count(head) == 1
    at = data.find(head)
    data[at + 100 : at + 300] = random.Random(25).randbytes(200)
    db.write_bytes(data)
    scrambled = build()
    assert scrambled["skippedRows"] == clean["skippedRows"] + 1
    assert scrambled["trajectoryCount"] == clean["trajectoryCount"] - 1
    out = run(lab, "--trajectories", str(db), "datasets", "build")
    assert out.returncode == 0 and f"{scrambled['trajectoryCount']} trajectories" in out.stdout
    said = out.stderr.splitlines()  # then the agent-shaped prompts' length warning
    assert said[0] == f"skipped {scrambled['skippedRows']} unreadable rows of the source"


# -- import into an Ollama that is not there --------------------------------------------------
def test_import_ollama_without_ollama(lab: dict[str, Any], tmp_path: Path) -> None:
    from tiny_models import build_bpe_tokenizer
    from transformers import LlamaConfig

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"x")
    base = tmp_path / "base"
    LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2).save_pretrained(base)  # fmt: skip
    dead = ["--ollama-url", "http://127.0.0.1:9"]  # nothing listens there
    model = _model(lab, 1, "milady-v1", adapterPath=str(adapter), baseModel=str(base))
    # A base folder with no tokenizer: named, before anything is converted.
    refused(run(lab, "models", "import-ollama", model, *dead), 2, "cannot load the tokenizer",
            str(base))  # fmt: skip
    build_bpe_tokenizer(base, ["hello there friend how are you"] * 20, vocab_size=300)
    # Ollama down: said at once, no phase (converting …) begun, nothing imported.
    refused(run(lab, "models", "import-ollama", model, *dead), 1,
            "cannot reach Ollama at http://127.0.0.1:9", "is it running?")  # fmt: skip
    shown = json.loads(run(lab, "models", "show", model, "--json").stdout)["model"]
    assert shown.get("ollamaName") is None


# -- activation that tells the truth ----------------------------------------------------------
def _model(lab: dict[str, Any], n: int, name: str, **extra: Any) -> str:
    store = StateStore(lab["home"] / "state.sqlite")
    store.insert_model(
        {"id": f"model-{n}", "jobId": f"job-{n}", "name": name, "createdAt": now_ms() + n,
         "active": False, "adapterPath": "/nowhere", "baseModel": "tiny", "backend": "cpu",
         "finalLoss": 1.0, **extra}
    )  # fmt: skip
    store.close()
    return f"model-{n}"


def test_activation_from_the_shell(lab: dict[str, Any]) -> None:
    config = lab["agent_config"]
    model = _model(lab, 1, "milady-v1", ollamaName="milady-v1")
    dead = ["--ollama-url", "http://127.0.0.1:9"]  # nothing listens there
    # A config path that does not exist: refused, naming the path and the flag.
    refused(run(lab, "models", "activate", model), 2, str(config), "pass --create to create")
    assert not config.parent.exists()
    # Never benchmarked: at once (no benchmark runs), saying how, in the CLI's words.
    line = refused(run(lab, "models", "activate", model, "--create"), 1, "not been benchmarked")
    assert f"milady-lab models benchmark {model}" in line and "pass --force to" in line
    assert "force=true" not in line and not config.exists()
    # Forced and created: the config exists, no lock file beside it; Ollama could not be
    # asked, so the answer says so (stderr) and the history keeps it.
    out = run(lab, "models", "activate", "milady-v1", "--create", "--force", *dead, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["activeModel"] == "ollama/milady-v1"
    assert "warning: could not check that Ollama has milady-v1" in out.stderr
    assert sorted(p.name for p in config.parent.iterdir()) == ["milady.json"]
    history = json.loads(run(lab, "models", "activations", "--json").stdout)["activations"]
    assert history[0]["warnings"][0].startswith("could not check that Ollama has milady-v1")
    # Inline objects of the user's file stay inline.
    config.write_text('{\n  "env": {"KEEP": "me"},\n  "agents": {"defaults": {}}\n}\n')
    out = run(lab, "models", "activate", "latest", "--force", *dead)
    assert out.returncode == 0 and "restart the agent" in out.stdout, out.stderr
    assert config.read_text() == (
        '{\n  "env": {"KEEP": "me", "OLLAMA_MODEL": "milady-v1", "AGENT_LLM_PROVIDER": '
        '"ollama"},\n  "agents": {"defaults": {"model": {"primary": "ollama/milady-v1"}}}\n}\n'
    )
    refused(run(lab, "models", "activate", model, "--ollama-url", "http://example.com"), 2,
            "loopback")  # fmt: skip


def test_activation_of_a_provider_model_never_imported(lab: dict[str, Any]) -> None:
    """``--provider-model ollama/…`` for a model never imported: done, with a warning."""
    model = _model(lab, 1, "never-imported")  # no ollamaName
    dead = ["--ollama-url", "http://127.0.0.1:9"]  # nothing listens there
    out = run(lab, "models", "activate", model, "--create", "--force", *dead,
              "--provider-model", "ollama/milady-v1")  # fmt: skip
    assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert out.stderr.startswith("milady-lab: warning: could not check that Ollama has milady-v1")
    assert len(out.stderr.strip().splitlines()) == 1
    assert "ollama/milady-v1" in lab["agent_config"].read_text()


def test_models_by_name_and_ambiguity(lab: dict[str, Any]) -> None:
    _model(lab, 1, "twin")
    _model(lab, 2, "twin")
    _model(lab, 3, "solo")
    out = run(lab, "models", "show", "latest", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["model"]["id"] == "model-3"
    out = run(lab, "models", "show", "solo", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["model"]["id"] == "model-3"
    refused(run(lab, "models", "show", "twin"), 2, "2 models are named 'twin'", "model-1",
            "model-2")  # fmt: skip
    refused(run(lab, "models", "show", "nobody"), 2, "no model with id or name 'nobody'")


# -- jobs: flags in messages, the base model checked first, cancel twice ----------------------
def test_job_messages_speak_in_flags_and_check_the_model_first(lab: dict[str, Any]) -> None:
    line = refused(run(lab, "jobs", "start", "--learning-rate", "abc"), 2)
    assert line == "milady-lab: --learning-rate must be a number, got 'abc'"
    refused(run(lab, "jobs", "start", "--batch-size", "0"), 2, "--batch-size must be at least 1")
    refused(run(lab, "jobs", "start", "--lr-schedule", "x"), 2, "--lr-schedule must be one of")
    line = refused(run(lab, "jobs", "start", "--model", "llama-3.2-1b"), 2, "'llama-3.2-1b'")
    assert "not in the local cache" in line and "set --model to a model folder" in line
    assert "smollm2-135m-instruct" in line  # the model that works offline
    out = run(lab, "jobs", "list", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"jobs": []}  # none accepted


def test_cancel_of_a_cancelled_job_is_refused(lab: dict[str, Any]) -> None:
    store = StateStore(lab["home"] / "state.sqlite")
    store.insert_job(
        {"id": "job-done-1", "status": "cancelled", "datasetId": None, "backend": "cpu",
         "model": "m", "createdAt": now_ms(), "totalIterations": 1, "options": {}}
    )  # fmt: skip
    store.close()
    refused(run(lab, "jobs", "cancel", "job-done-1"), 1, "job job-done-1 already cancelled")


def test_the_flag_names_come_from_the_parser() -> None:
    """One mapping, read off argparse: every REST field of a job has the flag that sets
    it, and a message is rewritten only where a name is plainly the field."""
    from milady_lab.cli import build_parser
    from milady_lab.cli._common import cli_message
    from milady_lab.training.request import FIELDS

    parser = build_parser()
    names = parser.parse_args(["jobs", "start"]).flag_names
    assert set(FIELDS) <= set(names)
    assert names["learningRate"] == ("--learning-rate", False) and names["home"][0] == "--home"
    assert cli_message("learningRate must be a number", names) == "--learning-rate must be a number"
    assert cli_message("unknown model 'x'; set model to a folder", names) == (
        "unknown model 'x'; set --model to a folder"
    )
    assert cli_message("more than maxTrajectories=5", names) == "more than --max-trajectories=5"
    act = parser.parse_args(["models", "activate", "x"]).flag_names
    assert cli_message("pass force=true, create=true or providerModel", act) == (
        "pass --force, --create or --provider-model"
    )
    assert cli_message("see /api/training/models/x/benchmark", act) == (
        "see /api/training/models/x/benchmark"
    )
