"""``make bench``: run every benchmark script in turn, print its figures and record them.

Each script is self-contained (``python benchmarks/bench_X.py --help``); this runner
only sequences them, so one script's load never skews another's timings. What each
prints goes to the terminal as it comes and into ``benchmarks/RESULTS.md`` (the
documentation site's *Benchmark results* page) with the date and the machine: cores,
CPU, memory, and the load average before and after each script, since this project's
machines are shared and a figure means little without the load it was measured under.
The file is rewritten after every script, so an interrupted run still records the
scripts that finished.

    python benchmarks/run_all.py [--out benchmarks/RESULTS.md] [bench_X.py ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = (
    "bench_dataset.py",
    "bench_redaction.py",
    "bench_pglite.py",
    "bench_listing.py",
    "bench_rest_load.py",
    "bench_rest_build.py",
    "bench_training.py",
    "bench_shared_prefix.py",
    "bench_agent_training.py",
    "bench_agent_benchmark.py",
)


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _first(path: str, key: str) -> str:
    """The value of the first ``key: value`` line of a /proc file ('' when absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine() -> str:
    """One line on the machine: what ``nproc`` says, CPU, memory, OS, Python."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = _first("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[:1]
    mem = f"{int(mem_kb[0]) / 2**20:.0f} GiB" if mem_kb else "unknown memory"
    return (
        f"{cores} cores (`nproc`), {cpu}, {mem}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run(script: Path) -> tuple[int, float, str, str]:
    """Run one script, echoing its output; ``(exit code, seconds, load after, output)``."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    assert proc.stdout is not None
    for raw in proc.stdout:  # bytes: a progress bar's "\r" must not split lines here
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        line = raw.decode("utf-8", "replace").rstrip("\n").rstrip("\r")
        lines.append(line.rsplit("\r", 1)[-1])  # only the bar's last state is kept
    rc = proc.wait()
    return rc, time.monotonic() - start, _load(), "\n".join(lines)


def render(started: str, host: str, sections: list[str]) -> str:
    head = (
        "# `make bench`: the latest figures\n\n"
        f"Written by `make bench` (`benchmarks/run_all.py`) on {started}, on {host}. "
        "The load average (1 / 5 / 15 min) is given before and after each script: this "
        "project's machines are shared, and wall times under load are pessimistic. What the "
        "figures mean, and the goals, are on the Performance page.\n"
    )
    return head + "".join(sections)


def write(out: Path, text: str) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", default=list(SCRIPTS), help="default: all")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    host, sections, failed = machine(), [], []
    for name in args.scripts:
        print(f"\n=== {name} ===", flush=True)
        before = _load()
        rc, seconds, after, output = run(HERE / name)
        print(f"--- {name}: exit {rc} in {seconds:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
        sections.append(
            f"\n## {name}\n\nExit {rc} in {seconds:.0f} s; load average {before} before, "
            f"{after} after.\n\n```text\n{output.strip() or '(no output)'}\n```\n"
        )
        write(args.out, render(started, host, sections))
    print(f"\nfigures written to {args.out}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
