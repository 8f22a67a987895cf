"""``milady-lab jobs start|follow|list|show|cancel``.

``start --wait`` follows the job through the state store (a tqdm bar over the
iterations with the live loss, described by the job's stage) and exits 0 only when it
completed. Ctrl-C while waiting asks whether to cancel the job; without a terminal to
ask on, the job is left running (it never depended on this process) and the command
says so. ``follow ID`` shows the same bar for a job started elsewhere; there Ctrl-C
only detaches (exit 0): the job keeps running and nothing is asked.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..api.schema import StartJobRequest
from ..errors import ConflictError
from ..state import FINAL_STATUSES, PREFERENCE_FIGURES, JobStatus
from ._common import add_command, add_json_flag, cell, print_json, print_table, service_from
from ._flags import add_body_flags, body_from

#: A job as the service answers it: the REST record (``api.schema.Job``) or its JSON
#: object; read by wire name either way.
Job = Mapping[str, Any]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="start, follow and cancel training jobs")
    jsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = jsub.add_parser("start", help="start a training job (queued if one runs)")
    add_body_flags(start, StartJobRequest)
    start.add_argument(
        "--wait", action="store_true", help="follow the job until it ends (exit 1 unless completed)"
    )
    add_json_flag(start)
    start.set_defaults(handler=_start)

    follow_help = "show a job's progress until it ends; Ctrl-C detaches, never cancels"
    add_command(jsub, "follow", follow_help, _follow, id_dest="job_id")
    add_command(jsub, "list", "list jobs, newest first", _list)
    add_command(jsub, "show", "show one job", _show, id_dest="job_id")
    add_command(jsub, "cancel", "cancel a queued or running job", _cancel, id_dest="job_id")


def _start(args: argparse.Namespace) -> int:
    service = service_from(args)
    job = service.start_job(body_from(args, StartJobRequest))["job"]
    if not args.wait:
        _print_job(job, args.json)
        return 0
    print(f"job {job['id']} {job['status']}", file=sys.stderr, flush=True)
    job = follow(service, job["id"])
    _print_job(job, args.json)
    return 0 if job["status"] == JobStatus.COMPLETED else 1


def _follow(args: argparse.Namespace) -> int:
    """Follow until the job ends (exit 0 only when it completed) or Ctrl-C (exit 0)."""
    service = service_from(args)
    job = service.get_job(args.job_id)["job"]
    try:
        job = follow(service, job["id"], detach=True)
    except KeyboardInterrupt:  # before the bar was up
        print(f"\n{_detached(job['id'])}", file=sys.stderr)
        return 0
    if job["status"] not in FINAL_STATUSES:
        return 0  # detached: the job goes on without us
    _print_job(job, args.json)
    return 0 if job["status"] == JobStatus.COMPLETED else 1


def _list(args: argparse.Namespace) -> int:
    body = service_from(args).list_jobs()
    if args.json:
        print_json(body)
    else:
        print_table(
            body["jobs"],
            ["id", "status", "backend", "model", "datasetId", "progress", "loss", "createdAt"],
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    job = service_from(args).get_job(args.job_id)["job"]
    _print_job(job, args.json)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    job = service_from(args).cancel_job(args.job_id)["job"]
    _print_job(job, args.json)
    return 0


def _print_job(job: Job, as_json: bool) -> None:
    if as_json:
        print_json({"job": job})
        return
    keys = [
        "id",
        "status",
        "stage",
        "backend",
        "model",
        "datasetId",
        "progress",
        "currentIteration",
        "totalIterations",
        "loss",
        "valLoss",
        "tokensPerSecond",
        "trainedTokens",
        "createdAt",
        "startedAt",
        "completedAt",
        "resumeFrom",
        "checkpointIteration",
        "modelId",
        "error",
    ]
    width = max(len(k) for k in keys)
    for key in keys:
        value = job.get(key)
        if value is None:
            continue
        print(f"{key.ljust(width)}  {cell(value, key)}")


def follow(service: Any, job_id: str, interval: float = 0.5, *, detach: bool = False) -> Job:
    """Show a bar until the job ends and return the final record. Ctrl-C: with ``detach``,
    stop following and return the live record (the job keeps running); otherwise offer
    to cancel it on a terminal, and re-raise without one."""
    from tqdm.auto import tqdm

    job = service.get_job(job_id)["job"]
    figures = _LatestFigures(service, job_id)
    bar = tqdm(
        total=job["totalIterations"], unit="it", desc=_bar_desc(job), dynamic_ncols=True,
        disable=None,
    )  # fmt: skip
    try:
        while True:
            try:
                update_bar(bar, job, figures.read())
                if job["status"] in FINAL_STATUSES:
                    return job
                time.sleep(interval)
                job = service.get_job(job_id)["job"]
            except KeyboardInterrupt:
                bar.clear()
                if detach:
                    print(f"\n{_detached(job_id)}", file=sys.stderr)
                    return service.get_job(job_id)["job"]
                job = _interrupted(service, job_id)
    finally:
        bar.close()


def _detached(job_id: str) -> str:
    return (
        f"job {job_id} keeps running; follow it again with `milady-lab jobs follow {job_id}`, "
        f"stop it with `milady-lab jobs cancel {job_id}`"
    )


def _interrupted(service: Any, job_id: str) -> Job:
    """Ctrl-C under ``start --wait``: ask whether to cancel (re-raise without a terminal)."""
    if not sys.stdin.isatty():
        print(f"\n{_detached(job_id)}", file=sys.stderr)
        raise KeyboardInterrupt
    if _ask(f"Cancel job {job_id}? [y/N] "):
        try:
            return service.cancel_job(job_id)["job"]
        except ConflictError:  # it ended while we asked
            return service.get_job(job_id)["job"]
    print(f"still following {job_id}", file=sys.stderr)
    return service.get_job(job_id)["job"]


def _bar_desc(job: Job) -> str:
    """``<id> <stage>`` while the job runs, ``<id> <status>`` otherwise."""
    live = job["status"] == JobStatus.RUNNING and job.get("stage")
    return f"{job['id']} {job['stage'] if live else job['status']}"


#: Preference metrics (dpo/kto) on the bar: metric key → the bar's label.
BAR_FIGURES = PREFERENCE_FIGURES


class _LatestFigures:
    """The newest value of each of ``BAR_FIGURES`` a job has reported (read from its
    metrics after the last one seen, so each poll reads only what is new)."""

    def __init__(self, service: Any, job_id: str) -> None:
        self.service, self.job_id, self.seq = service, job_id, 0
        self.latest: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        for m in self.service.job_metrics(self.job_id, self.seq)["metrics"]:
            self.seq = max(self.seq, m.get("seq", 0))
            self.latest |= {k: m[k] for k in BAR_FIGURES if m.get(k) is not None}
        return self.latest


def update_bar(bar: Any, job: Job, figures: dict[str, float] | None = None) -> None:
    """A job's iteration, status, loss and tokens/s on a tqdm bar; with ``figures`` (the
    latest metrics of a dpo/kto job) its reward margin and chosen/rejected log-probs."""
    bar.n = job.get("currentIteration") or 0
    bar.set_description_str(_bar_desc(job), refresh=False)
    postfix = {"status": job["status"]}
    if job.get("loss") is not None:
        postfix["loss"] = f"{job['loss']:.4f}"
    shown = figures or {}
    for key, label in BAR_FIGURES.items():
        if shown.get(key) is not None:
            postfix[label] = f"{shown[key]:.3f}"
    if job.get("tokensPerSecond"):
        postfix["tok/s"] = f"{job['tokensPerSecond']:.0f}"
    bar.set_postfix(postfix, refresh=False)
    # At most every ``mininterval``: a logged run (``make demo`` gives 30 s when stderr is
    # not a terminal) gets a line now and then, not one a poll; ``close`` draws the last.
    now = time.time()
    if not bar.disable and now - bar.last_print_t >= bar.mininterval:
        bar.last_print_t = now
        bar.refresh()


def _ask(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return False
    return answer.strip().lower() in ("y", "yes")
