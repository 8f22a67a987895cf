"""Training throughput: a milady-lab job against a plain transformers ``Trainer`` + PEFT.

Goal (issue 18): the job's own ``tokensPerSecond`` (what a user sees in the job record)
≥ 1.5× that of a plain ``Trainer`` + PEFT run with the same LoRA settings (r, alpha,
target modules), the same data, batch size and steps; peak RSS of the job ≤ 3 GB.

Both sides count the same thing: trained non-padding tokens over the wall time of the
training steps, the first (warm-up) step reported apart. Ours is a real job: a state
home, the dataset registered, ``TrainingService.start_job`` and its worker process —
the figure is the job record's ``tokensPerSecond`` (and its ``peakMemory``). The
Trainer runs in a child process of its own, timed by a callback at each step's end;
its peak RSS comes from ``wait4``.

Data: the demo trajectories (``milady_lab.demo``) through the dataset builder, as a
default job sees them; both sides train on exactly these ``train.jsonl`` lines with the
same assistant-only labels. The machine has other work on it at times, so the two
sides run interleaved ``--repeats`` times (ours, Trainer, then Trainer, ours, …) and
the median of the pairs' ratios is the figure; the load average is printed before
and after.

On a GPU (``--backend cuda``) it also prints the model-FLOPs utilisation,
6 × parameters × tokens/s ÷ the GPU's dense bf16 peak (table below).

    python benchmarks/bench_training.py [--backend cpu|cuda] [--steps 12] [--batch-size 4]
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
GOAL_RATIO, GOAL_RSS_GB = 1.5, 3.0
LORA = {"r": 8, "alpha": 16.0, "targets": ("q_proj", "k_proj", "v_proj", "o_proj")}

#: Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "T4": 65e12,
    "V100": 125e12,
}


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_FLOPS.items():
        if key.lower() in device_name.lower():
            return value
    return None


# -- data ------------------------------------------------------------------------------------
def prepare_dataset(trajectories: int, seed: int) -> Path:
    """A dataset folder built from demo trajectories (cached), or synthetic chats when the
    demo generator or the builder are not available."""
    folder = CACHE / f"training-data-{trajectories}-{seed}"
    if (folder / "train.jsonl").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".data-", dir=folder.parent))
    try:
        lines = _demo_lines(trajectories, seed, tmp)
    except ImportError:
        lines = _synthetic_lines(trajectories * 3, seed)
    (tmp / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    os.replace(tmp, folder)
    return folder


def _demo_lines(trajectories: int, seed: int, scratch: Path) -> list[dict[str, Any]]:
    from milady_lab.config import Settings
    from milady_lab.datasets.build import BuildOptions, build_dataset
    from milady_lab.demo import write_demo_db
    from milady_lab.state import StateStore
    from milady_lab.trajectories import open_source

    db = write_demo_db(scratch / "demo.sqlite", count=trajectories, seed=seed)
    settings = Settings.from_env(home=scratch / "home", trajectories=db)
    store = StateStore(settings.state_db)
    rec = build_dataset(
        open_source(settings.trajectories, settings), settings, store, BuildOptions.from_body({})
    )
    path = Path(rec.get("path") or settings.datasets_dir / rec["id"]) / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"messages": r["messages"]} for r in rows]


def _synthetic_lines(n: int, seed: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(seed)
    topics = [
        "the weather",
        "a token swap",
        "my calendar",
        "a bug report",
        "the news",
        "a tweet draft",
        "portfolio balance",
        "a meeting summary",
    ]
    out = []
    for i in range(n):
        t = rng.choice(topics)
        words = " ".join(
            rng.choice(["please", "quickly", "now", "again", "today"])
            for _ in range(rng.randint(3, 30))
        )
        out.append(
            {
                "messages": [
                    {"role": "system", "content": "You are Milady, a helpful autonomous agent."},
                    {"role": "user", "content": f"Request {i}: help me with {t} {words}."},
                    {
                        "role": "assistant",
                        "content": f"<thought>The user wants {t}.</thought> "
                        f"<action>REPLY</action> Sure — here is what I found about {t}: "
                        + " ".join(
                            rng.choice(["done", "checked", "ok", "noted"])
                            for _ in range(rng.randint(5, 60))
                        ),
                    },
                ]
            }
        )
    return out


# -- the two sides ---------------------------------------------------------------------------
def run_ours(args: argparse.Namespace, data: Path, model_path: str) -> dict[str, Any]:
    """A real job: registered dataset, ``TrainingService.start_job``, its worker process;
    the figures are the job record's (and its first metric's, for the warm-up)."""
    from milady_lab.config import Settings
    from milady_lab.service import TrainingService
    from milady_lab.state import new_id, now_ms

    home = Path(tempfile.mkdtemp(prefix="bench-job-", dir=CACHE))
    service = TrainingService(Settings.from_env(home=home, trajectories=home / "none.sqlite"))
    lines = (data / "train.jsonl").read_text().splitlines()
    dataset_id = new_id("ds")
    service.store.insert_dataset({
        "id": dataset_id, "createdAt": now_ms(), "trajectoryCount": len(lines),
        "exampleCount": len(lines), "trainCount": len(lines), "validCount": 0,
        "path": str(data), "options": {}, "redactions": {},
    })  # fmt: skip
    body = {
        "datasetId": dataset_id, "backend": args.backend, "model": args.model,
        "iterations": args.steps, "batchSize": args.batch_size, "learningRate": 2e-4,
        "loraRank": LORA["r"], "checkpointEvery": 0,
        "devices": args.devices, "strategy": args.strategy,
    }  # fmt: skip
    job_id = service.start_job(body)["job"]["id"]
    deadline = time.monotonic() + 3600
    while (job := service.get_job(job_id)["job"])["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            service.cancel_job(job_id)
            raise SystemExit("the job did not finish within an hour")
        time.sleep(0.5)
    if job["status"] != "completed":
        raise SystemExit(f"the job ended {job['status']}: {job.get('error')}")
    first = service.job_metrics(job_id)["metrics"][0]
    warm_s = first["trainedTokens"] / first["tokensPerSecond"]
    return {
        "tokens": job["trainedTokens"] - first["trainedTokens"],
        "seconds": (job["trainedTokens"] - first["trainedTokens"]) / job["tokensPerSecond"],
        "tps": job["tokensPerSecond"],
        "warmupTokens": first["trainedTokens"],
        "warmupSeconds": warm_s,
        "loss": job["loss"],
        "rss": job["peakMemory"],
        "gpuPeak": job["peakMemory"] if args.backend == "cuda" else None,
    }


def run_trainer(args: argparse.Namespace, data: Path, model_path: str) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from milady_lab.training.backends.data import batch_indices, tokenized_examples

    cuda = args.backend == "cuda"
    tok = AutoTokenizer.from_pretrained(model_path)
    examples, _ = tokenized_examples(data / "train.jsonl", tok, args.max_seq_length)
    # The very batches the job trains (its seed is 0), in its order: the same tokens.
    order = [
        i for it in range(args.steps) for i in batch_indices(len(examples), args.batch_size, it, 0)
    ]
    rows = [
        {
            "input_ids": examples[i].input_ids,
            "labels": [
                t if m else -100
                for t, m in zip(examples[i].input_ids, examples[i].mask, strict=True)
            ],
        }
        for i in order
    ]
    batch_tokens: list[int] = []  # non-padding tokens of each training batch, in order

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            attn[i, :n] = 1
        batch_tokens.append(int(attn.sum()))
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}

    class Clock(TrainerCallback):
        """The time at the start and at each step's end (the data of a step is fetched
        after the previous one ended, as in our loop)."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.start = 0.0
            self.loss = float("nan")

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, targs: Any, state: Any, control: Any, **k: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

        def on_log(self, targs: Any, state: Any, control: Any, logs: Any = None, **k: Any) -> None:
            if logs and "loss" in logs and state.global_step <= args.steps:
                self.loss = float(logs["loss"])

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.float32, attn_implementation="sdpa"
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            target_modules=list(LORA["targets"]),
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        ),
    )
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        logging_steps=args.steps,
        save_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        bf16=cuda or args.trainer_bf16,
        dataloader_num_workers=0,
        seed=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )

    class InOrder(Trainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return SequentialSampler(train_dataset or self.train_dataset)

    clock = Clock()
    trainer = InOrder(
        model=model, args=targs, train_dataset=rows, data_collator=collate, callbacks=[clock]
    )
    trainer.train()
    seconds = clock.ends[-1] - clock.ends[0]  # steps 2..N: the first is the warm-up
    tokens = sum(batch_tokens[1 : args.steps])
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tps": tokens / seconds,
        "warmupTokens": batch_tokens[0],
        "warmupSeconds": clock.ends[0] - clock.start,
        "loss": clock.loss,
        "gpuPeak": _gpu_peak(),
    }


