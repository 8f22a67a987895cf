"""Jobs on several ranks (``devices: 2``) through torchrun with the gloo backend on cpu:
the loss curve of one process with the same global batch (SFT, DPO and KTO), a cancel
that leaves no rank, a killed rank that fails the job with its reason, and a resume
with the same losses. The option checks (400 before anything starts) run without a
worker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.state import StateStore, now_ms
from milady_lab.training.backends import TrainingCancelled
from milady_lab.training.callbacks import TrainingCallback
from milady_lab.training.distributed import Layout, resolve_devices, torchrun_args
from milady_lab.training.jobs import CANCEL_GRACE_S, JobManager
from milady_lab.training.options import JobOptions
from milady_lab.training.processes import process_start_time

from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import add_dataset, cleanup_jobs, ranks_said, wait_for, wait_status
from .test_preference_training import HELD_OUT, TRAIN_WORDS, labelled_line, pair_line

LONG = 1_000_000  # iterations: such a job runs until it is cancelled or killed
#: Relative: jobs train with bf16 autocast on a CPU that has it, and rows packed
#: differently round differently (in fp32 the curves agree to 1e-6).
LOSS_TOLERANCE = 3e-3
#: A learning rate that moves the loss a lot in a few steps, so a gradient wrong by any
#: factor shows in the curve.
LR = 1e-2


def body(model: Path, dataset_id: str, **kw: Any) -> dict[str, Any]:
    return {"datasetId": dataset_id, "model": str(model), "backend": "cpu", "devices": 2, **kw}


def job_losses(store: StateStore, job_id: str) -> dict[int, float]:
    return {m["iteration"]: m["loss"] for m in store.metrics(job_id) if m.get("loss") is not None}


class _Collect(TrainingCallback):
    """Keeps the losses of an in-process run; stops it after ``stop_after`` iterations."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.losses: dict[int, float] = {}
        self.val: dict[int, float] = {}
        self.metrics: list[dict[str, Any]] = []
        self.tokens = 0
        self.stop_after = stop_after

    def on_metric(self, metric: dict[str, Any]) -> None:
        self.losses[metric["iteration"]] = metric["loss"]
        self.metrics.append(metric)
        if "valLoss" in metric:
            self.val[metric["iteration"]] = metric["valLoss"]
        self.tokens = metric["trainedTokens"]

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.losses) >= self.stop_after


def add_preference_dataset(settings: Settings, store: StateStore, objective: str) -> str:
    """A ``pairs`` (dpo) or ``labelled`` (kto) dataset folder + record, as the builder
    would leave them: 8 training lines or 16 (both labels of each); 5 held out, so with
    2 ranks × batch 2 the last validation chunk leaves one rank without a share."""
    ds_id = f"{objective}-{now_ms()}"
    folder = settings.datasets_dir / ds_id
    folder.mkdir(parents=True)
    if objective == "dpo":
        lines = [[pair_line(w) for w in words] for words in (TRAIN_WORDS, HELD_OUT)]
        lines[1] += [pair_line(w) for w in TRAIN_WORDS[:2]]
        kind = "pairs"
    else:
        lines = [[labelled_line(w, good) for w in words for good in (True, False)]
                 for words in (TRAIN_WORDS, HELD_OUT)]  # fmt: skip
        lines[1] = lines[1][:5]
        kind = "labelled"
    for name, rows in zip(("train.jsonl", "valid.jsonl"), lines, strict=True):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    store.insert_dataset({
        "id": ds_id, "createdAt": 1, "trajectoryCount": 8, "exampleCount": len(lines[0]),
        "trainCount": len(lines[0]), "validCount": len(lines[1]), "path": str(folder),
        "kind": kind, "options": {},
    })  # fmt: skip
    return ds_id


