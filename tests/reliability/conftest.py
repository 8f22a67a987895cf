"""Fixtures for the fault-injection and hostile-input suite (issue 8).

Soak variants (``@pytest.mark.soak``) are *deselected*, not skipped, unless
``MILADY_LAB_SOAK=1`` (``make test-soak``): the default ``make test`` never collects
them, so it reports no skips, and the soak run reports every iteration it made.

Shared pieces come from the other suites: the tiny Llama and ``add_dataset`` from
``tests/training/jobkit.py``, the live Jupyter server from ``tests/rest_api/restkit.py``
and ``demo_db`` / ``postgres_url`` from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from training.jobkit import job_model_dir  # noqa: F401  (fixture: the tiny Llama)

from .relkit import FIGURES, SOAK, Figures

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside ``MILADY_LAB_SOAK=1``, soak tests of this folder are deselected."""
    if SOAK:
        return
    keep, drop = [], []
    for item in items:
        in_here = HERE in Path(str(item.fspath)).parents
        (drop if in_here and item.get_closest_marker("soak") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """One thread per process: the suite shares 2 cores with workers and servers."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """Iteration counts and timings, printed at the end (the soak run's figures)."""
    figs = Figures()
    yield figs
    figs.report()


@pytest.fixture(scope="session")
def hostile_db(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo trajectories plus crafted rows (``relkit.HOSTILE_STEPS``)."""
    from .relkit import write_hostile_db

    return write_hostile_db(demo_db, tmp_path_factory.mktemp("hostile-db") / "traj.sqlite")


@pytest.fixture(scope="session")
def hostile_lab(hostile_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real ``jupyter server`` for the hostile-input and auth checks.

    ``lab["outside"]`` is everything of the user's that is not ``MILADY_LAB_HOME``: the
    trajectory database, the agent config and a sentinel folder a path traversal would
    reach (``home/../sentinel``).
    """
    from rest_api.restkit import live_server

    base = tmp_path_factory.mktemp("hostile")
    outside = base / "user"
    (outside / "sentinel").mkdir(parents=True)
    (outside / "sentinel" / "passwd").write_text("root:x:0:0\n")
    (outside / "agent").mkdir()
    (outside / "agent" / "milady.json").write_text('{"keep": "me"}\n')
    db = outside / "traj.sqlite"
    db.write_bytes(hostile_db.read_bytes())
    lab = {
        "home": outside / "home",
        "trajectories": db,
        "agent_config": outside / "agent" / "milady.json",
        "cache": base / "cache",
    }
    with live_server(base / "server", lab) as server:
        yield {**lab, "outside": outside, "server": server}


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[object]:
    """``tmpfs(path, size)`` mounts a small tmpfs (root only; this suite runs as root)."""
    from .relkit import mount_tmpfs, umount

    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        mount_tmpfs(path, size)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        umount(path)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The randomised checks' figures (iterations, invariant violations, time)."""
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for row in FIGURES:
        extra = {
            k: v
            for k, v in row.items()
            if k not in ("check", "iterations", "violations", "seconds")
        }
        terminalreporter.write_line(
            f"{row['check']}: {row['iterations']} iterations, {row['violations']} invariant "
            f"violations, {row['seconds']} s" + (f" {extra}" if extra else "")
        )
