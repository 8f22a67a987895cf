"""``python -m milady_lab.training.worker JOB_ID``: the process that trains one job.

Started by ``JobManager`` in its own session. It takes the job only if the row names
its own pid (so a launch whose transaction rolled back does nothing), builds the run's
``TrainSpec`` from the options the job recorded (``train_spec``), trains through
``backends.run_training`` with a ``StoreCallback``, and always leaves the job in a
final state: ``completed`` with a registered model, ``cancelled`` (SIGTERM), or
``failed`` with a readable error. On its way out it starts the next queued job, so a
queue drains with nothing waiting on the process that queued it.

SIGTERM is graceful (``sigterm``), in every phase well within
``processes.CANCEL_GRACE_S``: before training (imports, loading the model) it
interrupts at once; during training it sets the flag the backend polls between
micro-batches, evaluation rows and before saving.
The worker then records ``cancelled`` itself, hands the queue on and leaves with
``os._exit``: finalising torch, transformers and peft at interpreter exit alone took
2-2.5 s on a 2-core machine, and nothing is left to clean up by then.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from .sigterm import Interrupted, StopBetweenSteps, exit_now, not_interruptible, on_sigterm, stop

if TYPE_CHECKING:  # imported when needed: SIGTERM is handled before anything heavy loads
    import sqlite3

    from ..api.schema import Model
    from ..config import Settings
    from ..state import StateStore
    from .base_models import ResolvedModel
    from .callbacks import TrainingCallback
    from .request import RecordedOptions
    from .spec import TrainResult, TrainSpec

T = TypeVar("T")
#: A job row as the state store gives it (keys as in the REST record).
JobRow = Mapping[str, Any]


def main(argv: list[str] | None = None) -> int:
    # First thing: until this runs, SIGTERM kills outright (and the canceller records it).
    signal.signal(signal.SIGTERM, on_sigterm)
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m milady_lab.training.worker JOB_ID", file=sys.stderr)
        return 2
    job_id = args[0]
    store = settings = None
    try:
        from ..config import Settings
        from ..state import StateStore

        settings = Settings.from_env()
        store = StateStore(settings.state_db)
        job = _claim(store, job_id)
        if job is None:
            return 0
        return _run(settings, store, job)
    except Interrupted:
        not_interruptible()
        if store is not None:
            _cancelled(store, job_id)
        return 0
    finally:
        not_interruptible()
        if store is not None:
            _start_next(settings, store)
            store.close()


def _cancelled(store: StateStore, job_id: str) -> None:
    """Record the cancel this worker obeyed (a SIGTERM before or during training)."""
    # The interrupt may have cut a transaction short: closing this thread's connection
    # rolls it back, and the next call opens a fresh one.
    store.close()
    _finish(store, job_id, "cancelled", None)
    print(f"[milady-lab] job {job_id} cancelled: stopped by itself on SIGTERM", flush=True)


def _claim(store: StateStore, job_id: str) -> JobRow | None:
    """The job when it is running under this pid; records start time and heartbeat."""
    from ..state import now_ms
    from .processes import process_start_time

    me = os.getpid()
    with store.transaction() as conn:
        job = store.get_job(job_id, conn)
        if job is None or job["status"] != "running" or job["pid"] not in (None, me):
            print(f"[milady-lab] job {job_id} is not mine to run; exiting", flush=True)
            return None
        store.update_job(
            job_id, conn, pid=me, pidStartTime=process_start_time(me), heartbeatAt=now_ms()
        )
    return store.get_job(job_id)


def _run(settings: Settings, store: StateStore, job: JobRow) -> int:
    from .callbacks import CallbackList, TrainingCancelled
    from .store_callback import StoreCallback

    job_id = job["id"]
    job_dir = settings.jobs_dir / job_id
    cb = StoreCallback(store, job_id, job_dir, stop_event=stop, owner_pid=os.getpid()).start()

    status, error, result, spec, resolved = "failed", None, None, None, None
    interrupted = False
    try:
        cb.on_stage("loading")
        from .request import RecordedOptions

        options = RecordedOptions.of_job(job)
        spec, resolved = _build_spec(settings, store, job, options, cb)
        from .backends import run_training
        from .distributed import Layout, run_ranks

        layout = Layout.of_options(options)
        if layout.world_size > 1:  # torchrun's ranks train; rank 0 reports through the store
            result = run_ranks(spec, layout, job_dir, cb)
        else:
            result = run_training(spec, CallbackList([StopBetweenSteps(), cb]))
        not_interruptible()
        status = "cancelled" if stop.is_set() else "completed"
        if status == "completed":
            cb.on_stage("registering")  # the model record, in ``_complete``
    except TrainingCancelled:
        not_interruptible()
        status = "cancelled"
    except Interrupted:
        not_interruptible()
        status, interrupted = "cancelled", True
    except BaseException as exc:
        not_interruptible()
        traceback.print_exc()
        status, error = "failed", readable_error(exc)
    finally:
        not_interruptible()
        try:
            # Interrupted before training: nothing is buffered, and the interrupt may
            # have left the callback's lock or this thread's transaction mid-way.
            cb.close(flush=not interrupted)
        except Exception:
            traceback.print_exc()
    if cb.lost is not None:  # someone else ended this job; leave it as they did
        print(f"[milady-lab] {cb.lost}", flush=True)
        _remove_temp(settings, job_id)
        return 1
    if status == "completed" and result is not None and spec is not None:
        try:
            _complete(settings, store, job, spec, resolved, result)
            return 0
        except BaseException as exc:
            traceback.print_exc()
            error = f"training finished but the adapter could not be saved: {readable_error(exc)}"
            status = "failed"
    if status == "cancelled":
        _cancelled(store, job_id)
    else:
        _finish(store, job_id, status, error)
    _remove_temp(settings, job_id)
    return 0 if status == "cancelled" else 1


def _build_spec(
    settings: Settings,
    store: StateStore,
    job: JobRow,
    options: RecordedOptions,
    cb: TrainingCallback,
) -> tuple[TrainSpec, ResolvedModel]:
    """Resolve the dataset, base model and resume point into a ``TrainSpec``."""
    import shutil

    from ..errors import InputError
    from .base_models import resolve_base_model
    from .launch import temp_adapter_dir
    from .options import checkpoint_path

    dataset = store.get_dataset(job["datasetId"]) if job.get("datasetId") else None
    if dataset is None:
        raise InputError(f"dataset {job.get('datasetId')!r} no longer exists")
    resume = None
    if job.get("resumeFrom"):
        prior = store.get_job(job["resumeFrom"])
        resume = checkpoint_path(store, prior) if prior else None
        if resume is None:
            raise InputError(f"the checkpoint of job {job['resumeFrom']} is gone")
    cb.on_log(f"resolving base model {job['model']}")
    resolved = resolve_base_model(job["model"], settings)
    output_dir = temp_adapter_dir(settings, job["id"])
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir(parents=True)
    spec = train_spec(
        options,
        job_id=job["id"],
        backend=job["backend"],
        model=job["model"],
        iterations=job["totalIterations"],
        dataset_dir=Path(dataset["path"]),
        output_dir=output_dir,
        job_dir=settings.jobs_dir / job["id"],
        resume_from=resume,
        base_model_path=Path(resolved.hf_path),
    )
    store.update_job(job["id"], outputPath=str(output_dir))
    return spec, resolved


def train_spec(
    o: RecordedOptions,
    *,
    job_id: str,
    backend: str,
    model: str,
    iterations: int,
    dataset_dir: Path,
    output_dir: Path,
    job_dir: Path,
    resume_from: Path | None = None,
    base_model_path: Path | None = None,
) -> TrainSpec:
    """The ``TrainSpec`` of a job: its recorded options (``o``), what the job row says
    (backend, model, iterations) and where things are. An option the job did not
    record keeps ``TrainSpec``'s default, so a job recorded by an older version trains
    as it would have then."""
    from .spec import TrainSpec

    d = TrainSpec  # its class attributes are the defaults
    return TrainSpec(
        job_id=job_id,
        backend=backend,
        model=model,
        dataset_dir=dataset_dir,
        output_dir=output_dir,
        checkpoint_dir=job_dir / "checkpoints",
        last_dir=job_dir / LAST_ADAPTER_DIR,
        iterations=iterations,
        batch_size=_or(o.batch_size, d.batch_size),
        learning_rate=_or(o.learning_rate, d.learning_rate),
        lora_rank=_or(o.lora_rank, d.lora_rank),
        lora_layers=None if o.lora_layers == "all" else o.lora_layers,
        lora_alpha=_lora_alpha(o),
        lora_dropout=_or(o.lora_dropout, d.lora_dropout),
        target_modules=_target_modules(o.target_modules),
        max_seq_length=_or(o.max_seq_length, d.max_seq_length),
        eval_every=_or(o.eval_every, d.eval_every),
        checkpoint_every=_or(o.checkpoint_every, d.checkpoint_every),
        seed=_or(o.seed, d.seed),
        gradient_accumulation=_or(o.gradient_accumulation, d.gradient_accumulation),
        warmup_steps=o.warmup_steps,
        lr_schedule=_or(o.lr_schedule, d.lr_schedule),
        early_stopping_patience=o.early_stopping_patience,
        save_best=_or(o.save_best, d.save_best),
        # "all", and jobs recorded before the option: through the whole example.
        prompt_gradient_tokens=(
            None if o.prompt_gradient_tokens in (None, "all") else o.prompt_gradient_tokens
        ),
        resume_from=resume_from,
        base_model_path=base_model_path,
        strategy=o.strategy or d.strategy,
        objective=_or(o.objective, d.objective),
        beta=_or(o.beta, d.beta),
        desirable_weight=_or(o.desirable_weight, d.desirable_weight),
        undesirable_weight=_or(o.undesirable_weight, d.undesirable_weight),
    )


def _or(recorded: T | None, default: T) -> T:
    return default if recorded is None else recorded


def _lora_alpha(o: RecordedOptions) -> float:
    """The recorded alpha; 2 × rank for a job recorded before ``loraAlpha`` was."""
    from .spec import TrainSpec

    if o.lora_alpha is not None:
        return o.lora_alpha
    return 2.0 * o.lora_rank if o.lora_rank else TrainSpec.lora_alpha


def _target_modules(recorded: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """Module names: ``attention`` is the q/k/v/o projections; ``all-linear`` stays a
    preset the backend expands."""
    from .controls import ATTENTION_MODULES

    if recorded is None or recorded == "attention":
        return ATTENTION_MODULES
    return (recorded,) if isinstance(recorded, str) else tuple(recorded)


def _complete(
    settings: Settings,
    store: StateStore,
    job: JobRow,
    spec: TrainSpec,
    resolved: ResolvedModel,
    result: TrainResult,
) -> None:
    """Move the adapter into place and register the model in the transaction that
    marks the job completed, so a model exists exactly when its job completed."""
    import shutil

    from ..state import JobStatus, new_id, now_ms

    job_id = job["id"]
    model_id = new_id("model")
    final = settings.models_dir / model_id
    ts = now_ms()
    fields: CompletedFields = {
        "completedAt": ts,
        "currentIteration": result.iterations_done or spec.iterations,
        "trainedTokens": result.trained_tokens,
        "tokensPerSecond": result.tokens_per_second,
        **result_fields(result),
    }
    if result.final_loss is not None:
        fields["loss"] = result.final_loss
    if result.final_val_loss is not None:
        fields["valLoss"] = result.final_val_loss
    try:
        with store.transaction() as conn:
            name = _model_name(conn, job)
            if not store.finish_job(
                job_id,
                JobStatus.COMPLETED,
                conn,
                pid=os.getpid(),
                fields=fields,
                message=f"job {job_id} completed: model {name}",
                data={"modelId": model_id},
            ):
                raise RuntimeError(f"job {job_id} is no longer running here")
            # Renamed inside the write transaction: a folder without a record, seen by
            # ``JobManager.reconcile`` under the same lock, is a crash's leftover.
            os.replace(result.adapter_dir, final)
            rec = _model_record(job, model_id, name, final, ts, resolved, result)
            store.insert_model(rec, conn)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    _remove_temp(settings, job_id)


def _model_record(
    job: JobRow,
    model_id: str,
    name: str,
    final: Path,
    ts: int,
    resolved: ResolvedModel,
    result: TrainResult,
) -> Model:
    """The models row of a completed job (with the agent's names for its fields)."""
    from ..agent_compat import model_record

    return model_record(
        {
            "id": model_id,
            "jobId": job["id"],
            "name": name,
            "createdAt": ts,
            "active": False,
            "adapterPath": str(final),
            "baseModel": job["model"],
            "baseModelPath": str(result.base_model_path or resolved.hf_path),
            "backend": job["backend"],
            "datasetId": job.get("datasetId"),
            "finalLoss": result.final_loss,
            "bestIteration": result.best_iteration,
            "bestValLoss": result.best_val_loss,
        }
    )


#: The job-folder sub-folder that keeps a run's last adapter when the best is registered.
LAST_ADAPTER_DIR = "last-adapter"


class ResultFields(TypedDict, total=False):
    """The job-record fields a finished run sets (``schema.Job``'s wire names)."""

    stoppedEarly: bool
    bestIteration: int
    bestValLoss: float | None
    stopReason: str
    lastAdapterPath: str


class CompletedFields(ResultFields, total=False):
    """Every job-record field a completed run sets."""

    completedAt: int
    currentIteration: int
    trainedTokens: int
    tokensPerSecond: float
    loss: float
    valLoss: float


def result_fields(result: TrainResult) -> ResultFields:
    """The job-record fields of a run's best checkpoint, early stop and last adapter."""
    fields: ResultFields = {"stoppedEarly": bool(result.stopped_early)}
    if result.best_iteration is not None:
        fields["bestIteration"] = result.best_iteration
        fields["bestValLoss"] = result.best_val_loss
    if result.stop_reason:
        fields["stopReason"] = result.stop_reason
    if result.last_adapter_dir is not None:
        fields["lastAdapterPath"] = str(result.last_adapter_dir)
    return fields


def _model_name(conn: sqlite3.Connection, job: JobRow) -> str:
    """``<base>-<dataset>-v<n>``: readable, and unique because n counts existing names."""
    import re
    from pathlib import PurePath

    base = job["model"].rstrip("/\\")
    base = PurePath(base.split("/")[-1] if "/" in base and not base.startswith("/") else base).name
    base = re.sub(r"\.gguf$", "", base, flags=re.I)
    base = re.sub(r"[^a-z0-9.]+", "-", base.lower()).strip("-.")[:40] or "model"
    dataset = re.sub(r"[^a-z0-9]+", "-", (job.get("datasetId") or "data").lower()).strip("-")[:40]
    prefix = f"{base}-{dataset}-v"
    rows = conn.execute(
        "SELECT name FROM models WHERE substr(name, 1, ?) = ?", (len(prefix), prefix)
    ).fetchall()
    taken = {r["name"] for r in rows}
    n = len(taken) + 1
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"


def _finish(store: StateStore, job_id: str, status: str, error: str | None) -> None:
    """Final state, only if the job is still running under this pid."""
    from ..state import JobStatus

    store.finish_job(job_id, JobStatus(status), error=error, pid=os.getpid())


def _remove_temp(settings: Settings, job_id: str) -> None:
    from .launch import remove_temp

    remove_temp(settings, job_id)


def _start_next(settings: Settings | None, store: StateStore) -> None:
    """Hand the queue on: start the oldest queued job if nothing runs."""
    try:
        from .launch import start_next

        start_next(settings, store)
    except Exception:
        traceback.print_exc()


def readable_error(exc: BaseException) -> str:
    """One or two lines a user can act on: the message, and where it came from."""
    from ..errors import MiladyLabError

    if isinstance(exc, MiladyLabError):
        return exc.message[:2000]
    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, MemoryError):
        text = "out of memory (MemoryError): try a smaller batchSize or model"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text[:2000]


if __name__ == "__main__":
    try:
        _code = main()
    except BaseException:  # e.g. a second SIGTERM while the first was being handled
        traceback.print_exc()
        _code = 1
    exit_now(_code)