def one_process_run(
    settings: Settings, store: StateStore, model: Path, ds: str, tmp: Path, **kw: Any
) -> _Collect:
    """The same training in this process, alone, with ``batch_size`` the global batch."""
    from milady_lab.training.backends.torch import train_torch
    from milady_lab.training.spec import TrainSpec

    stop_after = kw.pop("stop_after", None)
    spec = TrainSpec(
        job_id="reference",
        backend="cpu",
        model=str(model),
        dataset_dir=Path(store.get_dataset(ds)["path"]),
        output_dir=tmp / "out",
        checkpoint_dir=tmp / "ckpt",
        base_model_path=model,
        checkpoint_every=0,
        threads=1,
        **kw,
    )
    cb = _Collect(stop_after)
    with contextlib.suppress(TrainingCancelled):
        train_torch(spec, cb)
    return cb


def rank_pids(job_id: str) -> dict[int, int]:
    """RANK → pid of the job's live rank processes, from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"milady_lab.training.rank" in cmd and job_id.encode() in cmd:
            rank = next((e[5:] for e in env if e.startswith(b"RANK=")), None)
            if rank is not None and process_start_time(int(entry.name)) is not None:
                out[int(rank)] = int(entry.name)
    return out


def assert_close(got: dict[int, float], want: dict[int, float], iterations: range) -> None:
    for it in iterations:
        assert abs(got[it] - want[it]) < LOSS_TOLERANCE * want[it], (it, got[it], want[it])


# -- options: 400 before anything starts ----------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"devices": 0}, "devices must be at least 1"),
        ({"devices": "two"}, "devices must be an integer"),
        ({"devices": True}, "not a boolean"),
        ({"devices": 3}, "at most one process per core"),
        ({"strategy": "zero3"}, "strategy must be one of ddp, fsdp"),
        ({"nodes": 2}, "nodes > 1 needs rdzvEndpoint"),
        ({"rdzvEndpoint": "host:29500"}, "rdzvEndpoint is only for nodes > 1"),
        ({"nodes": 2, "nodeRank": 2, "rdzvEndpoint": "h:1"}, "nodeRank must be at most 1"),
        ({"nodes": 2, "rdzvEndpoint": "no-port"}, "rdzvEndpoint must be host:port"),
        ({"nodes": 2, "rdzvEndpoint": "h:70000"}, "rdzvEndpoint must be host:port"),
    ],
)
def test_bad_layouts_are_400s_and_start_nothing(
    manager: JobManager, settings: Settings, store: StateStore, fields: dict, message: str
) -> None:
    ds = add_dataset(settings, store)
    with pytest.raises(InputError, match=message):
        manager.start({"datasetId": ds, "backend": "cpu", **fields})
    assert store.list_jobs() == []


def test_devices_auto_and_mlx(store: StateStore, settings: Settings) -> None:
    add_dataset(settings, store)
    auto = JobOptions.from_body({"backend": "cpu", "devices": "auto", "batchSize": 3}, store)
    assert auto.devices == 1  # cpu: one process uses every core already
    two = JobOptions.from_body({"backend": "cpu", "devices": "2", "batchSize": 3}, store)
    assert (two.devices, two.strategy) == (2, "ddp")
    assert two.to_record()["globalBatchSize"] == 6
    with pytest.raises(InputError, match="mlx"):
        resolve_devices(2, "mlx")
    assert resolve_devices("auto", "mlx") == 1


def test_two_machines_use_a_c10d_rendezvous(tmp_path: Path) -> None:
    layout = Layout(devices=8, nodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500")
    args = torchrun_args(layout, "job-x", tmp_path)
    assert "--nnodes=2" in args and "--nproc-per-node=8" in args
    assert "--rdzv-backend=c10d" in args and "--rdzv-endpoint=10.0.0.1:29500" in args
    assert "--rdzv-conf=is_host=0" in args and "--standalone" not in args
    from torch.distributed.run import parse_args

    parsed = parse_args(args)  # torchrun's own parser accepts the line
    assert (parsed.nnodes, parsed.rdzv_backend, parsed.max_restarts) == ("2", "c10d", 0)


# -- real ranks -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_follow_one_process_with_the_same_global_batch(
    manager: JobManager,
    settings: Settings,
    store: StateStore,
    job_model_dir: Path,
    tmp_path: Path,
    strategy: str,
) -> None:
    # At LR (1e-2) this tiny model's loss jumps about, and bf16 rounding that differs
    # between differently packed rows grows with it (under fsdp to 0.8 % by step 8);
    # the curves are compared where training is steady. In fp32: the next test.
    lr = LR / 10
    ds = add_dataset(settings, store)
    kw = {"iterations": 8, "batchSize": 2, "evalEvery": 4, "checkpointEvery": 4, "learningRate": lr}
    job = manager.start(body(job_model_dir, ds, strategy=strategy, **kw))
    rec = wait_status(manager, job["id"], ("completed", "failed", "cancelled"), 120)
    assert rec["status"] == "completed", rec.get("error")
    assert rec["options"]["globalBatchSize"] == 4 and rec["modelId"]
    alone = one_process_run(
        settings, store, job_model_dir, ds, tmp_path, iterations=8, batch_size=4, learning_rate=lr
    )
    got = job_losses(store, job["id"])
    assert_close(got, alone.losses, range(1, 9))
    assert rec["trainedTokens"] == alone.tokens  # the tokens of both ranks
    assert got[8] < got[1]  # it learns
    adapter = Path(store.get_model(rec["modelId"])["adapterPath"])
    assert (adapter / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_in_fp32_two_ranks_are_one_process_to_float_rounding(
    settings: Settings, store: StateStore, job_model_dir: Path, tmp_path: Path, strategy: str
) -> None:
    """The math without bf16 noise: ``train_torch`` on 2 torchrun ranks × batch 2 and in
    this process with batch 4, both fp32, give the same losses to 1e-5 relative (fp32
    rounding: the summation order differs) over 6 steps. Every prompt is detached
    (``promptGradientTokens`` 0), so each row runs two forwards, in step on both ranks."""
    ds = add_dataset(settings, store)
    script = Path(__file__).with_name("fp32_ranks.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    out = tmp_path / "ranks.json"
    path = store.get_dataset(ds)["path"]
    args = [str(job_model_dir), path, str(out), "2", strategy, "6", "sft", "1000", "0", "0"]
    done = subprocess.run(
        [*torchrun, str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, ranks_said(done.stderr)
    alone = one_process_run(
        settings, store, job_model_dir, ds, tmp_path, iterations=6, batch_size=4,
        learning_rate=1e-2, eval_every=1000, cpu_bf16=False, prompt_gradient_tokens=0,
    ).losses  # fmt: skip
    assert alone[6] < alone[1] - 0.5  # lr 1e-2 moves it a lot
    got = json.loads(out.read_text())["loss"]
    assert got == pytest.approx([alone[i] for i in range(1, 7)], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_preference_on_two_ranks_is_one_process_in_fp32(
    settings: Settings, store: StateStore, job_model_dir: Path, tmp_path: Path, objective: str
) -> None:
    """DPO and KTO on 2 torchrun ranks × batch 2 against this process with batch 4, in
    fp32: the same training losses over 4 steps (lr 1e-2 moves them, so the gradients
    agree too) and the same validation loss, to 1e-5 relative. KTO's KL estimate pairs
    completions across the ranks' shares as one process pairs them in its batch."""
    ds = add_preference_dataset(settings, store, objective)
    script = Path(__file__).with_name("fp32_ranks.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    out = tmp_path / "ranks.json"
    # packTokens 1: every completion a row of its own, so a micro-batch is several
    # forwards through DDP before its one backward.
    args = [str(job_model_dir), store.get_dataset(ds)["path"], str(out), "2", "ddp", "4",
            objective, "4", "1"]  # fmt: skip
    done = subprocess.run(
        [*torchrun, str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, ranks_said(done.stderr)
    alone = one_process_run(
        settings, store, job_model_dir, ds, tmp_path, iterations=4, batch_size=4,
        learning_rate=1e-2, eval_every=4, cpu_bf16=False, objective=objective, pack_tokens=1,
    )  # fmt: skip
    assert alone.losses[4] < alone.losses[1] - 0.01  # the steps move the loss
    got = json.loads(out.read_text())
    assert got["loss"] == pytest.approx([alone.losses[i] for i in range(1, 5)], rel=1e-5)
    assert got["valLoss"] == pytest.approx([alone.val[4]], rel=1e-5)
    # The figures averaged over the ranks: DPO's per pair, KTO's KL estimate over both.
    for key in ("rewardMargin", "logpsChosen") if objective == "dpo" else ("klEstimate",):
        want = [m[key] for m in alone.metrics]
        assert got[key] == pytest.approx(want, rel=1e-5, abs=1e-7), key


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_preference_jobs_on_two_ranks_register_an_adapter(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path, objective: str
) -> None:
    """A DPO and a KTO job with ``devices: 2`` through the worker and torchrun: the
    rank-averaged figures in the job's metrics, the adapter registered (the figures
    themselves are checked against one process in fp32 above)."""
    ds = add_preference_dataset(settings, store, objective)
    kw = {"iterations": 3, "batchSize": 2, "evalEvery": 3, "learningRate": LR}
    job = manager.start(body(job_model_dir, ds, objective=objective, **kw))
    rec = wait_status(manager, job["id"], ("completed", "failed", "cancelled"), 120)
    assert rec["status"] == "completed", rec.get("error")
    assert rec["options"]["devices"] == 2 and rec["options"]["globalBatchSize"] == 4
    metrics = store.metrics(job["id"])
    assert [m["iteration"] for m in metrics] == [1, 2, 3] and metrics[-1].get("valLoss")
    # Averaged over the ranks like the loss: DPO's margins, KTO's KL estimate (a KTO
    # batch may hold one label only: its side's log-probabilities then).
    key = "rewardMargin" if objective == "dpo" else "klEstimate"
    sides = ("logpsChosen", "logpsRejected")
    assert all(m.get(key) is not None and any(m.get(k) is not None for k in sides)
               for m in metrics), metrics  # fmt: skip
    adapter = Path(store.get_model(rec["modelId"])["adapterPath"])
    assert (adapter / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_machines_train_one_job_over_a_c10d_rendezvous(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path, tmp_path: Path
) -> None:
    """Two milady-lab homes stand for two machines: each starts the same job (its own
    dataset id, the same contents) with nodes 2 and its nodeRank; node 0 serves the
    rendezvous on loopback. Both train the one global batch and register the adapter."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    other_home = tmp_path / "machine-b"
    other_home.mkdir()
    other = Settings.from_env(
        home=other_home, trajectories=settings.trajectories, agent_config=settings.agent_config,
        cache=settings.cache,
    )  # fmt: skip
    other_store = StateStore(other.state_db)
    other_mgr = JobManager(other, other_store)
    try:
        nodes = [(manager, store, add_dataset(settings, store)),
                 (other_mgr, other_store, add_dataset(other, other_store))]  # fmt: skip
        kw = {"nodes": 2, "rdzvEndpoint": f"127.0.0.1:{port}", "devices": 1}
        jobs = [
            mgr.start(body(job_model_dir, ds, iterations=6, batchSize=2, nodeRank=rank, **kw))
            for rank, (mgr, _, ds) in enumerate(nodes)
        ]
        recs = [
            wait_status(mgr, job["id"], ("completed", "failed", "cancelled"), 120)
            for (mgr, _, _), job in zip(nodes, jobs, strict=True)
        ]
        assert [r["status"] for r in recs] == ["completed"] * 2, [r.get("error") for r in recs]
        assert all(r["options"]["globalBatchSize"] == 4 and r["modelId"] for r in recs)
        curves = [job_losses(st, job["id"]) for (_, st, _), job in zip(nodes, jobs, strict=True)]
        assert curves[0] == curves[1]  # one run, reported on both machines
        want = one_process_run(
            settings, store, job_model_dir, nodes[0][2], tmp_path, iterations=6, batch_size=4
        ).losses
        assert_close(curves[0], want, range(1, 7))
    finally:
        cleanup_jobs(other_mgr)
        other_store.close()


@pytest.mark.slow
def test_cancel_stops_every_rank(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    ds = add_dataset(settings, store)
    job = manager.start(body(job_model_dir, ds, iterations=LONG, batchSize=1, checkpointEvery=0))
    wait_for(lambda: (manager.get(job["id"])["currentIteration"] or 0) >= 2, 120, "training")
    ranks = rank_pids(job["id"])
    assert sorted(ranks) == [0, 1]
    tic = time.monotonic()
    rec = manager.cancel(job["id"])
    took = time.monotonic() - tic
    assert rec["status"] == "cancelled"
    assert took < CANCEL_GRACE_S + 1.0, took
    wait_for(lambda: not rank_pids(job["id"]), 1.0, "every rank to be gone")
    assert all(process_start_time(pid) is None for pid in ranks.values())


@pytest.mark.slow
def test_a_killed_worker_takes_its_ranks_along(
    manager: JobManager, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    """torchrun starts every rank in a session of its own, out of reach of the group
    kill: a SIGKILLed worker (kill -9, out of memory) must still leave no rank behind."""
    ds = add_dataset(settings, store)
    job = manager.start(body(job_model_dir, ds, iterations=LONG, batchSize=1, checkpointEvery=0))
    wait_for(lambda: (manager.get(job["id"])["currentIteration"] or 0) >= 2, 120, "training")
    assert sorted(rank_pids(job["id"])) == [0, 1]
    os.kill(manager.raw(job["id"])["pid"], signal.SIGKILL)
    wait_for(lambda: not rank_pids(job["id"]), 2.0, "the ranks to die with the worker")
    rec = wait_status(manager, job["id"], ("completed", "failed", "cancelled"), 10)
    assert rec["status"] == "failed" and "SIGKILL" in rec["error"], rec["error"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_killed_rank_fails_the_job_and_a_resume_continues_the_same_losses(
    manager: JobManager,
    settings: Settings,
    store: StateStore,
    job_model_dir: Path,
    tmp_path: Path,
    strategy: str,
) -> None:
    ds = add_dataset(settings, store)
    kw = {"iterations": LONG, "batchSize": 2, "checkpointEvery": 3, "strategy": strategy}
    first = manager.start(body(job_model_dir, ds, **kw))
    wait_for(lambda: (manager.get(first["id"])["checkpointIteration"] or 0) >= 3, 120, "a save")
    ranks = rank_pids(first["id"])
    os.kill(ranks[1], signal.SIGKILL)
    failed = wait_status(manager, first["id"], ("completed", "failed", "cancelled"), 30)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("rank 1 killed by SIGKILL"), failed["error"]
    assert "its last lines: " in failed["error"] and "rank 1: training" in failed["error"]
    wait_for(lambda: not rank_pids(first["id"]), 5.0, "the other rank to be gone")
    saved = failed["checkpointIteration"]

    again = manager.start({"resumeFrom": first["id"]})
    assert again["options"]["devices"] == 2  # the layout is kept
    assert again["options"]["strategy"] == strategy
    stop_at = saved + 4
    wait_for(lambda: max(job_losses(store, again["id"]), default=0) >= stop_at, 120, "steps")
    manager.cancel(again["id"])

    want = one_process_run(
        settings, store, job_model_dir, ds, tmp_path, iterations=LONG, batch_size=4,
        stop_after=stop_at,
    ).losses  # fmt: skip
    assert_close(job_losses(store, first["id"]), want, range(1, saved + 1))
    resumed = job_losses(store, again["id"])
    assert min(resumed) == saved + 1
    assert_close(resumed, want, range(saved + 1, stop_at + 1))
