"""``milady-lab jobs``: start --wait (exit codes, Ctrl-C with and without a terminal),
list, show and cancel, run as real CLI processes over one home."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from milady_lab.config import Settings
from milady_lab.state import StateStore

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import CLI_WITH_STACKS, add_dataset, stopped_on_ctrl_c, wait_for

pytestmark = pytest.mark.slow

CLI = CLI_WITH_STACKS


def _argv(settings: Settings, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        CLI,
        "--home",
        str(settings.home),
        "--trajectories",
        settings.trajectories,
        "--cache",
        str(settings.cache),
        *args,
    ]


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(settings, *args), capture_output=True, text=True, timeout=120)


def test_jobs_cli(
    manager: object, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    start = [
        "jobs",
        "start",
        "--dataset-id",
        ds,
        "--model",
        str(job_model_dir),
        "--backend",
        "cpu",
        "--wait",
    ]

    # Ctrl-C without a terminal: the job is left running and the command says so.
    a = subprocess.Popen(
        _argv(settings, *start, "--iterations", "1000000", "--batch-size", "1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = a.stderr.readline().split()
    assert first[0] == "job" and first[2] == "running", first
    a_id = first[1]
    wait_for(lambda: (store.get_job(a_id)["currentIteration"] or 0) > 0, 120, "training")
    a.send_signal(signal.SIGINT)
    try:
        assert stopped_on_ctrl_c(a, 30) == 130
    finally:
        if a.poll() is None:
            a.kill()
        _, err = a.communicate()
        print(err, file=sys.stderr)  # on a failure, what it said (its stacks, if it hung)
    assert f"job {a_id} keeps running" in err
    assert store.get_job(a_id)["status"] == "running"

    # Ctrl-C on a terminal asks; "y" cancels (this job is queued behind the first).
    master, slave = pty.openpty()
    b = subprocess.Popen(
        _argv(settings, *start, "--iterations", "3", "--json"),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    first = b.stderr.readline().split()
    assert first[2] == "queued", first
    time.sleep(0.8)  # into the follow loop
    b.send_signal(signal.SIGINT)
    time.sleep(0.8)
    os.write(master, b"y\n")
    out, err = b.communicate(timeout=60)
    os.close(master)
    assert b.returncode == 1, err
    assert "Cancel job" in out
    assert json.loads(out[out.index("{") :])["job"]["status"] == "cancelled"

    done = _run(settings, "jobs", "cancel", a_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["job"]["status"] == "cancelled"
    again = _run(settings, "jobs", "cancel", a_id)  # already cancelled: the documented 409
    assert again.returncode == 1 and f"job {a_id} already cancelled" in again.stderr

    # A short job: --wait ends with the final state, exit 0 when completed.
    c = _run(settings, *start, "--iterations", "2", "--json")
    assert c.returncode == 0, c.stderr
    job = json.loads(c.stdout)["job"]
    assert job["status"] == "completed" and job["modelId"].startswith("model-")
    assert "pid" not in job and job["progress"] == 1.0

    refused = _run(settings, "jobs", "cancel", job["id"])
    assert refused.returncode == 1 and "already completed" in refused.stderr
    assert _run(settings, "jobs", "show", "../../etc/passwd").returncode == 2
    assert _run(settings, "jobs", "start", "--iterations", "0").returncode == 2
    listed = _run(settings, "jobs", "list", "--json")
    assert {j["status"] for j in json.loads(listed.stdout)["jobs"]} == {"cancelled", "completed"}
    table = _run(settings, "jobs", "list")
    assert table.stdout.splitlines()[0].split()[:2] == ["id", "status"]
    shown = _run(settings, "jobs", "show", job["id"])
    assert "modelId" in shown.stdout and "completed" in shown.stdout
