"""Listing: a page at a random offset of a 1M-trajectory SQLite database.

Goal (issue 2): ≤ 20 ms p50 through ``SQLiteSource.summaries`` (what
``GET /api/training/trajectories`` calls). Also shown: the same pages with ``count()``
as the service answers them, the one-time cost of building the paging anchors, and
plain ``LIMIT/OFFSET`` SQL for comparison.

The database is written once by ``milady_lab.demo`` in its ``lean`` form (one short call
per trajectory: summary columns as usual, a few hundred MB instead of ~7 GB; listing
never reads steps) and cached under ``/tmp/milady-lab-bench``.

    python benchmarks/bench_listing.py [--count 1000000] [--pages 400] [--limit 100]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("MILADY_LAB_BENCH_CACHE", "/tmp/milady-lab-bench"))
GOAL_P50_MS = 20.0


def ensure_db(count: int, seed: int) -> Path:
    db = CACHE / f"listing-{count}-seed{seed}-lean.sqlite"
    if not db.exists():
        from milady_lab.demo import write_demo_db

        print(f"generating {db} (once) …", flush=True)
        t = time.perf_counter()
        write_demo_db(db, count, seed, lean=True, shape="regular")
        print(f"  {time.perf_counter() - t:.1f} s", flush=True)
    return db


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50, p99


def timed(fn, offsets: list[int]) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for offset in offsets:
        t = time.perf_counter()
        fn(offset)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args(argv)

    from milady_lab.trajectories.sqlite import SQLiteSource

    db = ensure_db(args.count, args.seed)
    rng = random.Random(1)
    offsets = [rng.randrange(args.count) for _ in range(args.pages)]
    load = os.getloadavg()[0]

    source = SQLiteSource(db)
    t = time.perf_counter()
    total = source.count()
    count_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    source.summaries(args.limit, args.count // 2)
    warm_ms = (time.perf_counter() - t) * 1000
    assert total == args.count, (total, args.count)

    pages = timed(lambda o: source.summaries(args.limit, o), offsets)
    service = timed(lambda o: (source.summaries(args.limit, o), source.count()), offsets)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sql = "SELECT * FROM trajectories ORDER BY start_time DESC, id LIMIT ? OFFSET ?"
    plain = timed(lambda o: conn.execute(sql, (args.limit, o)).fetchall(), offsets[:100])
    conn.close()
    # The agent adds a trajectory while we page: anchors shift instead of rebuilding.
    writer = sqlite3.connect(db)
    writer.execute(
        "INSERT INTO trajectories (id, agent_id, start_time, created_at, updated_at) "
        "VALUES ('bench-new', 'a', (SELECT max(start_time) + 1 FROM trajectories), 'x', 'x')"
    )
    writer.commit()
    try:
        t = time.perf_counter()
        source.count()
        source.summaries(args.limit, args.count // 3)
        after_insert_ms = (time.perf_counter() - t) * 1000
    finally:
        writer.execute("DELETE FROM trajectories WHERE id = 'bench-new'")
        writer.commit()
        writer.close()

    p50, p99 = percentiles(pages)
    s50, s99 = percentiles(service)
    q50, q99 = percentiles(plain)
    size_mb = db.stat().st_size / 2**20
    print(
        f"listing: {args.count} trajectories ({size_mb:.0f} MB SQLite), pages of {args.limit} "
        f"at {args.pages} random offsets"
    )
    print(f"  SQLiteSource.summaries : p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    print(f"  + count() (service)    : p50 {s50:6.2f} ms   p99 {s99:6.2f} ms")
    print(f"  plain LIMIT/OFFSET SQL : p50 {q50:6.2f} ms   p99 {q99:6.2f} ms  (100 pages)")
    print(
        f"  first call: count {count_ms:.0f} ms, building the paging anchors {warm_ms:.0f} ms "
        f"(load average {load:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"  after the agent adds a trajectory: count + deep page {after_insert_ms:.0f} ms")
    print(f"  goal p50 ≤ {GOAL_P50_MS:.0f} ms: {'ok' if p50 <= GOAL_P50_MS else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
