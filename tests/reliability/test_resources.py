"""Resources running out: a full disk during a dataset build and during a training job's
checkpoint or adapter write, and a large trajectory database listed and built within
the benchmarks' memory.

A request body over 10 MB → 413 is ``tests/rest_api/test_rest_routes.py::
test_body_over_10mb_is_413``; a 10 MB reply and hostile rows are ``test_hostile_rows.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rest_api.restkit import live_server, make_occupied
from training.jobkit import add_dataset, cleanup_jobs, wait_status

from milady_lab.config import Settings
from milady_lab.errors import StorageError
from milady_lab.service import TrainingService
from milady_lab.training.jobs import JobManager

from .relkit import cli, fill, store_violations

FINAL = ("completed", "failed", "cancelled")


# -- disk full during a dataset build ---------------------------------------------------------
def test_disk_full_during_build_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, demo_db: Path, tmpfs
) -> None:
    home = tmpfs(tmp_path / "home", "1m")  # the state db fits; a 400-trajectory dataset does not
    lab = {
        "home": home,
        "trajectories": demo_db,
        "agent_config": tmp_path / "a.json",
        "cache": tmp_path / "cache",
    }
    settings = Settings.from_env(**{k: str(v) for k, v in lab.items()})
    svc = TrainingService(settings)

    with pytest.raises(StorageError, match="disk space") as err:
        svc.build_dataset({})
    assert "nothing was kept" in err.value.message
    assert list(settings.datasets_dir.iterdir()) == []
    assert svc.list_datasets().to_dict() == {"datasets": []}
    assert store_violations(settings) == []

    # The CLI: one line, exit 1, no traceback.
    r = cli("--home", str(home), "--trajectories", str(demo_db), "datasets", "build")
    assert r.returncode == 1 and "disk space" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # REST: 507 with the message, never a 500.
    with live_server(tmp_path / "srv", lab) as server:
        resp = httpx.post(
            f"{server.url}api/training/datasets/build",
            json={},
            timeout=60,
            headers={"Authorization": f"token {server.token}"},
            trust_env=False,
        )
        assert resp.status_code == 507, resp.text
        assert "disk space" in resp.json()["message"]
    assert list(settings.datasets_dir.iterdir()) == []

    # Space comes back: a small build works, and the store is still sound.
    rec = svc.build_dataset({"limit": 3})["dataset"]
    assert [d["id"] for d in svc.list_datasets()["datasets"]] == [rec["id"]]
    assert store_violations(settings) == []
    svc.close()


# -- disk full during a training job ----------------------------------------------------------
@pytest.fixture
def job_settings(tmp_path: Path, quiet_env: None) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings.from_env(
        home=home,
        trajectories=tmp_path / "none.sqlite",
        agent_config=tmp_path / "a.json",
        cache=tmp_path / "cache",
    )


def _assert_failed_cleanly(mgr: JobManager, job_id: str, settings: Settings) -> dict:
    rec = wait_status(mgr, job_id, FINAL, 180)
    assert rec["status"] == "failed", rec
    assert "No space left on device" in rec["error"], rec["error"]
    assert mgr.store.list_models() == []
    left = [p.name for p in settings.models_dir.iterdir()] if settings.models_dir.exists() else []
    assert [n for n in left if n != ".filler"] == []  # no model folder, no temp folder
    assert store_violations(settings) == []
    return rec


@pytest.mark.slow
def test_disk_full_writing_the_adapter_fails_the_job_cleanly(
    job_settings: Settings, job_model_dir: Path, tmpfs
) -> None:
    settings = job_settings
    svc = TrainingService(settings)
    ds = add_dataset(settings, svc.store)
    fill(tmpfs(settings.models_dir, "64k"))
    mgr = svc.jobs_manager
    try:
        job = mgr.start(
            {
                "datasetId": ds,
                "model": str(job_model_dir),
                "backend": "cpu",
                "iterations": 3,
                "batchSize": 2,
            }
        )
        _assert_failed_cleanly(mgr, job["id"], settings)
    finally:
        cleanup_jobs(mgr)
        svc.close()


@pytest.mark.slow
def test_disk_full_writing_a_checkpoint_fails_the_job_cleanly(
    job_settings: Settings, job_model_dir: Path, tmpfs
) -> None:
    settings = job_settings
    svc = TrainingService(settings)
    ds = add_dataset(settings, svc.store)
    mgr = svc.jobs_manager
    try:
        with make_occupied(svc.store) as occupier:  # queue the job: its folder exists first
            job = mgr.start(
                {
                    "datasetId": ds,
                    "model": str(job_model_dir),
                    "backend": "cpu",
                    "iterations": 6,
                    "batchSize": 2,
                    "checkpointEvery": 2,
                }
            )
            assert job["status"] == "queued"
            fill(tmpfs(settings.jobs_dir / job["id"] / "checkpoints", "64k"))
            os.killpg(occupier["pid"], signal.SIGKILL)
        _assert_failed_cleanly(mgr, job["id"], settings)
        ckpt = settings.jobs_dir / job["id"] / "checkpoints"
        assert [p.name for p in ckpt.iterdir()] == [".filler"]  # no half-written checkpoint
    finally:
        cleanup_jobs(mgr)
        svc.close()


# -- a large trajectory database -------------------------------------------------------------
#: The dataset benchmark's budget (issue 2): a build in ≤ 1.5 GB peak RSS.
BUILD_RSS_MB = 1536
#: Listing pages never loads the table: far below the build budget.
LIST_RSS_MB = 400

_LARGE = r"""
import json, random, sys, time
from milady_lab.config import Settings
from milady_lab.service import TrainingService
db, home = sys.argv[1], sys.argv[2]


