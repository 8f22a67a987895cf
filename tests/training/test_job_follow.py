"""``milady-lab jobs follow ID``: the ``--wait`` bar for a job started elsewhere, which
Ctrl-C leaves running (exit 0, how to follow again), run as a real CLI process on a
terminal (the bar is drawn only there)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from milady_lab.config import Settings
from milady_lab.state import StateStore
from milady_lab.training.jobs import JobManager

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import CLI_WITH_STACKS, add_dataset, stopped_on_ctrl_c, wait_for

pytestmark = pytest.mark.slow

CLI = CLI_WITH_STACKS


def _argv(settings: Settings, *args: str) -> list[str]:
    home = ["--home", str(settings.home), "--trajectories", settings.trajectories]
    return [sys.executable, "-c", CLI, *home, "--cache", str(settings.cache), *args]


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """What the terminal showed until ``needle`` appeared."""
    seen, deadline = b"", time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"no {needle!r} on the terminal in {timeout:.0f} s: {seen[-300:]!r}"
            )
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 4096)
    return seen


def _shown(fd: int, seconds: float) -> bytes:
    """What the terminal shows within ``seconds``."""
    seen, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        seen += os.read(fd, 4096)
    return seen


def test_follow_shows_the_stage_and_ctrl_c_detaches_without_cancelling(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    job = manager.start(
        {"datasetId": ds, "model": str(job_model_dir), "backend": "cpu", "iterations": 1000000,
         "batchSize": 1}
    )  # fmt: skip
    job_id = job["id"]
    wait_for(lambda: (store.get_job(job_id)["currentIteration"] or 0) > 0, 120, "training")

    master, slave = pty.openpty()
    # 24 x 120: a fresh pty is 0 columns wide, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        _argv(settings, "jobs", "follow", job_id),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    try:
        shown = _read_until(master, f"{job_id} training".encode(), 60)  # the bar, its stage
        assert b"it/s" in shown or b"s/it" in shown or b"it [" in shown, shown[-300:]
        proc.send_signal(signal.SIGINT)
        assert stopped_on_ctrl_c(proc, 30) == 0
        said = _read_until(master, b"jobs cancel", 10).decode(errors="replace")
    except AssertionError:  # what it showed since (its stacks, if it hung)
        with contextlib.suppress(OSError):
            print(_shown(master, 2.0).decode(errors="replace"), file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert f"follow it again with `milady-lab jobs follow {job_id}`" in said
    time.sleep(1.0)  # a cancel, had there been one, would show by now
    assert store.get_job(job_id)["status"] == "running"

    # An ended job: its record at once; exit 1 as it did not complete.
    manager.cancel(job_id)
    wait_for(lambda: store.get_job(job_id)["status"] == "cancelled", 30, "the cancel")
    ended = subprocess.run(
        _argv(settings, "jobs", "follow", job_id), capture_output=True, text=True, timeout=60
    )
    assert ended.returncode == 1, ended.stderr
    assert "cancelled" in ended.stdout
    unknown = subprocess.run(
        _argv(settings, "jobs", "follow", "job-nope"), capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2 and "job-nope" in unknown.stderr


def test_a_short_job_goes_through_every_stage_in_order(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    job = manager.start(
        {"datasetId": ds, "model": str(job_model_dir), "backend": "cpu", "iterations": 2,
         "evalEvery": 1}
    )  # fmt: skip
    job_id = job["id"]
    done = wait_for(
        lambda: (r := store.get_job(job_id))["status"] in ("completed", "failed") and r, 120, "end"
    )
    assert done["status"] == "completed", done.get("error")
    stages = [
        e["stage"] for e in store.events() if e["kind"] == "job_stage" and e["jobId"] == job_id
    ]
    # An evaluation after each of the 2 iterations; the last one is followed by saving.
    assert stages == [
        "loading", "training", "evaluating", "training", "evaluating", "saving", "registering"
    ]  # fmt: skip
    assert done["stage"] == "registering"  # a finished job keeps the last stage it reached
    shown = subprocess.run(
        _argv(settings, "jobs", "show", job_id), capture_output=True, text=True, timeout=60
    )
    assert any(line.split() == ["stage", "registering"] for line in shown.stdout.splitlines())


def test_a_logged_bar_draws_at_its_mininterval_not_every_poll() -> None:
    import io

    from tqdm import tqdm

    from milady_lab.cli.jobs import update_bar

    log = io.StringIO()  # make demo's bar when stderr is a log: a line every 30 s
    bar = tqdm(total=100, desc="job-1", file=log, mininterval=30.0, disable=False)
    drawn = log.getvalue().count("\r")
    for i in range(20):  # ten seconds of polls
        update_bar(bar, {"id": "job-1", "status": "running", "currentIteration": i})
    assert log.getvalue().count("\r") == drawn
    bar.last_print_t -= 30.0  # half a minute later
    update_bar(bar, {"id": "job-1", "status": "running", "currentIteration": 21, "loss": 0.5})
    assert log.getvalue().count("\r") == drawn + 1 and "21/100" in log.getvalue()
    bar.close()


def test_a_bar_off_the_terminal_is_updated_without_drawing() -> None:
    from tqdm import tqdm

    from milady_lab.cli.jobs import update_bar

    bar = tqdm(total=10, disable=True)  # jobs follow / start --wait off a terminal
    update_bar(bar, {"id": "job-1", "status": "running", "currentIteration": 3, "loss": 0.5})
    assert bar.n == 3 and bar.postfix == "status=running, loss=0.5000"
    bar.close()
