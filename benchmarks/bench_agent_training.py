"""Training throughput on agent-shaped data at ``maxSeqLength`` 2048 (issue 26): examples
trained per second with today's settings against the new ones, same data, same run.

Data: ``--trajectories`` agent-shaped trajectories (``milady_lab.agent_shape`` through
``write_demo_db(shape="agent")``) built into a dataset by the dataset builder, as a job
sees them: prompts of thousands of tokens (the character, the providers, the recent
conversation, the template's instructions) shortened to ``--max-seq-length`` by the
backend's turn dropping, each with a short reply. Each variant is a real run of the
torch CPU backend (``train_torch`` with a ``TrainSpec``, as the worker calls it) in a
fresh process, ``--iterations`` steps of ``--batch-size`` on the same seed, so every
variant trains the very same batches; the variants alternate (A B B A …) over
``--rounds`` rounds, since the machine is shared. The first step of a run (kernels
chosen, memory allocated) is left out; examples/s and tokens/s are over the others,
and the last step's loss is printed beside them (the same batches: the same losses for
``today`` and ``new``).

Variants:

- ``today``: the behaviour before issue 26's training work — no shared prompt
  prefixes (``share_prefix=False``), peft's own casts of LoRA inputs
  (``lean_lora_casts=False``) and gradients through the whole example
  (``prompt_gradient_tokens=None``);
- ``whole``: the defaults but gradients through the whole example
  (``prompt_gradient_tokens=None``): what detaching the prompt gives;
- ``keep-N`` (``--prompt-gradient-tokens N …``): the defaults with the gradient through
  the prompt's last N tokens;
- ``new``: the defaults;
- ``last-N`` (``--lora-layers N …``): the defaults with adapters on the last N layers only
  (``loraLayers``). That trains a smaller adapter, not the same computation faster, so
  its losses differ; what it gives a model is ``make demo``'s to measure (the training
  guide has both figures).

    python benchmarks/bench_agent_training.py [--iterations 2] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("MILADY_LAB_BENCH_CACHE", "/tmp/milady-lab-bench"))
VARIANTS: dict[str, dict[str, Any]] = {
    "today": {"share_prefix": False, "lean_lora_casts": False, "prompt_gradient_tokens": None},
    "whole": {"prompt_gradient_tokens": None},
    "new": {},
}


def prepare_dataset(trajectories: int, seed: int) -> Path:
    """A dataset folder built from agent-shaped trajectories by the builder (cached)."""
    from milady_lab.config import Settings
    from milady_lab.datasets.build import BuildOptions, build_dataset
    from milady_lab.demo import write_demo_db
    from milady_lab.state import StateStore
    from milady_lab.trajectories import open_source

    folder = CACHE / f"agent-training-{trajectories}-{seed}"
    if (folder / "train.jsonl").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".agent-data-", dir=folder.parent) as scratch:
        db_path = Path(scratch) / "demo.sqlite"
        db = write_demo_db(db_path, count=trajectories, seed=seed, shape="agent")
        settings = Settings.from_env(home=Path(scratch) / "home", trajectories=db)
        store = StateStore(settings.state_db)
        source = open_source(settings.trajectories, settings)
        rec = build_dataset(source, settings, store, BuildOptions.from_body({}))
        built = Path(rec.get("path") or settings.datasets_dir / rec["id"])
        tmp = Path(tempfile.mkdtemp(prefix=".agent-ds-", dir=folder.parent))
        (tmp / "train.jsonl").write_bytes((built / "train.jsonl").read_bytes())
        os.replace(tmp, folder)
    return folder


def variant(name: str) -> dict[str, Any]:
    """``TrainSpec`` fields of a variant (see the module docstring)."""
    if name.startswith("last-"):
        return {"lora_layers": int(name.removeprefix("last-"))}
    if name.startswith("keep-"):
        return {"prompt_gradient_tokens": int(name.removeprefix("keep-"))}
    return VARIANTS[name]


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the torch CPU backend, timed at each step's metric."""
    from milady_lab.config import Settings
    from milady_lab.training.backends.torch import train_torch
    from milady_lab.training.base_models import resolve_base_model
    from milady_lab.training.callbacks import MetricPoint, TrainingCallback
    from milady_lab.training.spec import TrainSpec

    class Clock(TrainingCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.metrics: list[MetricPoint] = []
            self.logs: list[str] = []

        def on_metric(self, metric: MetricPoint) -> None:
            self.ends.append(time.perf_counter())
            self.metrics.append(metric)

        def on_log(self, message: str) -> None:
            self.logs.append(message)

    model = resolve_base_model(args.model, Settings.from_env()).hf_path
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as scratch:
        spec = TrainSpec(
            job_id="bench", backend="cpu", model=args.model, dataset_dir=Path(args.data),
            output_dir=Path(scratch) / "out", checkpoint_dir=Path(scratch) / "ckpt",
            iterations=args.iterations, batch_size=args.batch_size,
            max_seq_length=args.max_seq_length, checkpoint_every=0, max_val_examples=0,
            base_model_path=model, threads=args.threads, seed=0,
            **variant(args.child),
        )  # fmt: skip
        train_torch(spec, clock)
    steps = len(clock.ends) - 1
    seconds = clock.ends[-1] - clock.ends[0]
    tokens = clock.metrics[-1]["trainedTokens"] - clock.metrics[0]["trainedTokens"]
    return {
        "examplesPerSecond": steps * args.batch_size / seconds,
        "tokensPerSecond": tokens / seconds,
        "secondsPerStep": seconds / steps,
        "loss": clock.metrics[-1]["loss"],
        "log": [m for m in clock.logs if "CPU threads" in m or "warm-up" in m],
    }


def child(name: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """``name``'s run in a fresh process (its own threads and memory)."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as scratch:
        out = Path(scratch) / "result.json"
        cmd = [sys.executable, __file__, "--child", name, "--data", str(data)]
        for flag in ("iterations", "batch_size", "max_seq_length", "threads", "model"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        env = {**os.environ, "BENCH_RESULT": str(out), "OMP_WAIT_POLICY": "PASSIVE"}
        subprocess.run(cmd, check=True, env=env)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trajectories", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--max-seq-length", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=2, help="per run; the first is warm-up")
    ap.add_argument("--rounds", type=int, default=2, help="alternating pairs of runs")
    # One thread by default: on a shared machine a second one waits at every op's barrier
    # for a descheduled thread (``common.pick_cpu_threads``), and the figure swings with it.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--lora-layers", type=int, nargs="*", default=[], metavar="N",
        help="also time the defaults with adapters on the last N layers only",
    )  # fmt: skip
    ap.add_argument(
        "--prompt-gradient-tokens", type=int, nargs="*", default=[], metavar="N",
        help="also time the defaults with the gradient through the prompt's last N tokens",
    )  # fmt: skip
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(run_child(args)))
        return
    data = prepare_dataset(args.trajectories, args.seed)
    lines = sum(1 for _ in (data / "train.jsonl").open())
    print(
        f"{lines} training lines from {args.trajectories} agent-shaped trajectories · "
        f"{args.model} · maxSeqLength {args.max_seq_length} · batch {args.batch_size} · "
        f"{args.iterations} steps per run (the first left out) · {args.threads} threads"
    )
    names = [*VARIANTS, *(f"last-{n}" for n in args.lora_layers)]
    names += [f"keep-{n}" for n in args.prompt_gradient_tokens]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
            res = child(name, args, data)
            results[name].append(res)
            print(
                f"round {r + 1} {name}: {res['examplesPerSecond']:.3f} examples/s, "
                f"{res['tokensPerSecond']:.0f} tokens/s, loss {res['loss']:.5f} "
                f"(load before {load}; {'; '.join(res['log'])})",
                flush=True,
            )
    print("| variant | examples / s | tokens / s | s / step | last loss |")
    print("|---|---|---|---|---|")
    med: dict[str, float] = {}
    for name, runs in results.items():
        med[name] = statistics.median(x["examplesPerSecond"] for x in runs)
        tps = statistics.median(x["tokensPerSecond"] for x in runs)
        sps = statistics.median(x["secondsPerStep"] for x in runs)
        print(f"| {name} | {med[name]:.3f} | {tps:.0f} | {sps:.1f} | {runs[-1]['loss']:.5f} |")
    pairs = [
        new["examplesPerSecond"] / today["examplesPerSecond"]
        for today, new in zip(results["today"], results["new"], strict=True)
    ]
    print(
        f"examples/s: new {med['new'] / med['today']:.2f}× today (medians of {args.rounds}); "
        f"per round: {', '.join(f'{x:.2f}×' for x in pairs)}"
    )
    for name in names[1:]:
        if name != "new":
            print(f"examples/s: {name} {med[name] / med['today']:.2f}× today")


if __name__ == "__main__":
    main()
