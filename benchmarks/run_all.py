"""``make bench``: run every benchmark script in turn and print its figures.

Each script is self-contained (``python benchmarks/bench_X.py --help``); this runner
only sequences them, so one script's load never skews another's timings.
"""

from __future__ import annotations

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
    "bench_training.py",
)


def main() -> int:
    failed = []
    for name in SCRIPTS:
        print(f"\n=== {name} ===", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / name)])
        print(f"--- {name}: exit {rc} in {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
