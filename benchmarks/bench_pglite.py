"""PGlite (a desktop agent's database) beside SQLite: listing and building 100k trajectories.

The same demo rows (``bench_dataset``'s 100k-trajectory database) are loaded once into a
PGlite folder with the agent's PGlite version, cached under ``/tmp/milady-lab-bench``.
Then, in one run, for each source: the first answer (for PGlite: the snapshot copy and the
bridge's start), a page at random offsets, and a whole dataset build with redaction.

    python benchmarks/bench_pglite.py [--count 100000] [--pages 50]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_dataset import CACHE, ensure_db

BATCH = 2000


def ensure_pglite(sqlite_db: Path, cache: Path) -> Path:
    """The SQLite rows in a PGlite folder (written once through the bridge's server)."""
    import psycopg

    from milady_lab.trajectories.pglite import BRIDGE_DIR, install_bridge
    from milady_lab.trajectories.schema import COLUMNS, TABLE_DDL

    target = sqlite_db.with_suffix(".pglite")
    if (target / "PG_VERSION").exists():
        return target
    home = install_bridge(cache)
    shutil.copy2(BRIDGE_DIR / "serve.mjs", home / "serve.mjs")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".pglite-"))
    print(f"loading {sqlite_db.name} into PGlite (once) …", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["node", str(home / "serve.mjs"), str(tmp)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    port = json.loads(proc.stdout.readline())["port"]
    src = sqlite3.connect(f"file:{sqlite_db}?mode=ro", uri=True)
    present = {r[1] for r in src.execute("PRAGMA table_info(trajectories)")}
    columns = [c for c in COLUMNS if c in present]  # a cached file may predate a column
    insert = (
        f"INSERT INTO trajectories ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(TABLE_DDL.replace("INTEGER", "BIGINT"))
        rows = src.execute(f"SELECT {', '.join(columns)} FROM trajectories")
        while batch := rows.fetchmany(BATCH):
            with pg.transaction(), pg.cursor() as cur:
                cur.executemany(insert, batch)
    src.close()
    proc.stdin.close()
    proc.wait(timeout=300)
    tmp.rename(target)
    print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return target


def measure(name: str, spec: str, home: Path, cache: Path, pages: int) -> dict[str, float]:
    from milady_lab.config import Settings
    from milady_lab.service import TrainingService

    settings = Settings.from_env(home=home, trajectories=spec, cache=cache)
    svc = TrainingService(settings, reconcile=False)
    t = time.perf_counter()
    total = svc.list_trajectories(limit=100)["total"]
    first = time.perf_counter() - t
    rng = random.Random(7)
    samples = []
    for _ in range(pages):
        offset = rng.randrange(max(1, total - 100))
        t = time.perf_counter()
        svc.list_trajectories(limit=100, offset=offset)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    t = time.perf_counter()
    rec = svc.build_dataset({})["dataset"]
    build = time.perf_counter() - t
    close = getattr(svc.source, "close", None)
    if close:
        close()
    print(
        f"{name:7s} {total} trajectories: first answer {first:.2f} s, page p50 "
        f"{samples[len(samples) // 2]:.1f} ms p99 {samples[int(len(samples) * 0.99)]:.1f} ms, "
        f"build {build:.1f} s ({rec['exampleCount']} examples, redacted)",
        flush=True,
    )
    return {"examples": rec["exampleCount"], "build": build}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=50)
    args = parser.parse_args()
    db = ensure_db(args.count, 1)
    cache = CACHE / "cache"
    pglite = ensure_pglite(db, cache)
    with tempfile.TemporaryDirectory() as tmp:
        lite = measure("sqlite", str(db), Path(tmp) / "a", cache, args.pages)
        pgl = measure("pglite", f"pglite:{pglite}", Path(tmp) / "b", cache, args.pages)
    if lite["examples"] != pgl["examples"]:
        print("the two sources gave different datasets", file=sys.stderr)
        return 1
    print(f"pglite/sqlite build time: {pgl['build'] / lite['build']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
