"""Redaction at the speed of the build, on agent-shaped prose (issue 26).

Goals: on a messy agent-shaped database (``tests/privacy/prose.py``: long elizaOS-style
prompts of multi-speaker English, a few planted secrets) and on the project's agent-shaped
demo data (``milady_lab/agent_shape``: elizaOS's own templates and characters), a build with
redaction on (the default) costs ≤ 1.25× the same build with ``"redact": false``; and 100k
regular demo trajectories build with redaction in ≤ 10 s. Same run, same machine.

Ordinary English is what made redaction slow: the old seed-phrase pre-check ("12+
short lowercase words") passed nearly every prompt, and the rules' Unicode word
boundaries kept Rust's fast regex engines off any text with an emoji or a curly quote.

Each build runs in a fresh child process (as ``bench_dataset``), plain and redacted
alternating, best of ``--repeat``; the databases are generated once and cached under
``/tmp/milady-lab-bench``. The redacted build must find exactly the secrets planted.

    python benchmarks/bench_redaction.py [--count 40000] [--shaped-count 20000]
        [--demo-count 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_dataset import CACHE, build_polars, ensure_db

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO, GOAL_S = 1.25, 10.0


def ensure_agent_db(count: int, seed: int) -> tuple[Path, int]:
    """The agent-shaped database (made once) and how many secrets it holds."""
    sys.path.insert(0, str(ROOT / "tests"))
    from privacy.prose import write_agent_db

    db = CACHE / f"agent-{count}-seed{seed}.sqlite"
    meta = db.with_suffix(".json")
    if not (db.exists() and meta.exists()):
        print(f"generating {db} (once) …", flush=True)
        t = time.perf_counter()
        _, planted = write_agent_db(db, count, seed)
        meta.write_text(json.dumps({"planted": planted}))
        print(f"  {time.perf_counter() - t:.1f} s", flush=True)
    return db, json.loads(meta.read_text())["planted"]


def ensure_shaped_db(count: int, seed: int) -> Path:
    """The project's agent-shaped demo data (``demo-data --shape agent``), made once."""
    from milady_lab.demo import write_demo_db

    db = CACHE / f"shaped-{count}-seed{seed}.sqlite"
    if not db.exists():
        print(f"generating {db} (once) …", flush=True)
        t = time.perf_counter()
        tmp = db.with_suffix(".part")
        tmp.unlink(missing_ok=True)
        write_demo_db(tmp, count=count, seed=seed, shape="agent")
        tmp.rename(db)
        print(f"  {time.perf_counter() - t:.1f} s", flush=True)
    return db


def run_child(db: Path, redact: bool) -> tuple[dict[str, Any], float]:
    """(the build's record, its CPU seconds) in a fresh process."""
    home = tempfile.mkdtemp(prefix="home-redaction-", dir=CACHE)
    try:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(db), home, "1" if redact else "0"],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"build of {db} failed")
        return json.loads(output.decode().strip().splitlines()[-1]), usage.ru_utime + usage.ru_stime
    finally:
        shutil.rmtree(home, ignore_errors=True)


def best_of(db: Path, repeat: int, kinds: tuple[bool, ...]) -> dict[bool, tuple[dict, float]]:
    """Best (lowest build seconds) record and CPU-s per kind, the kinds alternating."""
    best: dict[bool, tuple[dict, float]] = {}
    for _ in range(repeat):
        for redact in kinds:
            rec, cpu = run_child(db, redact)
            if redact not in best or rec["seconds"] < best[redact][0]["seconds"]:
                best[redact] = (rec, cpu)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=40_000, help="agent-shaped trajectories")
    parser.add_argument(
        "--shaped-count", type=int, default=20_000, help="agent-shaped demo trajectories"
    )
    parser.add_argument("--demo-count", type=int, default=100_000, help="demo trajectories")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    child = ("DB", "HOME", "REDACT")
    parser.add_argument("--child", nargs=3, metavar=child, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        db, home, redact = args.child
        body = {} if redact == "1" else {"privacy": {"redact": False}}
        print(json.dumps(build_polars(db, home, body)))
        return 0

    CACHE.mkdir(parents=True, exist_ok=True)
    agent_db, planted = ensure_agent_db(args.count, args.seed)
    shaped_db = ensure_shaped_db(args.shaped_count, args.seed)
    demo_db = ensure_db(args.demo_count, args.seed)
    load = os.getloadavg()[0]
    agent = best_of(agent_db, args.repeat, (False, True))
    shaped = best_of(shaped_db, args.repeat, (False, True))
    demo = best_of(demo_db, args.repeat, (True,))
    (plain, plain_cpu), (red, red_cpu) = agent[False], agent[True]
    found = sum(red["redactions"].values())
    assert red["exampleCount"] == plain["exampleCount"], (red, plain)
    assert found == planted, f"found {found} secrets, planted {planted}: {red['redactions']}"
    ratio = red["seconds"] / plain["seconds"]
    size_mb = agent_db.stat().st_size / 2**20
    print(
        f"redaction on agent-shaped prose: {args.count} trajectories ({size_mb:.0f} MB SQLite) → "
        f"{red['exampleCount']} examples; best of {args.repeat}, load average {load:.1f} on "
        f"{os.cpu_count()} CPUs at start"
    )
    print(f"  no redact : {plain['seconds']:6.2f} s build ({plain_cpu:.2f} CPU-s process)")
    print(
        f"  redacted  : {red['seconds']:6.2f} s build ({red_cpu:.2f} CPU-s process), found "
        f"{found} of {planted} planted ({len(red['redactions'])} kinds)"
    )
    print(f"  ratio     : {ratio:.2f}× (goal ≤ {GOAL_RATIO}×)")
    (s_plain, _), (s_red, _) = shaped[False], shaped[True]
    assert s_red["exampleCount"] == s_plain["exampleCount"], (s_red, s_plain)
    s_ratio = s_red["seconds"] / s_plain["seconds"]
    print(
        f"  agent-shaped demo data, {args.shaped_count} trajectories → "
        f"{s_red['exampleCount']} examples: {s_plain['seconds']:.2f} s unredacted, "
        f"{s_red['seconds']:.2f} s redacted → {s_ratio:.2f}×"
    )
    (rec, cpu) = demo[True]
    print(
        f"  demo {args.demo_count // 1000}k : {rec['seconds']:6.2f} s build with redaction "
        f"({cpu:.2f} CPU-s process), {rec['exampleCount']} examples (goal ≤ {GOAL_S:.0f} s)"
    )
    checks = [
        (f"redacted ≤ {GOAL_RATIO}× unredacted", ratio <= GOAL_RATIO),
        (f"agent-shaped demo ≤ {GOAL_RATIO}×", s_ratio <= GOAL_RATIO),
        (f"{args.demo_count // 1000}k with redaction ≤ {GOAL_S:.0f} s", rec["seconds"] <= GOAL_S),
    ]
    print("  goals     : " + ", ".join(f"{n} {'ok' if ok else 'MISSED'}" for n, ok in checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
