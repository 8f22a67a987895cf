"""``milady-lab models ...``: thin over the service, --json prints the REST body."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from milady_lab.cli import main
from milady_lab.config import Settings
from milady_lab.state import StateStore

from .ollama_standin import OllamaStandIn


def _cli(settings: Settings, *argv: str) -> list[str]:
    return [
        "--home",
        str(settings.home),
        "--trajectories",
        settings.trajectories,
        "--agent-config",
        str(settings.agent_config),
        "--cache",
        str(settings.cache),
        *argv,
    ]


def _json_out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_list_and_show(
    settings: Settings, store: StateStore, model: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(settings, "models", "list", "--json")) == 0
    (listed,) = _json_out(capsys)["models"]
    assert {k: listed.get(k) for k in model} == model  # nulls left out; plus the agent fields
    bench = {  # as run_benchmark stores it
        "modelId": model["id"],
        "completedAt": model["createdAt"],
        "scores": {"coherence": 0.4, "consistency": 0.9, "helpfulness": 0.3},
        "baseline": {"coherence": 0.2, "consistency": 0.1, "helpfulness": 0.1},
    }
    store.update_model(model["id"], benchmark=bench)
    assert main(_cli(settings, "models", "list")) == 0
    out = capsys.readouterr().out
    assert model["id"] in out and "coh 0.40/0.20 con 0.90/0.10 help 0.30/0.10" in out
    assert main(_cli(settings, "models", "show", model["id"], "--json")) == 0
    assert _json_out(capsys)["model"]["benchmark"] == bench
    # People read times in UTC; --json keeps the REST body's ms.
    assert main(_cli(settings, "models", "show", model["id"])) == 0
    created = datetime.fromtimestamp(model["createdAt"] / 1000, UTC)
    assert f"createdAt: {created:%Y-%m-%d %H:%M:%S} UTC" in capsys.readouterr().out
    assert main(_cli(settings, "models", "show", "nope")) == 2
    assert "no model" in capsys.readouterr().err
    # Named by its name or as the newest one.
    for ref in (model["name"], "latest"):
        assert main(_cli(settings, "models", "show", ref, "--json")) == 0
        assert _json_out(capsys)["model"]["id"] == model["id"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "1970-01-01 00:00:00 UTC"),
        (253_402_300_799_999, "9999-12-31 23:59:59 UTC"),
        (253_402_300_800_000, "253402300800000"),  # past datetime's range: the number
        (-1, "-1"),
        (2**63 - 1, str(2**63 - 1)),
        (True, "True"),
        (1.5, "1.5"),
    ],
)
def test_time_cells_never_fail_on_odd_values(value: Any, shown: str) -> None:
    from milady_lab.cli._common import cell

    assert cell(value, "startTime") == shown


def test_import_and_activate(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "models",
        "import-ollama",
        model["id"],
        "--model-name",
        "milady-v1",
        "--base-model",
        "smollm2:135m",
        "--ollama-url",
        ollama.url,
        "--json",
    ]
    assert main(_cli(settings, *argv)) == 0
    body = _json_out(capsys)
    assert body["model"]["ollamaName"] == "milady-v1"
    # No agent config there yet: refused, naming the path and the flag that creates it.
    assert main(_cli(settings, "models", "activate", model["id"], "--force")) == 2
    err = capsys.readouterr().err
    assert str(settings.agent_config) in err and "pass --create to create" in err, err
    assert not Path(settings.agent_config).exists()
    # Never benchmarked: the gate says how to benchmark it, in the CLI's words.
    assert main(_cli(settings, "models", "activate", model["id"], "--create")) == 1
    err = capsys.readouterr().err
    assert f"milady-lab models benchmark {model['id']}" in err and "pass --force to" in err, err
    argv = ["models", "activate", "latest", "--create", "--force", "--ollama-url", ollama.url]
    assert main(_cli(settings, *argv, "--json")) == 0
    assert _json_out(capsys) == {"ok": True, "activeModel": "ollama/milady-v1"}
    cfg = json.loads(Path(settings.agent_config).read_text())
    assert cfg["env"] == {"OLLAMA_MODEL": "milady-v1", "AGENT_LLM_PROVIDER": "ollama"}
    # A refused URL is bad input (exit 2); an unreachable Ollama an upstream error (exit 1).
    assert (
        main(
            _cli(
                settings,
                "models",
                "import-ollama",
                model["id"],
                "--base-model",
                "b",
                "--ollama-url",
                "http://example.com",
            )
        )
        == 2
    )
    assert "loopback" in capsys.readouterr().err


def test_export_gguf(
    settings: Settings, model: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.gguf"
    assert (
        main(
            _cli(
                settings,
                "models",
                "export",
                model["id"],
                "--format",
                "gguf",
                "--out",
                str(out),
                "--json",
            )
        )
        == 0
    )
    body = _json_out(capsys)
    assert body["export"]["path"] == str(out) and out.is_file()
    assert (
        main(_cli(settings, "models", "export", model["id"], "--format", "gguf", "--out", str(out)))
        == 1
    )
    assert "already exists" in capsys.readouterr().err


def test_benchmark_bad_input_exit_2(
    settings: Settings, model: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(settings, "models", "benchmark", model["id"], "--max-examples", "0")) == 2
    err = capsys.readouterr().err
    assert "--max-examples must be at least 1" in err and "maxExamples" not in err, err
