"""Training throughput: milady-lab's torch backend vs a plain transformers ``Trainer``.

Goal (issue 3): ≥ 1.2× the trained non-padding tokens per second of a plain
``Trainer`` + PEFT run with the same LoRA settings (r, alpha, target modules), the same
data, batch size and steps; peak RSS of our default SmolLM2 job ≤ 3 GB.

Data: the demo trajectories (``milady_lab.demo``) through the dataset builder, as a
default job sees them; both runs train on exactly these ``train.jsonl`` lines with
the same assistant-only labels. Each run is a child process, so its peak RSS is its
own (``os.wait4``). Throughput = non-padding tokens of the batches trained / wall time
of the training loop (model loading and tokenising excluded, in both).

On a GPU (``--backend cuda``) it also prints the model-FLOPs utilisation,
6 × parameters × tokens/s ÷ the GPU's dense bf16 peak (table below).

    python benchmarks/bench_training.py [--backend cpu|cuda] [--steps 12] [--batch-size 4]

``--devices N`` (``--strategy ddp|fsdp``) runs our side through torchrun on N ranks, each
with ``--batch-size`` examples (the global batch is N times larger); tokens/s counts all
ranks and the MFU divides by N GPUs. The ``Trainer`` side stays on one device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("MILADY_LAB_BENCH_CACHE", "/tmp/milady-lab-bench"))
GOAL_RATIO, GOAL_RSS_GB = 1.2, 3.0
CPU_DTYPES = {"auto": None, "fp32": False, "bf16": True}
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
    from milady_lab.datasets import BuildOptions, build_dataset
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


# -- the two runs (in a child process each) --------------------------------------------------
class Sync:
    """``--concurrent``: both runs train at the same time, so a busy machine slows both
    alike. Each times its first ``steps`` steps, then keeps training (untimed) until the
    other has timed its own, so neither is ever measured running alone."""

    def __init__(self, which: str) -> None:
        folder = os.environ.get("BENCH_SYNC")
        self.dir = Path(folder) if folder else None
        self.mine = self.dir / f"{which}.done" if self.dir else None
        other = "trainer" if which == "ours" else "ours"
        self.other = self.dir / f"{other}.done" if self.dir else None

    @property
    def on(self) -> bool:
        return self.dir is not None

    def measured(self) -> None:
        if self.mine is not None:
            self.mine.touch()

    def may_stop(self) -> bool:
        return self.other is None or self.other.exists()

    def max_steps(self, steps: int) -> int:
        return steps * 20 if self.on else steps


def run_ours(args: argparse.Namespace, data: Path, model_path: str) -> dict[str, Any]:
    from milady_lab.training.backends import TrainingCancelled, run_training
    from milady_lab.training.callbacks import TrainingCallback
    from milady_lab.training.spec import TrainSpec

    sync = Sync("ours")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun (--devices)
        import torch.distributed as dist

        dist.init_process_group("nccl" if args.backend == "cuda" else "gloo")

    class Clock(TrainingCallback):
        start = end = 0.0
        tokens = 0
        loss = float("nan")

        def on_train_start(self, total_iterations: int, start_iteration: int = 0) -> None:
            self.start = time.perf_counter()

        def on_metric(self, metric: dict[str, Any]) -> None:
            if metric["iteration"] == args.steps:
                self.end = time.perf_counter()
                self.tokens = metric["trainedTokens"]
                self.loss = metric["loss"]
                sync.measured()

        def should_stop(self) -> bool:
            return self.end > 0 and sync.may_stop()

    out = Path(tempfile.mkdtemp(prefix="bench-ours-"))
    spec = TrainSpec(
        job_id="bench",
        backend=args.backend,
        model=args.model,
        dataset_dir=data,
        output_dir=out / "adapter",
        checkpoint_dir=out / "ckpt",
        iterations=sync.max_steps(args.steps),
        batch_size=args.batch_size,
        learning_rate=2e-4,
        lora_rank=LORA["r"],
        lora_alpha=LORA["alpha"],
        target_modules=LORA["targets"],
        max_seq_length=args.max_seq_length,
        eval_every=10**9,
        checkpoint_every=0,
        base_model_path=Path(model_path),
        cpu_bf16=CPU_DTYPES[args.cpu_dtype],
        strategy=args.strategy,
    )
    clock = Clock()
    with contextlib.suppress(TrainingCancelled):
        run_training(spec, clock)
    seconds = clock.end - clock.start
    return {
        "tokens": clock.tokens,
        "seconds": seconds,
        "tps": clock.tokens / seconds,
        "loss": clock.loss,
        "gpuPeak": _gpu_peak(),
    }


def run_trainer(args: argparse.Namespace, data: Path, model_path: str) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from milady_lab.training.backends.data import tokenized_examples

    sync = Sync("trainer")
    cuda = args.backend == "cuda"
    tok = AutoTokenizer.from_pretrained(model_path)
    examples, _ = tokenized_examples(data / "train.jsonl", tok, args.max_seq_length)
    rows = [
        {
            "input_ids": e.input_ids,
            "labels": [t if m else -100 for t, m in zip(e.input_ids, e.mask, strict=True)],
        }
        for e in examples
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
        start = end = 0.0
        loss = float("nan")

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, targs: Any, state: Any, control: Any, **k: Any) -> None:
            if state.global_step == args.steps:
                if cuda:
                    torch.cuda.synchronize()
                self.end = time.perf_counter()
                sync.measured()
            if self.end > 0 and sync.may_stop():
                control.should_training_stop = True

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
        max_steps=sync.max_steps(args.steps),
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
    clock = Clock()
    trainer = Trainer(
        model=model, args=targs, train_dataset=rows, data_collator=collate, callbacks=[clock]
    )
    trainer.train()
    seconds = clock.end - clock.start
    tokens = sum(batch_tokens[: args.steps])
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tps": tokens / seconds,
        "loss": clock.loss,
        "gpuPeak": _gpu_peak(),
    }


def _gpu_peak() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def _child_cmd(which: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, __file__, "--child", which, "--backend", args.backend]
    if which == "ours" and args.devices > 1:
        torchrun = ["-m", "torch.distributed.run", f"--nproc-per-node={args.devices}"]
        cmd[1:1] = [*torchrun, "--standalone"]
        cmd += ["--devices", str(args.devices), "--strategy", args.strategy]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    cmd += ["--model", args.model, "--max-seq-length", str(args.max_seq_length)]
    cmd += ["--trajectories", str(args.trajectories), "--seed", str(args.seed)]
    cmd += ["--cpu-dtype", args.cpu_dtype]
    if args.trainer_bf16:
        cmd.append("--trainer-bf16")
    return cmd


def _children(which: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run the sides in fresh processes (one after the other, or together with
    ``--concurrent``); each one's peak RSS comes from ``wait4``."""
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        # Both sides get the same threads: what a job would pick now (the idle cores),
        # or half the cores each when they run together.
        if args.concurrent:
            env["BENCH_SYNC"] = scratch
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
        elif "OMP_NUM_THREADS" not in env:
            from milady_lab.training.backends.common import pick_cpu_threads

            env["OMP_NUM_THREADS"] = str(pick_cpu_threads({}, os.cpu_count() or 1))
        print(f"threads per run: {env['OMP_NUM_THREADS']}")
        procs: dict[int, str] = {}
        results: dict[str, dict[str, Any]] = {}
        for name in which:
            out = Path(scratch) / f"{name}.json"
            proc = subprocess.Popen(
                _child_cmd(name, args),
                env={**env, "BENCH_RESULT": str(out)},
                stdout=subprocess.DEVNULL,
            )
            procs[proc.pid] = name
            if not args.concurrent:
                results[name] = _reap(proc.pid, name, out)
        for pid, name in procs.items():
            if name not in results:
                results[name] = _reap(pid, name, Path(scratch) / f"{name}.json")
    return {name: results[name] for name in which}


