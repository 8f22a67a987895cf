"""``make demo``: the whole pipeline, headless, through the same service the UI uses.

explore → build a dataset → fine-tune SmolLM2 (live tqdm bar) → benchmark against the
base model → activate into a scratch agent config → import into Ollama when one
answers on localhost. Prints the benchmark table at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import httpx

from .cli.jobs import update_bar
from .config import Settings
from .errors import ConflictError, MiladyLabError
from .service import TrainingService
from .state import FINAL_STATUSES, JobStatus


def _ollama_running(url: str = "http://127.0.0.1:11434") -> bool:
    try:
        return httpx.get(f"{url}/api/version", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def follow_job(svc: TrainingService, job_id: str) -> dict:
    """Show a tqdm bar for a job until it ends; returns the final record."""
    from tqdm.auto import tqdm

    job = svc.get_job(job_id)["job"]
    # In a log (not a terminal) a line every 30 s, not a rewrite every half second.
    every = 0.1 if sys.stderr.isatty() else 30.0
    bar = tqdm(
        total=job["totalIterations"], unit="it", desc=job_id, dynamic_ncols=True, mininterval=every
    )
    while True:
        job = svc.get_job(job_id)["job"]
        update_bar(bar, job)
        if job["status"] in FINAL_STATUSES:
            bar.close()
            return job
        time.sleep(0.5)


def _cell(value: float | None, bounds: list[float | None] | None) -> str:
    if value is None:
        return "—"
    lo, hi = bounds or (None, None)
    return f"{value:.3f}" + (f" ({lo:.2f}–{hi:.2f})" if lo is not None and hi is not None else "")


def scores_table(bench: dict, name: str) -> str:
    """The benchmark as a Markdown table: each score with its 95 % interval, and how many
    examples it counted (formatValid and actionAccuracy leave some out)."""
    intervals = bench.get("intervals") or {}
    counts = bench.get("counts") or {}
    rows = [f"| score | base model | fine-tuned ({name}) | examples |", "|---|---|---|---|"]
    for key in bench["scores"]:
        base = _cell(bench["baseline"].get(key), (intervals.get("baseline") or {}).get(key))
        tuned = _cell(bench["scores"].get(key), (intervals.get("scores") or {}).get(key))
        rows.append(f"| {key} | {base} | {tuned} | {counts.get(key, bench.get('examples'))} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m milady_lab.demo_pipeline")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--benchmark-examples", type=int, default=32)
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    scratch_config = settings.home / "agent" / "milady.json"
    if "MILADY_LAB_AGENT_CONFIG" not in os.environ:
        settings = settings.with_overrides(agent_config=scratch_config)
    svc = TrainingService(settings)
    try:
        status = svc.status()
        print(f"home: {status['home']}  backend: {status['backend']}")
        print(f"source: {status['trajectorySource']} ({status['trajectorySourceFoundBy']})")
        if not status["runtimeAvailable"]:
            print(f"trajectories unavailable: {status.get('runtimeReason')}", file=sys.stderr)
            return 1

        frame = svc.trajectories_frame().collect()
        print(f"{frame.height} trajectories; by source:")
        print(frame.group_by("source").len().sort("len", descending=True))

        ds = svc.build_dataset({})["dataset"]
        print(
            f"dataset {ds['id']}: {ds['trajectoryCount']} trajectories, "
            f"{ds['exampleCount']} examples ({ds['trainCount']} train / {ds['validCount']} valid)"
        )

        job = svc.start_job(
            {
                "datasetId": ds["id"],
                "iterations": args.iterations,
                "batchSize": args.batch_size,
                "learningRate": args.learning_rate,
            }
        )["job"]
        job = follow_job(svc, job["id"])
        if job["status"] != JobStatus.COMPLETED:
            print(f"job {job['id']} {job['status']}: {job.get('error')}", file=sys.stderr)
            return 1
        print(f"trained {job['trainedTokens']} tokens at {job['tokensPerSecond']:.0f} tok/s")

        model = next(m for m in svc.list_models()["models"] if m["jobId"] == job["id"])
        print(f"model {model['id']} ({model['name']}); benchmarking against the base model …")
        bench = svc.benchmark_model(model["id"], {"maxExamples": args.benchmark_examples})
        print()
        print(scores_table(bench, model["name"]))
        print()

        if _ollama_running():
            imported = svc.import_ollama(model["id"], {})
            print(f"imported into Ollama as {imported['model']['ollamaName']}")
            body: dict[str, object] = {}
        else:
            print("no Ollama on localhost:11434 — skipping the import")
            body = {"providerModel": f"local/{model['name']}"}
        if settings.agent_config == scratch_config:
            body["create"] = True  # the demo's own scratch config; a real one must exist
        try:
            activated = svc.activate_model(model["id"], body)
        except ConflictError as exc:  # the gate: worse than the base beyond the interval
            print(f"not activated: {exc.message}")
            return 0
        print(f"activated {activated['activeModel']} in {settings.agent_config}")
        return 0
    except MiladyLabError as exc:
        print(f"milady-lab: {exc.message}", file=sys.stderr)
        return 1
    finally:
        svc.close()


if __name__ == "__main__":
    sys.exit(main())
