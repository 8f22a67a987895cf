"""Base, SFT, DPO and KTO side by side on agent-shaped data (issue 27's measured example).

Writes an agent-shaped corpus (``milady-lab demo-data --shape agent``: elizaOS's prompt
templates and characters, TOON replies with some mistakes, rewarded rollouts of shared
scenarios), builds the three datasets each objective trains on (``sft``; ``pairs`` for
DPO; ``labelled`` for KTO, rewards above ``--label-threshold`` and the agent's verifiable
failures), trains one LoRA adapter per objective from the same base with the same budget,
and benchmarks each on the *same* held-out examples: the pairs dataset's, so every row
gets ``formatValid`` and ``actionAccuracy`` on the chosen replies and
``preferenceAccuracy`` on the pairs, each with its 95 % bootstrap interval. The base row
is the benchmarks' own baseline (the adapter off, same examples, same seed).

    python benchmarks/compare_objectives.py [--trajectories 2400] [--iterations 24] ...

Slow on a CPU (three trainings and three benchmarks); the docs record one run's table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from milady_lab import Settings, TrainingService
from milady_lab.demo import write_demo_db

SCORES = ("formatValid", "actionAccuracy", "preferenceAccuracy")
OBJECTIVES = {"sft": "sft", "dpo": "pairs", "kto": "labelled"}


def wait(svc: TrainingService, job_id: str) -> dict[str, Any]:
    """Until the job ends, a line per change of its iteration."""
    seen = None
    while True:
        job = svc.get_job(job_id)["job"]
        now = (job["status"], job.get("currentIteration"))
        if now != seen:
            print(f"  {job_id}: {now[0]} {now[1] or 0}/{job['totalIterations']}", flush=True)
            seen = now
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(5)


def cell(block: Any, intervals: Any, name: str) -> str:
    value = (block or {}).get(name)
    if value is None:
        return "—"
    bounds = (intervals or {}).get(name)
    return f"{value:.2f} [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trajectories", type=int, default=2400)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--iterations", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=1024)
    p.add_argument("--sft-learning-rate", type=float, default=1e-3)
    p.add_argument("--preference-learning-rate", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--label-threshold", type=float, default=0.5)
    p.add_argument("--examples", type=int, default=24, help="held-out examples benchmarked")
    p.add_argument("--home", type=Path, help="default: a temporary folder")
    a = p.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="compare-objectives-") as tmp:
        home = a.home or Path(tmp) / "home"
        home.mkdir(parents=True, exist_ok=True)
        db = home / "agent-shaped.sqlite"
        write_demo_db(db, count=a.trajectories, seed=a.seed, shape="agent")
        settings = Settings.from_env(home=home, trajectories=db, agent_config=home / "agent.json")
        svc = TrainingService(settings)
        try:
            return run(svc, a, started)
        finally:
            svc.close()


def run(svc: TrainingService, a: argparse.Namespace, started: float) -> int:
    datasets: dict[str, dict[str, Any]] = {}
    for objective, kind in OBJECTIVES.items():
        body: dict[str, Any] = {} if kind == "sft" else {"kind": kind}
        if kind == "labelled":
            body["labelThreshold"] = a.label_threshold
        ds = svc.build_dataset(body)["dataset"]
        datasets[objective] = ds
        print(
            f"{kind} dataset {ds['id']}: {ds['trainCount']} train / {ds['validCount']} held out "
            + str(ds.get("labelCounts") or ds.get("pairCount") or ""),
            flush=True,
        )
    models: dict[str, str] = {}
    for objective in OBJECTIVES:
        preference = objective != "sft"
        body = {
            "datasetId": datasets[objective]["id"],
            "objective": objective,
            "iterations": a.iterations,
            "batchSize": a.batch_size,
            "maxSeqLength": a.max_seq_length,
            "learningRate": a.preference_learning_rate if preference else a.sft_learning_rate,
            "seed": a.seed,
        }
        if preference:
            body["beta"] = a.beta
        t0 = time.monotonic()
        job = wait(svc, svc.start_job(body)["job"]["id"])
        if job["status"] != "completed":
            print(f"{objective} job {job['id']} {job['status']}: {job.get('error')}")
            return 1
        models[objective] = job["modelId"]
        print(f"{objective}: trained in {time.monotonic() - t0:.0f} s, loss {job.get('loss')}")
    rows: dict[str, tuple[Any, Any]] = {}
    request = {"datasetId": datasets["dpo"]["id"], "maxExamples": a.examples, "seed": 0}
    for objective, model_id in models.items():
        t0 = time.monotonic()
        bench = svc.benchmark_model(model_id, request)
        print(f"{objective}: benchmarked in {time.monotonic() - t0:.0f} s", flush=True)
        iv = bench.intervals or {}
        rows.setdefault("base", (bench.baseline.to_dict(), iv.get("baseline")))
        rows[objective] = (bench.scores.to_dict(), iv.get("scores"))
        diff = (bench.differences or {}).get("baseline") or {}
        changes = ", ".join(
            f"{n} {d['delta']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
            for n in SCORES
            if isinstance(d := diff.get(n), dict)
        )
        print(f"  vs base (paired): {changes}", flush=True)
    counts = bench.counts or {}
    print(
        f"\n{bench.examples} held-out examples of the pairs dataset "
        f"(formatValid counted {counts.get('formatValid')}, actionAccuracy "
        f"{counts.get('actionAccuracy')}, preferenceAccuracy {counts.get('preferenceAccuracy')} "
        f"pairs); {a.iterations} iterations x batch {a.batch_size}, maxSeqLength "
        f"{a.max_seq_length}; {time.monotonic() - started:.0f} s in all\n"
    )
    print("| model | " + " | ".join(SCORES) + " |")
    print("|---|" + "---|" * len(SCORES))
    for name, (block, intervals) in rows.items():
        print(f"| {name} | " + " | ".join(cell(block, intervals, s) for s in SCORES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
