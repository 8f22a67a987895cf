"""``python -m milady_lab.training.worker JOB_ID``: the process that trains one job.

Started by ``JobManager`` in its own session. It takes the job only if the row names
its own pid (so a launch whose transaction rolled back does nothing), trains through
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
from pathlib import Path
from typing import Any

from .sigterm import Interrupted, StopBetweenSteps, exit_now, not_interruptible, on_sigterm, stop


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


def _cancelled(store: Any, job_id: str) -> None:
    """Record the cancel this worker obeyed (a SIGTERM before or during training)."""
    # The interrupt may have cut a transaction short: closing this thread's connection
    # rolls it back, and the next call opens a fresh one.
    store.close()
    _finish(store, job_id, "cancelled", None)
    print(f"[milady-lab] job {job_id} cancelled: stopped by itself on SIGTERM", flush=True)


def _claim(store: Any, job_id: str) -> dict[str, Any] | None:
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


def _run(settings: Any, store: Any, job: dict[str, Any]) -> int:
    from .callbacks import CallbackList, TrainingCancelled
    from .store_callback import StoreCallback

    job_id = job["id"]
    job_dir = settings.jobs_dir / job_id
    cb = StoreCallback(store, job_id, job_dir, stop_event=stop, owner_pid=os.getpid()).start()

    status, error, result, spec, resolved = "failed", None, None, None, None
    interrupted = False
    try:
        cb.on_stage("loading")
        spec, resolved = _build_spec(settings, store, job, cb)
        from .backends import run_training
        from .distributed import Layout, run_ranks

        layout = Layout.of_job(job)
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


def _build_spec(settings: Any, store: Any, job: dict[str, Any], cb: Any) -> tuple[Any, Any]:
    """Resolve the dataset, base model and resume point into a ``TrainSpec``."""
    import shutil

    from ..errors import InputError
    from .base_models import resolve_base_model
    from .launch import temp_adapter_dir
    from .options import checkpoint_path
    from .spec import TrainSpec

    opts = job.get("options") or {}
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
    tuned = spec_controls(opts)  # TrainSpec fields the user set; the rest keep their defaults
    tuned["last_dir"] = settings.jobs_dir / job["id"] / LAST_ADAPTER_DIR
    spec = TrainSpec(
        job_id=job["id"],
        backend=job["backend"],
        model=job["model"],
        dataset_dir=Path(dataset["path"]),
        output_dir=output_dir,
        checkpoint_dir=settings.jobs_dir / job["id"] / "checkpoints",
        iterations=job["totalIterations"],
        batch_size=opts.get("batchSize", 4),
        learning_rate=opts.get("learningRate", 2e-4),
        strategy=opts.get("strategy") or "ddp",
        resume_from=resume,
        base_model_path=Path(resolved.hf_path),
        **tuned,
    )
    store.update_job(job["id"], outputPath=str(output_dir))
    return spec, resolved


def _complete(
    settings: Any, store: Any, job: dict[str, Any], spec: Any, resolved: Any, result: Any
) -> None:
    """Move the adapter into place and register the model in the transaction that
    marks the job completed, so a model exists exactly when its job completed."""
    import shutil

    from ..state import JobStatus, new_id, now_ms

    job_id = job["id"]
    model_id = new_id("model")
    final = settings.models_dir / model_id
    ts = now_ms()
    fields: dict[str, Any] = {
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
    job: dict[str, Any], model_id: str, name: str, final: Path, ts: int, resolved: Any, result: Any
) -> dict[str, Any]:
    """The models row of a completed job."""
    return {
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


#: The job-folder sub-folder that keeps a run's last adapter when the best is registered.
LAST_ADAPTER_DIR = "last-adapter"


def spec_controls(opts: dict[str, Any]) -> dict[str, Any]:
    """``TrainSpec`` fields from a job's recorded options: every option named like a
    spec field (``loraRank`` → ``lora_rank``), ``targetModules`` as module names."""
    import dataclasses

    from .controls import ATTENTION_MODULES
    from .request import FIELD_NAMES
    from .spec import TrainSpec

    # Set by ``_build_spec`` itself (``resumeFrom`` names a job, the spec a folder).
    own = {
        "iterations",
        "backend",
        "model",
        "batch_size",
        "learning_rate",
        "resume_from",
        "strategy",
    }
    spec_fields = {f.name for f in dataclasses.fields(TrainSpec)} - own
    out = {
        attr: opts[key]
        for attr, key in FIELD_NAMES.items()
        if attr in spec_fields and opts.get(key) is not None
    }
    if opts.get("loraRank") and opts.get("loraAlpha") is None:  # recorded before loraAlpha
        out["lora_alpha"] = 2.0 * opts["loraRank"]
    targets = out.pop("target_modules", None)
    if targets is not None:
        out["target_modules"] = (
            ATTENTION_MODULES if targets == "attention"
            else (targets,) if isinstance(targets, str) else tuple(targets)
        )  # fmt: skip
    return out


def result_fields(result: Any) -> dict[str, Any]:
    """The job-record fields of a run's best checkpoint, early stop and last adapter."""
    fields: dict[str, Any] = {"stoppedEarly": bool(result.stopped_early)}
    if result.best_iteration is not None:
        fields["bestIteration"] = result.best_iteration
        fields["bestValLoss"] = result.best_val_loss
    if result.stop_reason:
        fields["stopReason"] = result.stop_reason
    if result.last_adapter_dir is not None:
        fields["lastAdapterPath"] = str(result.last_adapter_dir)
    return fields


def _model_name(conn: Any, job: dict[str, Any]) -> str:
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


def _finish(store: Any, job_id: str, status: str, error: str | None) -> None:
    """Final state, only if the job is still running under this pid."""
    store.finish_job(job_id, status, error=error, pid=os.getpid())


def _remove_temp(settings: Any, job_id: str) -> None:
    from .launch import remove_temp

    remove_temp(settings, job_id)


def _start_next(settings: Any, store: Any) -> None:
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
