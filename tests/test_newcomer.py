"""A newcomer's first run, scripted: ``make lab``'s home, then the README's CLI block verbatim.

A throw-away HOME stands for a fresh account: the demo data is made by the command in the
Makefile's ``demo-data`` recipe (what ``make lab`` runs), then each line of README.md's first
```bash block that uses ``milady-lab`` runs as written, in a shell, in that same HOME. The
CLI must then find the model the block trained, in the home ``make lab`` used.
Only the model cache (``MILADY_LAB_CACHE``, as the Makefile exports it) is the machine's, so
the bundled base model is not converted again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from milady_lab.config import Settings

ROOT = Path(__file__).resolve().parents[1]
BASH_BLOCK = re.compile(r"^```bash[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def makefile_recipe(target: str) -> list[str]:
    """The shell lines of a Makefile target's recipe, ``$(BIN)/`` being this venv's bin."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().lstrip("@"))
    bin_dir = str(Path(sys.executable).parent)
    return [line.replace("$(BIN)", bin_dir) for line in recipe]


def readme_cli_block() -> list[str]:
    """The commands of README.md's first bash block that uses ``milady-lab``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in BASH_BLOCK.findall(text) if "milady-lab" in b)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILADY_LAB_")}
    bin_dir = str(Path(sys.executable).parent)
    return {
        **env,
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),  # this checkout, whatever the venv's script points at
        "MILADY_LAB_CACHE": str(Settings.from_env().cache),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _sh(line: str, home: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=home,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, f"{line}\n{done.stderr}"
    return done


def test_the_readme_block_has_no_placeholder_and_trains_briefly() -> None:
    block = readme_cli_block()
    assert block and all(line.startswith("milady-lab ") for line in block)
    assert not any("MODEL_ID" in line for line in block)
    assert any(line.split("#")[0].split()[-2:] == ["models", "list"] for line in block)
    (demo,) = makefile_recipe("demo-data")
    assert "milady-lab demo-data --if-missing" in demo and "--db" not in demo


@pytest.mark.slow
def test_a_newcomer_runs_make_labs_home_then_the_readme_block(tmp_path: Path) -> None:
    home = tmp_path / "newcomer"
    home.mkdir()
    lab_home = home / ".milady-lab"
    started = time.monotonic()

    # `make lab`: its demo-data step, which says where the lab lives and what it reads.
    (demo,) = makefile_recipe("demo-data")
    said = _sh(demo, home).stdout
    assert f"home:         {lab_home}" in said
    assert f"trajectories: {lab_home / 'trajectories.sqlite'}" in said
    assert (lab_home / "trajectories.sqlite").is_file()

    outputs = [_sh(line, home).stdout for line in readme_cli_block()]

    # The CLI finds the model the block trained, in make lab's home.
    listed = json.loads(_sh("milady-lab models list --json", home).stdout)["models"]
    assert len(listed) == 1, listed
    assert listed[0]["id"] in outputs[-1]  # `models list` printed it
    status = json.loads(_sh("milady-lab status --json", home).stdout)
    assert status["home"] == str(lab_home)
    assert status["trajectorySource"].endswith(str(lab_home / "trajectories.sqlite"))
    assert time.monotonic() - started < 150
