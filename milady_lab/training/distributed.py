"""Training on several devices and machines: the job options that say how, and the
launch of the ranks through PyTorch's own launcher (``torch.distributed.run``, i.e.
``torchrun``).

Process layout of a job with ``devices × nodes > 1`` on one machine::

    worker (leads the job's process group; its pid is on the job record)
      └─ torchrun's elastic agent, in the worker's own process (``torch.distributed.run``)
           ├─ python -m milady_lab.training.rank JOB   LOCAL_RANK=0 — the reporter
           └─ python -m milady_lab.training.rank JOB   LOCAL_RANK=1 …

The worker claims the job and records its end, as for one process. The reporter (local
rank 0 of each machine: rank 0 on one machine) writes progress, heartbeat, metrics,
checkpoints and the adapter; all ranks train. torchrun starts each rank in a session of
its own, so a cancel reaches them through the agent: SIGTERM to the worker's group makes
the agent SIGTERM every rank and SIGKILL, ``SHUTDOWN_TIMEOUT_S`` later, those still
running; and a rank dies with its parent (``PR_SET_PDEATHSIG``), so the SIGKILL of the
group after ``processes.CANCEL_GRACE_S`` leaves no rank behind either.

Everything here is cheap to import (torch is imported only to launch), because
``options`` checks the fields on every ``POST /jobs``.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import validation as v
from ..api.schema import JsonObject
from ..atomic import write_bytes
from ..errors import InputError, WorkerError
from .callbacks import TrainingCallback, TrainingCancelled
from .request import MAX_DEVICES, MAX_NODES, RecordedOptions
from .spec import TrainResult, TrainSpec

STRATEGIES = ("ddp", "fsdp")
#: Seconds torchrun's agent waits for a SIGTERMed rank before SIGKILL; below
#: ``processes.CANCEL_GRACE_S`` so a cancel ends every rank within its 5 s.
SHUTDOWN_TIMEOUT_S = 3
#: A collective that waits longer than this fails its rank (and so the job): the same
#: limit as the heartbeat rule (``jobs.HEARTBEAT_TIMEOUT_S``), for a hung peer.
COLLECTIVE_TIMEOUT_S = 120.0
#: The rendezvous id of multi-machine jobs: job ids differ between machines, and one
#: rendezvous endpoint serves one job at a time.
RDZV_ID = "milady-lab"
#: Where a job's ranks find their ``TrainSpec`` and leave their result and logs.
RANKS_DIR = "ranks"
SPEC_FILE = "spec.pkl"
RESULT_FILE = "result.pkl"

_ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):(\d{1,5})")


@dataclass(frozen=True)
class Layout:
    """How many processes train one job, where, and how the model is spread over them."""

    devices: int = 1
    strategy: str = "ddp"
    nodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def world_size(self) -> int:
        return self.devices * self.nodes

    @classmethod
    def of_options(cls, o: RecordedOptions) -> Layout:
        """The layout recorded in a job's options (one process for older jobs)."""
        devices = o.devices if isinstance(o.devices, int) else 1
        return cls(
            devices=devices or 1,
            strategy=o.strategy or "ddp",
            nodes=o.nodes or 1,
            node_rank=o.node_rank or 0,
            rdzv_endpoint=o.rdzv_endpoint,
        )


def global_batch_size(batch_size: int, world_size: int, accumulation: int = 1) -> int:
    """Examples per optimizer step over all ranks: ``batchSize × devices × nodes ×
    gradientAccumulation`` (the one place gradient accumulation enters the product)."""
    return batch_size * world_size * accumulation


