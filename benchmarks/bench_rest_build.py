"""REST preview/build of a small dataset against a whole CLI process doing the same.

Issue 25's goal: a preview or build through ``/api/training`` costs no more than a
``milady-lab datasets preview|build`` process of the same build plus 0.5 s. The server
runs builds and previews in worker processes (``jupyter_server_ext/builds.py``), so
the first request after the server starts pays for spawning one; this prints that cold
request apart from the warm ones a user makes after it.

    python benchmarks/bench_rest_build.py [--trajectories 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_rest_load import jupyter_server, machine

from milady_lab.demo import write_demo_db

GOAL_EXTRA_S = 0.5


def cli_seconds(args: list[str], env: dict[str, str]) -> float:
    """Wall time of one whole ``milady-lab`` process (interpreter start included)."""
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("milady-lab")), *args],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def rest_seconds(client: httpx.Client, route: str, body: dict[str, object]) -> float:
    start = time.perf_counter()
    answer = client.post(route, json=body)
    elapsed = time.perf_counter() - start
    answer.raise_for_status()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trajectories", type=int, default=20)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-rest-build-") as tmp:
        root = Path(tmp)
        db = root / "trajectories.sqlite"
        write_demo_db(db, count=a.trajectories, seed=7)
        env = {**os.environ, "MILADY_LAB_HOME": str(root / "cli-home")}
        src = ["--trajectories", str(db)]  # a global option: before the command
        cli = {
            "preview": [cli_seconds([*src, "datasets", "preview"], env) for _ in range(a.repeat)],
            "build": [cli_seconds([*src, "datasets", "build"], env) for _ in range(a.repeat)],
        }
        body: dict[str, object] = {}
        with jupyter_server(db, root / "home") as (url, token, _pid):
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=120, trust_env=False) as c:
                # The first of each spawns its worker process (previews and builds have one each).
                cold = {kind: rest_seconds(c, f"datasets/{kind}", body) for kind in cli}
                rest = {
                    kind: [rest_seconds(c, f"datasets/{kind}", body) for _ in range(a.repeat)]
                    for kind in cli
                }
    print(f"{a.trajectories} demo trajectories, {a.repeat} runs each, median (min-max):")
    worst = -float("inf")
    for kind in cli:
        c_med, r_med = statistics.median(cli[kind]), statistics.median(rest[kind])
        worst = max(worst, r_med - c_med, cold[kind] - c_med)
        print(
            f"  {kind}: CLI process {c_med:.2f} s ({min(cli[kind]):.2f}-{max(cli[kind]):.2f}), "
            f"REST {r_med:.3f} s ({min(rest[kind]):.3f}-{max(rest[kind]):.3f}), "
            f"the first after the server started {cold[kind]:.2f} s"
        )
    met = "met" if worst <= GOAL_EXTRA_S else "MISSED"
    print(f"goal REST <= CLI + {GOAL_EXTRA_S} s: {met} (worst REST - CLI: {worst:+.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
