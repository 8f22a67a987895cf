"""The README and the documentation in ``docs/``: short, linked, and every Python snippet runs.

The site itself is built with warnings as errors by ``make docs`` (also in ``make test``);
these tests cover what Sphinx does not check: the README (not part of the site), its links,
and that each ```python block does what it shows, on demo data in a throw-away home.

A block that cannot run here (it needs a running agent, Ollama or a GPU) says so on its first
line: ``# docs: no-run (why)``. Bash blocks are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 150
NO_RUN = "# docs: no-run"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _snippets() -> list[tuple[str, str]]:
    """``(where, code)`` of every Python block, ``where`` being ``file:line``."""
    found = []
    for page in _pages():
        if "_build" in page.parts:
            continue
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) not in ("python", "py", "python3"):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


SNIPPETS = _snippets()


def test_the_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md is {lines} lines (at most {README_MAX_LINES}): move the detail into docs/"
    )


def test_the_readme_links_to_files_that_exist() -> None:
    missing = []
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            missing.append(target)
    assert not missing, f"README.md links to missing files: {missing}"


def test_there_are_snippets_and_few_are_skipped() -> None:
    """The collector finds the README's blocks; opting out stays the exception."""
    assert any(where.startswith("README.md") for where, _ in SNIPPETS)
    skipped = [where for where, code in SNIPPETS if code.startswith(NO_RUN)]
    assert len(skipped) <= max(2, len(SNIPPETS) // 4), f"too many no-run snippets: {skipped}"


@pytest.fixture
def docs_env(tmp_path: Path, demo_db: Path) -> dict[str, str]:
    """A home of its own, the demo trajectories as the source, a scratch agent config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILADY_")}
    env.update(
        MILADY_LAB_HOME=str(tmp_path / "home"),
        MILADY_LAB_TRAJECTORIES=str(demo_db),
        MILADY_LAB_AGENT_CONFIG=str(tmp_path / "agent" / "milady.json"),
        MILADY_STATE_DIR=str(tmp_path / "agent"),
        MILADY_LAB_CACHE=os.environ.get("MILADY_LAB_CACHE")
        or str(Path.home() / ".cache" / "milady-lab"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        MPLBACKEND="Agg",
    )
    return env


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_python_snippet_runs(where: str, code: str, docs_env: dict[str, str], tmp_path: Path):
    first = code.splitlines()[0] if code else ""
    if first.startswith(NO_RUN):
        reason = first[len(NO_RUN) :].strip(" ()")
        assert reason, f"{where}: say why the snippet cannot run: `{NO_RUN} (why)`"
        pytest.skip(reason)
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=docs_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{where} failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"


def _run_all():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_md_has_a_section_per_benchmark_script() -> None:
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    for name in _run_all().SCRIPTS:
        assert f"## {name}" in text, f"benchmarks/RESULTS.md has no section for {name}"


def test_make_bench_writes_what_each_script_prints(tmp_path: Path, capsys) -> None:
    """``run_all.py`` records output, exit code, date, cores and load, also on a failure."""
    ok, bad = tmp_path / "bench_ok.py", tmp_path / "bench_bad.py"
    ok.write_text("print('building\\r50%\\r100%')\nprint('12.5 s, 357 MB peak')\n")
    bad.write_text("import sys\nprint('half done')\nsys.exit(3)\n")
    out = tmp_path / "RESULTS.md"
    assert _run_all().main([str(ok), str(bad), "--out", str(out)]) == 1
    text = out.read_text(encoding="utf-8")
    assert "12.5 s, 357 MB peak" in text and "\n100%\n" in text and "50%" not in text
    assert f"## {bad}\n\nExit 3 in" in text and "half done" in text
    assert f"{len(os.sched_getaffinity(0))} cores (`nproc`)" in text
    assert "load average" in text and re.search(r"on \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert "12.5 s, 357 MB peak" in capsys.readouterr().out