# -- the options ---------------------------------------------------------------------------
def check_layout(b: JsonObject, backend: str, prior: RecordedOptions | None) -> Layout:
    """``devices``, ``strategy``, ``nodes``, ``nodeRank``, ``rdzvEndpoint`` of a body; a
    400 for what this backend or machine cannot run. A resumed job (``prior``, its
    recorded options) keeps its layout unless the body changes it."""

    def given(key: str) -> Any:
        if b.get(key) is not None:
            return b[key]
        return prior.get(key) if prior is not None else None

    devices = resolve_devices(given("devices"), backend)
    nodes = v.integer(given("nodes"), "nodes", default=1, minimum=1, maximum=MAX_NODES)
    assert nodes is not None
    if backend == "mlx" and nodes > 1:
        raise InputError("nodes > 1 needs backend cuda or cpu: mlx trains on one device")
    node_rank = v.integer(given("nodeRank"), "nodeRank", default=0, minimum=0, maximum=nodes - 1)
    endpoint = v.text(given("rdzvEndpoint"), "rdzvEndpoint", max_length=300)
    if nodes > 1 and endpoint is None:
        raise InputError("nodes > 1 needs rdzvEndpoint (host:port of the machine with nodeRank 0)")
    if nodes == 1 and endpoint is not None:
        raise InputError("rdzvEndpoint is only for nodes > 1 (one machine needs no rendezvous)")
    if endpoint is not None:
        match = _ENDPOINT.fullmatch(endpoint.strip())
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise InputError(f"rdzvEndpoint must be host:port, got {endpoint[:80]!r}")
        endpoint = endpoint.strip()
    strategy = v.choice(given("strategy"), "strategy", STRATEGIES, default="ddp")
    if prior is not None and _sharded(prior) != (strategy == "fsdp" and devices * nodes > 1):
        raise InputError(
            "a resume keeps sharding as it was: an fsdp checkpoint (several ranks) holds the "
            "optimizer state in another form than a ddp or one-device one"
        )
    assert node_rank is not None and strategy is not None
    return Layout(
        devices=devices, strategy=strategy, nodes=nodes, node_rank=node_rank, rdzv_endpoint=endpoint
    )


def _sharded(options: RecordedOptions) -> bool:
    """Whether a job's checkpoints were written under FSDP on several ranks."""
    return options.strategy == "fsdp" and Layout.of_options(options).world_size > 1


def resolve_devices(value: Any, backend: str) -> int:
    """The number of processes per machine; ``"auto"``: every GPU torch sees on cuda,
    1 on cpu (one process already uses every core through its threads; more would
    each hold a model copy and add an all-reduce per step) and on mlx."""
    if value == "auto":
        return _cuda_device_count() if backend == "cuda" else 1
    devices = v.integer(value, "devices", default=1, minimum=1, maximum=MAX_DEVICES)
    assert devices is not None
    if devices == 1:
        return 1
    if backend == "mlx":
        raise InputError(
            f"devices={devices} needs backend cuda or cpu: the mlx backend trains on one device"
        )
    if backend == "cuda":
        seen = _cuda_device_count()
        if devices > seen:
            raise InputError(f"devices={devices}, but torch sees {seen} GPU(s) here")
    if backend == "cpu":
        cores = os.cpu_count() or 1
        if devices > cores:
            raise InputError(
                f"devices={devices} on cpu: at most one process per core ({cores} here)"
            )
    return devices


def _cuda_device_count() -> int:
    import torch

    return max(1, torch.cuda.device_count())


# -- the launch (in the worker) --------------------------------------------------------------
def torchrun_args(layout: Layout, job_id: str, log_dir: Path) -> list[str]:
    """The ``torchrun`` command line of a job (after ``torchrun``), as a user would type it."""
    args = [
        f"--nproc-per-node={layout.devices}",
        f"--nnodes={layout.nodes}",
        "--max-restarts=0",  # a failed rank fails the job; resume from its checkpoint
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",
        f"--log-dir={log_dir}",
        "--redirects=3",  # each rank's stdout and stderr into its own files …
        "--tee=3",  # … and into worker.log, prefixed with the rank
    ]
    if layout.nodes == 1:
        args.append("--standalone")  # a local c10d rendezvous on a free port
    else:
        host = "1" if layout.node_rank == 0 else "0"  # node 0 serves the rendezvous store
        args += [
            f"--node-rank={layout.node_rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={layout.rdzv_endpoint}",
            f"--rdzv-id={RDZV_ID}",
            f"--rdzv-conf=is_host={host}",
        ]
    return [*args, "-m", "milady_lab.training.rank", job_id]


