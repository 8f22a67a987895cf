"""Many writers on one state home: racing dataset builds, and a kernel, the REST server
and the CLI writing to one state store at the same time.

Covered elsewhere: 20 simultaneous job starts (``tests/training/test_jobs.py::
test_twenty_simultaneous_starts_one_runs``) and racing activations
(``tests/models/test_activation.py::test_activation_race_*``).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rest_api.restkit import live_server, make_occupied
from training.jobkit import cleanup_jobs

from milady_lab.config import Settings
from milady_lab.service import TrainingService
from milady_lab.training.jobs import JobManager

from .relkit import cli, dataset_violations, store_violations


def _lines(folder: Path) -> list[bytes]:
    return sorted(
        (folder / "train.jsonl").read_bytes().splitlines()
        + (folder / "valid.jsonl").read_bytes().splitlines()
    )


def _build_in_process(settings: Settings, limits: list[int], start: Any, out: Any) -> None:
    svc = TrainingService(settings, reconcile=False)
    start.wait(60)
    try:
        for limit in limits:
            out.put(("ok", limit, svc.build_dataset({"limit": limit})["dataset"]["id"]))
    except Exception as exc:  # reported by the test
        out.put(("error", 0, repr(exc)))
    finally:
        svc.close()


def test_racing_dataset_builds_get_distinct_ids_and_unmixed_files(
    tmp_path: Path, demo_db: Path
) -> None:
    settings = Settings.from_env(
        home=tmp_path / "home",
        trajectories=demo_db,
        agent_config=tmp_path / "a.json",
        cache=tmp_path / "c",
    )
    svc = TrainingService(settings)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    plan = [[11, 23], [12, 24], [13, 25]]  # a distinct limit per build: distinct contents
    procs = [ctx.Process(target=_build_in_process, args=(settings, p, start, out)) for p in plan]
    for p in procs:
        p.start()
    thread_limits = [14, 26]
    with ThreadPoolExecutor(2) as pool:
        time.sleep(2.0)  # let the spawned interpreters import first, then all go at once
        start.set()
        threads = [pool.submit(svc.build_dataset, {"limit": n}) for n in thread_limits]
        results = [out.get(timeout=120) for _ in range(sum(map(len, plan)))]
        results += [
            ("ok", n, f.result()["dataset"]["id"])
            for n, f in zip(thread_limits, threads, strict=True)
        ]
    for p in procs:
        p.join(60)
    assert [r for r in results if r[0] != "ok"] == []
    ids = [r[2] for r in results]
    assert len(set(ids)) == len(ids) == 8
    listed = {d["id"]: d for d in svc.list_datasets()["datasets"]}
    assert set(listed) == set(ids)
    assert dataset_violations(settings, svc.store) == []
    assert sorted(e.name for e in settings.datasets_dir.iterdir()) == sorted(ids)
    # Each folder holds exactly what a lone build with its options writes: nothing mixed.
    for _, limit, ds_id in results:
        assert listed[ds_id]["trajectoryCount"] == limit
        alone = svc.build_dataset({"limit": limit})["dataset"]
        assert _lines(Path(listed[ds_id]["path"])) == _lines(Path(alone["path"])), ds_id
    built = [e for e in svc.events() if e["kind"] == "dataset_built"]
    assert len(built) == 8 + 8
    assert store_violations(settings) == []
    svc.close()


def test_kernel_server_and_cli_share_one_store(
    tmp_path: Path, demo_db: Path, job_model_dir: Path, quiet_env: None
) -> None:
    """Three processes write at once: no "database is locked", counts add up."""
    lab = {
        "home": tmp_path / "home",
        "trajectories": demo_db,
        "agent_config": tmp_path / "agent.json",
        "cache": tmp_path / "cache",
    }
    settings = Settings.from_env(**{k: str(v) for k, v in lab.items()})
    kernel = TrainingService(settings)  # a notebook kernel's in-process service
    rounds = 4
    job = {"model": str(job_model_dir), "backend": "cpu", "iterations": 5}
    errors: list[str] = []
    made: dict[str, list[str]] = {"datasets": [], "jobs": [], "cancelled": []}
    lock = threading.Lock()

    def note(kind: str, value: str) -> None:
        with lock:
            made[kind].append(value)

    with make_occupied(kernel.store), live_server(tmp_path / "srv", lab) as server:
        http = httpx.Client(
            base_url=f"{server.url}api/training/",
            trust_env=False,
            timeout=60,
            headers={"Authorization": f"token {server.token}"},
        )

        def rest_actor() -> None:
            for i in range(rounds):
                r = http.post("datasets/build", json={"limit": 5 + i})
                if r.status_code != 201:
                    errors.append(f"REST build {r.status_code}: {r.text}")
                    return
                note("datasets", r.json()["dataset"]["id"])
                r = http.post("jobs", json={**job, "datasetId": r.json()["dataset"]["id"]})
                if r.status_code != 201 or r.json()["job"]["status"] != "queued":
                    errors.append(f"REST job {r.status_code}: {r.text}")
                    return
                note("jobs", r.json()["job"]["id"])
                if i % 2:
                    c = http.post(f"jobs/{r.json()['job']['id']}/cancel")
                    if c.status_code != 200:
                        errors.append(f"REST cancel {c.status_code}: {c.text}")
                    note("cancelled", r.json()["job"]["id"])
                http.get("jobs")
                http.get("status")

        def kernel_actor() -> None:
            try:
                for i in range(rounds):
                    ds_id = kernel.build_dataset({"limit": 9 + i})["dataset"]["id"]
                    note("datasets", ds_id)
                    rec = kernel.start_job({**job, "datasetId": ds_id})["job"]
                    note("jobs", rec["id"])
                    if i % 2 == 0:
                        kernel.cancel_job(rec["id"])
                        note("cancelled", rec["id"])
                    kernel.list_jobs()
                    kernel.status()
            except Exception as exc:
                errors.append(f"kernel: {exc!r}")

        def cli_actor() -> None:
            base = ["--home", str(lab["home"]), "--trajectories", str(demo_db)]
            for i in range(rounds):
                r = cli(*base, "datasets", "build", "--limit", str(13 + i), "--json")
                if r.returncode != 0:
                    errors.append(f"CLI build {r.returncode}: {r.stderr}")
                    return
                ds_id = json.loads(r.stdout)["dataset"]["id"]
                note("datasets", ds_id)
                r = cli(
                    *base,
                    "jobs",
                    "start",
                    "--dataset-id",
                    ds_id,
                    "--model",
                    str(job_model_dir),
                    "--backend",
                    "cpu",
                    "--iterations",
                    "5",
                    "--json",
                )
                if r.returncode != 0:
                    errors.append(f"CLI job {r.returncode}: {r.stderr}")
                    return
                note("jobs", json.loads(r.stdout)["job"]["id"])

        actors = [threading.Thread(target=f) for f in (rest_actor, kernel_actor, cli_actor)]
        for t in actors:
            t.start()
        for t in actors:
            t.join(300)
        http.close()
        log = server.log.read_text(errors="replace")
        store = kernel.store
        assert errors == []
        assert "database is locked" not in log and "Traceback" not in log, server.log_tail()
        assert len(made["datasets"]) == 3 * rounds and len(set(made["datasets"])) == 3 * rounds
        assert {d["id"] for d in store.list_datasets()} == set(made["datasets"])
        jobs = {j["id"]: j for j in store.list_jobs()}
        assert set(made["jobs"]) <= set(jobs) and len(jobs) == 3 * rounds + 1  # + occupier
        for job_id in made["jobs"]:
            want = "cancelled" if job_id in made["cancelled"] else "queued"
            assert jobs[job_id]["status"] == want, jobs[job_id]
            assert jobs[job_id]["pid"] is None  # queued behind the occupier: never launched
        kinds = [e["kind"] for e in store.events()]
        assert kinds.count("dataset_built") == 3 * rounds
        assert kinds.count("job_queued") == 3 * rounds
        assert kinds.count("job_cancelled") == len(made["cancelled"])
        assert dataset_violations(settings, store) == []
        cleanup_jobs(JobManager(settings, store))
    assert store_violations(settings) == []
    kernel.close()