def peak_mb():  # VmHWM: this process image's own peak (ru_maxrss keeps the forking parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


svc = TrainingService(Settings.from_env(home=home, trajectories=db, agent_config=home + "/a.json",
                                        cache=home + "/c"))
total = svc.list_trajectories(1, 0)["total"]
rng, lat = random.Random(1), []
for off in [0, total - 1, total // 2] + [rng.randrange(total) for _ in range(200)]:
    t = time.perf_counter()
    page = svc.list_trajectories(100, off)
    lat.append(time.perf_counter() - t)
    assert len(page["trajectories"]) == min(100, total - off), off
    assert page["total"] == total
svc.get_trajectory(page["trajectories"][0]["id"])
list_rss = peak_mb()
t = time.perf_counter()
rec = svc.build_dataset({})["dataset"]
print(json.dumps({"total": total, "p50Ms": sorted(lat)[len(lat) // 2] * 1000,
                  "listRssMb": list_rss, "buildS": time.perf_counter() - t,
                  "buildRssMb": peak_mb(),
                  "examples": rec["exampleCount"]}))
"""


def _large_db(count: int, base: Path) -> Path:
    """The listing benchmark's lean database (its cached copy when ``make bench`` made one)."""
    from milady_lab.demo import write_demo_db

    cached = Path(os.environ.get("MILADY_LAB_BENCH_CACHE", "/tmp/milady-lab-bench"))
    cached = cached / f"listing-{count}-seed0-lean.sqlite"
    if cached.exists():
        return cached
    return write_demo_db(base / f"lean-{count}.sqlite", count, 0, lean=True, shape="regular")


def _list_and_build_large(tmp_path: Path, count: int, figures) -> None:
    t0 = time.monotonic()
    db = _large_db(count, tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", _LARGE, str(db), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    figures.add(
        f"list + build {count:,} trajectories",
        1,
        0,
        time.monotonic() - t0,
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in got.items()},
    )
    assert got["total"] == count
    assert got["listRssMb"] <= LIST_RSS_MB, got
    assert got["buildRssMb"] <= BUILD_RSS_MB, got
    assert got["examples"] > 0


def test_large_database_lists_and_builds_within_memory(tmp_path: Path, figures) -> None:
    _list_and_build_large(tmp_path, 200_000, figures)


@pytest.mark.soak
def test_soak_million_rows_list_and_build_within_memory(tmp_path: Path, figures) -> None:
    _list_and_build_large(tmp_path, 1_000_000, figures)