def run_ranks(
    spec: TrainSpec, layout: Layout, job_dir: Path, callback: TrainingCallback
) -> TrainResult:
    """Train ``spec`` on ``layout.devices`` ranks of this machine through torchrun;
    the reporter's ``TrainResult``. Raises ``TrainingCancelled`` when SIGTERM (a
    cancel) stopped the ranks and ``RankFailed`` naming the rank that failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    ranks_dir = job_dir / RANKS_DIR
    ranks_dir.mkdir(parents=True, exist_ok=True)
    (ranks_dir / RESULT_FILE).unlink(missing_ok=True)
    write_bytes(ranks_dir / SPEC_FILE, pickle.dumps(RankSpec(spec, owner_pid=os.getpid())))
    args = torchrun_args(layout, spec.job_id, ranks_dir / "logs")
    callback.on_log(
        f"torchrun {' '.join(args)} ({layout.world_size} ranks, strategy {layout.strategy})"
    )
    handler = signal.getsignal(signal.SIGTERM)
    try:
        run(parse_args(args))
    except SignalException:
        raise TrainingCancelled(0) from None
    except ChildFailedError as exc:
        raise RankFailed(describe_failure(exc, ranks_dir / "logs")) from None
    finally:
        signal.signal(signal.SIGTERM, handler)  # the agent installed its own
    try:
        outcome: RankOutcome = pickle.loads((ranks_dir / RESULT_FILE).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise RankFailed(f"the ranks exited without a result ({exc})") from None
    if outcome.result is None:
        raise TrainingCancelled(outcome.iteration)
    return outcome.result


class RankFailed(WorkerError):
    """A rank failed; the message names it, how it ended and its last lines."""


def describe_failure(exc: Any, log_dir: Path) -> str:
    """Which rank failed and why, from torchrun's ``ChildFailedError``: a rank killed by
    a signal other than the agent's own SIGTERM comes first (the others failed because
    it went), then the earliest failure; its last log lines are added."""
    failures = getattr(exc, "failures", {}) or {}
    if not failures:
        return f"torchrun failed: {exc}"[:2000]

    def order(item: tuple[int, Any]) -> tuple[int, float]:
        _, f = item
        killed = f.exitcode < 0 and -f.exitcode != signal.SIGTERM
        return (0 if killed else 1, float(f.timestamp))

    rank, failure = sorted(failures.items(), key=order)[0]
    if failure.exitcode < 0:
        how = f"killed by {failure.signal_name()}"
    else:
        how = f"exited with status {failure.exitcode}"
    text = f"rank {rank} {how}"
    others = sorted(r for r in failures if r != rank)
    if others:
        text += f" (then rank(s) {', '.join(map(str, others))} stopped)"
    tail = rank_log_tail(log_dir, failure.local_rank)
    if tail:
        text += "; its last lines: " + " | ".join(tail)
    return text[:2000]


def rank_log_tail(log_dir: Path, local_rank: int, lines: int = 4) -> list[str]:
    """The last meaningful lines a rank wrote (stderr first: tracebacks land there)."""
    from .processes import log_tail

    out: list[str] = []
    for name in ("stderr.log", "stdout.log"):
        for path in sorted(Path(log_dir).glob(f"*/attempt_*/{local_rank}/{name}")):
            out += log_tail(path, lines=lines)
        if out:
            break
    return out[-lines:]


# -- the rank side -------------------------------------------------------------------------
@dataclass(frozen=True)
class RankSpec:
    """What the worker leaves for its ranks: the run, and its own pid (the owner of the
    job, which the reporter's ``StoreCallback`` checks)."""

    spec: TrainSpec
    owner_pid: int


@dataclass(frozen=True)
class RankOutcome:
    """The reporter's outcome: the result of a completed run, or None when it was
    cancelled (at ``iteration``)."""

    result: TrainResult | None
    iteration: int = 0


def read_rank_spec(job_dir: Path) -> RankSpec:
    """What the worker left for its ranks."""
    return pickle.loads((job_dir / RANKS_DIR / SPEC_FILE).read_bytes())


def write_rank_result(job_dir: Path, outcome: RankOutcome) -> None:
    """The reporter's outcome, for the worker."""
    write_bytes(job_dir / RANKS_DIR / RESULT_FILE, pickle.dumps(outcome))


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this rank when its parent (torchrun's agent, in the
    worker) dies, however it dies: a SIGKILLed worker must not leave ranks behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a thread polls instead
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(1)
