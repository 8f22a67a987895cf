"""Dataset builds through REST: the server keeps answering during a big build (it runs
in a worker process), and a build process that dies is a clear error, not a hang."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mid_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8000 demo trajectories: a build that takes a couple of seconds."""
    from milady_lab.demo import write_demo_db

    return write_demo_db(
        tmp_path_factory.mktemp("mid") / "t.sqlite", count=8000, seed=5, shape="regular"
    )


@pytest.fixture
def lab(lab: dict[str, Path], mid_db: Path) -> dict[str, Path]:
    """The usual settings, reading the bigger database."""
    return {**lab, "trajectories": mid_db}


async def test_status_answers_while_a_big_build_runs(api) -> None:
    build = asyncio.ensure_future(api("POST", "datasets/build", body={}))
    during: list[float] = []
    while not build.done():
        t = time.monotonic()
        code, _ = await api("GET", "status")
        assert code == 200
        if not build.done():
            during.append(time.monotonic() - t)
        await asyncio.sleep(0.05)
    code, body = await build
    assert code == 201 and body["dataset"]["trajectoryCount"] > 1000, body
    assert len(during) >= 5, during  # the loop kept serving the whole time
    assert max(during) < 1.5, during


async def test_a_build_process_that_dies_is_a_clear_error(api, ext, lab) -> None:
    build = asyncio.ensure_future(api("POST", "datasets/build", body={}))
    while not getattr(ext._build_pools.get("build"), "_processes", None):
        await asyncio.sleep(0.05)
    # Kill at once: on a quiet machine the whole build takes about half a second.
    for proc in list(ext._build_pools["build"]._processes.values()):
        proc.kill()
    code, body = await build
    assert code == 503 and "ended unexpectedly" in body["message"], body
    code, body = await api("POST", "datasets/build", body={"limit": 50})
    assert code == 201, body
    code, listed = await api("GET", "datasets")
    assert [d["id"] for d in listed["datasets"]] == [body["dataset"]["id"]]
    folders = {p.name for p in (lab["home"] / "datasets").iterdir() if not p.name.startswith(".")}
    assert folders == {body["dataset"]["id"]}
