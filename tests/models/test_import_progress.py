"""``import-ollama``'s phases (merging, converting, uploading, creating, done): each a
``model_import_progress`` event, in order, and a line on the CLI's stderr off a terminal."""

from __future__ import annotations

from typing import Any

import pytest

from milady_lab.cli import main
from milady_lab.config import Settings
from milady_lab.state import StateStore

from .ollama_standin import OllamaStandIn

PHASES = ["merging", "converting", "uploading", "creating", "done"]


def test_phases_as_events_and_cli_lines(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    ollama: OllamaStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = ["--home", str(settings.home), "--trajectories", settings.trajectories]
    argv = [*home, "--cache", str(settings.cache), "models", "import-ollama", model["id"]]
    assert main([*argv, "--model-name", "milady-v1", "--ollama-url", ollama.url]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("import-ollama: ")] == [
        f"import-ollama: {phase}" for phase in PHASES
    ], err

    events = [e for e in store.events() if e["kind"] == "model_import_progress"]
    phases: list[str] = []
    for e in events:
        assert e["modelId"] == model["id"]
        if not phases or phases[-1] != e["phase"]:
            phases.append(e["phase"])
    assert phases == PHASES  # every phase has its event, none comes back
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents) and percents[-1] == 100.0