def _gpu_peak() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def _child(which: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """One side in a fresh process; the Trainer's peak RSS from ``wait4`` (ours is the
    job worker's own ``peakMemory``)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        out = Path(scratch) / f"{which}.json"
        cmd = [sys.executable, __file__, "--child", which, "--backend", args.backend]
        cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
        cmd += ["--model", args.model, "--max-seq-length", str(args.max_seq_length)]
        cmd += ["--trajectories", str(args.trajectories), "--seed", str(args.seed)]
        cmd += ["--trainer-bf16"] if args.trainer_bf16 else []
        cmd += ["--devices", str(args.devices), "--strategy", args.strategy]
        proc = subprocess.Popen(cmd, env={**env, "BENCH_RESULT": str(out)},
                                stdout=subprocess.DEVNULL)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"{which} run failed (status {status})")
        result = json.loads(out.read_text())
    rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    result.setdefault("rss", None)
    result["rss"] = result["rss"] or rss
    return result


def _bench_env() -> dict[str, str]:
    """Both sides get the same threads: what a job would pick now (the idle cores)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if "OMP_NUM_THREADS" not in env:
        from milady_lab.training.backends.common import pick_cpu_threads

        env["OMP_NUM_THREADS"] = str(pick_cpu_threads(None, os.cpu_count() or 1))
    return env


def _show(which: str, r: dict[str, Any]) -> None:
    gpu = f"  gpu peak {r['gpuPeak'] / 2**30:.2f} GiB" if r.get("gpuPeak") else ""
    print(
        f"{which:>8}: {r['tps']:8.1f} tokens/s  ({r['tokens']} tokens in {r['seconds']:.1f} s; "
        f"warm-up step {r['warmupTokens']} tokens in {r['warmupSeconds']:.1f} s)  "
        f"loss {r['loss']:.3f}  peak RSS {r['rss'] / 2**30:.2f} GiB{gpu}",
        flush=True,
    )


def _machine() -> str:
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--trajectories", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="interleaved pairs of runs")
    p.add_argument("--trainer-bf16", action="store_true", help="Trainer with bf16=True")
    p.add_argument("--only", choices=["ours", "trainer"], help="run one side only")
    p.add_argument("--child", choices=["ours", "trainer"], help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=1, help="our job on N ranks (torchrun)")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"], help="with --devices")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the first is the warm-up)")

    from milady_lab.config import Settings
    from milady_lab.training.base_models import resolve_base_model

    CACHE.mkdir(parents=True, exist_ok=True)
    data = prepare_dataset(args.trajectories, args.seed)
    model_path = str(resolve_base_model(args.model, Settings.from_env()).hf_path)
    if args.child:
        fn = run_ours if args.child == "ours" else run_trainer
        Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(fn(args, data, model_path)))
        return 0

    n_lines = len((data / "train.jsonl").read_text().splitlines())
    env = _bench_env()
    print(
        f"model {args.model} · backend {args.backend} · {args.steps} steps × batch "
        f"{args.batch_size} · LoRA r={LORA['r']} alpha={LORA['alpha']:g} "
        f"{'/'.join(LORA['targets'])} · {n_lines} examples ({data})"
    )
    print(f"machine: {_machine()} · {env['OMP_NUM_THREADS']} threads per run · "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)  # fmt: skip
    sides = [w for w in ("ours", "trainer") if not args.only or w == args.only]
    runs: dict[str, list[dict[str, Any]]] = {w: [] for w in sides}
    for i in range(max(1, args.repeats)):
        for which in sides if i % 2 == 0 else sides[::-1]:
            runs[which].append(r := _child(which, args, env))
            _show(which, r)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return _verdict(args, runs, model_path)