def _reap(pid: int, name: str, out: Path) -> dict[str, Any]:
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"{name} run failed (status {status})")
    rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return {**json.loads(out.read_text()), "rss": rss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--trajectories", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--cpu-dtype",
        default="auto",
        choices=list(CPU_DTYPES),
        help="our cpu run: bf16 where the CPU has native bf16 (auto, the default job), or forced",
    )
    p.add_argument("--trainer-bf16", action="store_true", help="Trainer with bf16=True")
    p.add_argument("--only", choices=["ours", "trainer"], help="run one side only")
    p.add_argument(
        "--concurrent",
        action="store_true",
        help="run both at once, one core each (fair on a machine other work keeps busy)",
    )
    p.add_argument("--devices", type=int, default=1, help="our side on N ranks (torchrun)")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"], help="with --devices")
    p.add_argument("--child", choices=["ours", "trainer"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from milady_lab.config import Settings
    from milady_lab.training.base_models import resolve_base_model

    data = prepare_dataset(args.trajectories, args.seed)
    model_path = str(resolve_base_model(args.model, Settings.from_env()).hf_path)
    if args.child:
        fn = run_ours if args.child == "ours" else run_trainer
        result = fn(args, data, model_path)
        if os.environ.get("RANK", "0") == "0":  # one rank reports (--devices)
            Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
        return 0

    n_lines = len((data / "train.jsonl").read_text().splitlines())
    print(
        f"model {args.model} · backend {args.backend} · {args.steps} steps × batch "
        f"{args.batch_size} · LoRA r={LORA['r']} alpha={LORA['alpha']:g} "
        f"{'/'.join(LORA['targets'])} · {n_lines} examples ({data})"
    )
    mode = "concurrently, one core each" if args.concurrent else "one after the other"
    print(f"runs: {mode} · {os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.1f}")
    sides = [w for w in ("ours", "trainer") if not args.only or w == args.only]
    runs = _children(sides, args)
    for which, r in runs.items():
        gpu = f"  gpu peak {r['gpuPeak'] / 2**30:.2f} GiB" if r.get("gpuPeak") else ""
        print(
            f"{which:>8}: {r['tps']:8.1f} tokens/s  ({r['tokens']} tokens in "
            f"{r['seconds']:.1f} s)  loss {r['loss']:.3f}  peak RSS "
            f"{r['rss'] / 2**30:.2f} GiB{gpu}"
        )
    ok = True
    if "ours" in runs and "trainer" in runs:
        ratio = runs["ours"]["tps"] / runs["trainer"]["tps"]
        ok = ratio >= GOAL_RATIO
        print(f"   ratio: {ratio:.2f}×  (goal ≥ {GOAL_RATIO}×) {'ok' if ok else 'MISSED'}")
    if "ours" in runs:
        rss_gb = runs["ours"]["rss"] / 1e9
        ok = ok and rss_gb <= GOAL_RSS_GB
        print(
            f"peak RSS: {rss_gb:.2f} GB (goal ≤ {GOAL_RSS_GB} GB) "
            f"{'ok' if rss_gb <= GOAL_RSS_GB else 'MISSED'}"
        )
    if args.backend == "cuda":
        _print_mfu(model_path, runs, args.devices)
    return 0 if ok else 1


def _print_mfu(model_path: str, runs: dict[str, dict[str, Any]], devices: int = 1) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    params = sum(p.numel() for p in model.parameters())
    for which, r in runs.items():
        if peak:
            mfu = 6 * params * r["tps"] / (peak * (devices if which == "ours" else 1))
            print(
                f"     MFU: {which} {100 * mfu:.2f} % (6 × {params / 1e6:.0f}M params × "
                f"tokens/s ÷ {peak / 1e12:.0f} TFLOP/s, {name})"
            )
        else:
            print(f"     MFU: unknown peak FLOP/s for {name}")


if __name__ == "__main__":
    sys.exit(main())
