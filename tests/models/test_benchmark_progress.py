"""A benchmark's progress: examples scored, as ``benchmark_progress`` events (the SSE
stream's) and as the CLI's bar, from a real ``models benchmark`` process on a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.state import StateStore

CLI = "import sys; from milady_lab.cli import main; sys.exit(main())"


def _terminal_output(fd: int, proc: subprocess.Popen, timeout: float) -> bytes:
    """Everything the terminal showed until the process ended."""
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the other side closed
                break
        elif proc.poll() is not None:
            break
    return seen


@pytest.mark.slow
def test_cli_bar_and_events_count_the_examples(
    settings: Settings, store: StateStore, model: dict[str, Any]
) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    home = ["--home", str(settings.home), "--trajectories", settings.trajectories]
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *home, "--cache", str(settings.cache), "models", "benchmark",
         model["id"], "--max-examples", "6"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    os.close(slave)
    try:
        shown = _terminal_output(master, proc, 120).decode(errors="replace")
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 0, shown[-500:]
    assert "6 held-out examples" in out
    # The bar: base and fine-tuned, 6 examples each.
    assert "benchmark" in shown and "12/12" in shown, shown[-500:]

    steps = [
        (e["done"], e["total"])
        for e in store.events()
        if e["kind"] == "benchmark_progress" and e["modelId"] == model["id"]
    ]
    assert steps[0] == (0, 12) and steps[-1] == (12, 12), steps
    assert [d for d, _ in steps] == sorted({d for d, _ in steps}), steps  # each change once
    kinds = [e["kind"] for e in store.events()]
    assert kinds.index("model_benchmarked") > max(
        i for i, k in enumerate(kinds) if k == "benchmark_progress"
    )