def _verdict(
    args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], model_path: str
) -> int:
    ok = True
    if "ours" in runs and "trainer" in runs:
        pairs = [o["tps"] / t["tps"] for o, t in zip(runs["ours"], runs["trainer"], strict=True)]
        ratio = statistics.median(pairs)
        ok = ratio >= GOAL_RATIO
        shown = ", ".join(f"{x:.2f}" for x in pairs)
        print(f"   ratio: {ratio:.2f}× median of {len(pairs)} pairs ({shown}) on the job's own "
              f"tokensPerSecond (goal ≥ {GOAL_RATIO}×) {'ok' if ok else 'MISSED'}")  # fmt: skip
    if "ours" in runs:
        rss_gb = max(r["rss"] for r in runs["ours"]) / 1e9
        ok = ok and rss_gb <= GOAL_RSS_GB
        print(
            f"peak RSS: {rss_gb:.2f} GB (goal ≤ {GOAL_RSS_GB} GB) "
            f"{'ok' if rss_gb <= GOAL_RSS_GB else 'MISSED'}"
        )
    if args.backend == "cuda":
        _print_mfu(model_path, {w: rs[-1] for w, rs in runs.items()})
    return 0 if ok else 1


def _print_mfu(model_path: str, runs: dict[str, dict[str, Any]]) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    params = sum(p.numel() for p in model.parameters())
    for which, r in runs.items():
        if peak:
            mfu = 6 * params * r["tps"] / peak
            print(
                f"     MFU: {which} {100 * mfu:.2f} % (6 × {params / 1e6:.0f}M params × "
                f"tokens/s ÷ {peak / 1e12:.0f} TFLOP/s, {name})"
            )
        else:
            print(f"     MFU: unknown peak FLOP/s for {name}")


if __name__ == "__main__":
    sys.exit(main())
