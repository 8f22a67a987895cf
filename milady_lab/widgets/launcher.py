"""JobLauncher: start a training job and watch its loss fall live, without blocking the kernel.

The live view is a :class:`~._async.Poller` on the kernel's asyncio loop: each round
reads the job and its new metrics (``job_metrics(after=last_seq)``) in a thread, then
updates the progress line and, when new points arrived, redraws the loss curve on the
loop thread (at most twice a second, so within a second of a new metric). It polls every
0.5 s while a job is live and every 2 s otherwise, so a job started elsewhere (CLI,
REST, another notebook) is picked up; it stops when the panel is closed.

The form shows the options of the job it follows (read once per job, from its recorded
options), so a job started with 8 iterations reads 8, not the defaults. Numbers are
checked before a start, never clamped: a refused value is named next to its field and
nothing is sent. The status line follows the watched job: "job X queued" gives way to
"running", then "completed", and a queued job says what it waits for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w

from ..api.schema import Dataset, Job, Metric, Status
from ..state import FINAL_STATUSES, LIVE_STATUSES, PREFERENCE_FIGURES
from ..training.request import StartJobRequest
from . import plots
from ._async import Poller
from ._bodies import JobBody
from ._checks import FieldChecks, decimal, whole
from ._controls import TrainingControls
from ._fields import STYLE, Change
from ._panel import Panel, esc, fmt_ms, fmt_num, header, html_table, short_model

LIVE_DELAY = 0.5
IDLE_DELAY = 2.0
#: Redraw the curve at most this often (s); with polls every 0.5 s a changed curve is
#: redrawn within a second.
MIN_REDRAW = 0.5
#: Re-list jobs (the dropdown) at most this often while watching one.
JOBS_EVERY = 5.0


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class JobReads:
    """One poll's reads (in a thread), folded into the widgets on the loop thread."""

    job_id: str | None
    after: int
    jobs: list[Job] | None = None
    job: Job | None = None
    metrics: list[Metric] = field(default_factory=list)


def eta_seconds(job: Job, now_ms: float | None = None) -> float | None:
    """Seconds left, from the iterations done since the job started running."""
    started, current, total = job.started_at, job.current_iteration, job.total_iterations
    if job.status != "running" or not started or not current or not total:
        return None
    first = job.checkpoint_iteration if job.resume_from else 0
    done = current - (first or 0)
    if done <= 0:
        return None
    elapsed = ((now_ms or time.time() * 1000) - started) / 1000
    return max(0.0, elapsed / done * (total - current))


class JobLauncher(Panel):
    """Dataset, backend, model and hyper-parameters; Start, Cancel and a live loss curve."""

    title = "Training"

    def __init__(self, backend: Any = None, *, autostart: bool = True, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.on_job_final: list[Callable[[Job], None]] = []
        self.job_id: str | None = None
        self.job: Job | None = None
        self.jobs: list[Job] = []
        self.train_points: list[tuple[float, float]] = []
        self.val_points: list[tuple[float, float]] = []
        #: The latest preference figures of the watched job (dpo/kto), for the info line.
        self.figures: dict[str, float] = {}
        #: Dataset id → kind, so picking a dataset picks its objective.
        self.dataset_kinds: dict[str, str] = {}
        self.last_seq = 0
        self.redraws = 0
        self._last_draw = 0.0
        self._dirty = False
        self._jobs_at = 0.0
        self._seen_live: set[str] = set()
        self._final_seen: set[str] = set()
        self._suspend = False
        #: While the form is filled from a job: a model change brings no size defaults.
        self._filling = False
        #: The job whose options the form shows (filled once per followed job).
        self._shown_options: str | None = None
        #: (job id, status) the status line speaks of; it is replaced when the job moves on.
        self._status_about: tuple[str, str] | None = None

        self._option_widgets()
        self._watch_widgets()
        self._lay_out()
        self._wire()

        self.poller = Poller(self.runner, self._fetch, self._apply, on_error=self._poll_error)
        self._draw(force=True)
        self.guard("load")(self.refresh)()
        if autostart:
            self.poller.start()

    def _option_widgets(self) -> None:
        """The fields of a job: dataset, backend, base model and the training knobs."""
        style = STYLE
        self.dataset = w.Dropdown(
            description="Dataset", options=[], style=style, layout=w.Layout(width="400px")
        )
        self.backend_choice = w.Dropdown(
            description="Backend", options=["cpu"], style=style, layout=w.Layout(width="160px")
        )
        self.model = w.Combobox(
            description="Base model",
            value="",
            style=style,
            placeholder="smollm2-135m-instruct",
            ensure_option=False,
            layout=w.Layout(width="330px"),
        )
        self.checks = FieldChecks(StartJobRequest)
        self.iterations = whole("Iterations", 100, "170px")
        self.batch_size = whole("Batch size", 4, "160px")
        self.learning_rate = decimal("Learning rate", 2e-4, "200px")
        self.number_boxes = [
            self.checks.add("iterations", self.iterations),
            self.checks.add("batchSize", self.batch_size),
            self.checks.add("learningRate", self.learning_rate),
        ]
        self.controls = TrainingControls(self.checks)
        self.model.observe(self._on_model, names="value")
        self.dataset.observe(self._on_dataset, names="value")

    def _watch_widgets(self) -> None:
        """Buttons, the job being watched, its progress, loss curve and the jobs table."""
        style = {"description_width": "auto"}
        self.start_button = w.Button(description="Start", icon="play", button_style="success")
        self.cancel_button = w.Button(
            description="Cancel", icon="stop", button_style="danger", disabled=True
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.watch = w.Dropdown(
            description="Job", options=[], style=style, layout=w.Layout(width="460px")
        )
        self.progress = w.IntProgress(
            value=0, min=0, max=1, description="", layout=w.Layout(width="460px")
        )
        self.info = w.HTML()
        self.curve = w.Image(format="png", layout=w.Layout(width="640px"))
        self.curve.add_class("milady-loss-curve")
        self.redraw_label = w.HTML()
        self.jobs_table = w.HTML(layout=w.Layout(width="100%"))

    def _lay_out(self) -> None:
        """Options on two rows, the buttons, then what the watched job is doing."""
        row1 = w.HBox(
            [self.dataset, self.backend_choice, self.model], layout=w.Layout(flex_flow="row wrap")
        )
        row2 = w.HBox(self.number_boxes, layout=w.Layout(flex_flow="row wrap"))
        row3 = w.HBox([self.start_button, self.cancel_button, self.refresh_button])
        row2 = w.VBox([row2, self.controls])
        watch_row = w.HBox(
            [self.watch, self.progress], layout=w.Layout(flex_flow="row wrap", align_items="center")
        )
        self.children = [
            header(self.title),
            row1,
            row2,
            row3,
            self.status_line,
            watch_row,
            self.info,
            self.curve,
            self.redraw_label,
            w.HTML("<h4 style='margin:8px 0 2px 0'>Recent jobs</h4>"),
            self.jobs_table,
        ]

    def _wire(self) -> None:
        """Every callback goes through ``guard``: an error shows in the panel, never a traceback."""
        self.start_button.on_click(self.guard("start")(lambda _b: self.start()))
        self.cancel_button.on_click(self.guard("cancel")(lambda _b: self.cancel()))
        self.refresh_button.on_click(self.guard("refresh")(lambda _b: self.refresh()))
        self.watch.observe(self.guard("watch")(self._on_watch), names="value")

    # -- options --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload datasets, backends, base models and jobs; pick up a running job."""
        status: Status = self.backend.status()
        datasets = self.backend.list_datasets()
        self.refresh_datasets(datasets)
        backends: list[str] = list(status.backends or []) or [status.backend]
        best = status.backend if status.backend in backends else backends[0]
        with self.hold_sync():
            self.backend_choice.options = backends
            self.backend_choice.value = best
            self.model.options = self.backend.base_models()
        self._set_jobs(self.backend.list_jobs())
        self._pick_up()
        if self.job_id is not None:
            self.poll_once()

    def refresh_datasets(
        self, datasets: list[Dataset] | None = None, select: str | None = None
    ) -> None:
        """Fill the dataset dropdown, newest first; a build elsewhere selects its dataset."""
        if datasets is None:
            datasets = self.backend.list_datasets()
        current = select or self.dataset.value
        self.dataset_kinds = {d.id: d.kind or "sft" for d in datasets}
        options: list[tuple[str, str | None]] = [
            (f"{d.id} ({d.example_count} {_noun(d)})", d.id) for d in datasets
        ]
        if not options:
            options = [("(none yet: one is built from all trajectories)", None)]
        values = [v for _, v in options]
        self.dataset.options = options
        self.dataset.value = current if current in values else values[0]

    def body(self) -> JobBody:
        """The start request the widgets describe."""
        body: JobBody = {
            "backend": self.backend_choice.value,
            "iterations": int(self.iterations.value),
            "batchSize": int(self.batch_size.value),
            "learningRate": float(self.learning_rate.value),
        }
        if self.dataset.value:
            body["datasetId"] = self.dataset.value
        model = (self.model.value or "").strip()
        if model:
            body["model"] = model
        body |= self.controls.body()
        if "epochs" in body:  # one of the two: the service derives the other
            del body["iterations"]
        return body

    def _on_dataset(self, change: Change) -> None:
        """A pairs dataset trains with dpo, a labelled one with kto, others with sft."""
        kind = self.dataset_kinds.get(change["new"] or "", "sft")
        self.controls.objective.value = OBJECTIVE_OF_KIND.get(kind, "sft")

    def _on_model(self, change: Change) -> None:
        """A new base model brings its size's learning rate, rank and batch (README)."""
        if self._filling:
            return
        self.controls.apply_size_defaults(change["new"], self.batch_size, self.learning_rate)

    # -- actions --------------------------------------------------------------------------
    def start(self) -> None:
        """Start a job with the current options (in a thread) and follow it; a value the
        service would refuse is named next to its field instead, and nothing is sent."""
        body = self.body()
        problems = self.checks.check(dict(body))
        if problems:
            listed = "; ".join(f"{name} {reason}" for name, reason in problems.items())
            self.set_status(f"not started: {listed}", "error")
            return
        self.start_button.disabled = True

        def started(job: Job) -> None:
            self.start_button.disabled = False
            self._set_jobs([job, *(j for j in self.jobs if j.id != job.id)])
            self.follow(job.id)
            self.job = job
            self._shown_options = job.id  # the form holds what it was started with
            self._seen_live.add(job.id)
            self._say_job(job, "ok")
            self._jobs_at = 0.0
            self.poller.start()
            self._render_job()

        self.in_background(
            "start", lambda: self.backend.start_job(body), started, busy="starting job…"
        )

    def cancel(self) -> None:
        """Cancel the job being watched; the panel then shows it cancelled."""
        job_id = self.job_id
        if job_id is None:
            self.set_status("no job to cancel", "info")
            return
        self.cancel_button.disabled = True

        def cancelled(job: Job) -> None:
            if job_id == self.job_id:
                self.job = job
                self._dirty = True
                self._render_job()
                self._draw(force=True)
            self._say_job(job, "ok")
            self._jobs_at = 0.0

        self.in_background(
            "cancel",
            lambda: self.backend.cancel_job(job_id),
            cancelled,
            busy=f"cancelling {job_id}…",
        )

    def after_error(self, action: str) -> None:
        if action == "start":
            self.start_button.disabled = False
        if action == "cancel":
            self.cancel_button.disabled = self.job is None or self.job.status not in LIVE_STATUSES

    def follow(self, job_id: str | None) -> None:
        """Watch another job: reset the curve and read its metrics from the start."""
        if job_id == self.job_id:
            return
        self.job_id = job_id
        self.job = None
        self.train_points, self.val_points = [], []
        self.figures = {}
        self.last_seq = 0
        self._dirty = True
        if job_id is not None and job_id not in {v for _, v in self.watch.options}:
            self._set_jobs(self.jobs)  # offers job_id in the menu until the list has it
        self._suspend = True
        try:
            self.watch.value = job_id
        finally:
            self._suspend = False

    def _on_watch(self, change: Change) -> None:
        if self._suspend:
            return
        self.follow(change["new"])
        if self.job_id is not None:
            self.poll_once()

    # -- polling -------------------------------------------------------------------------
    def poll_once(self) -> float:
        """Read the job and new metrics and update the panel (what the loop task does)."""
        return self.poller.poll_once()

    def _fetch(self) -> JobReads:
        """Blocking reads, in a thread: the watched job, its new metrics, sometimes all jobs."""
        job_id, after = self.job_id, self.last_seq
        data = JobReads(job_id, after)
        now = time.monotonic()
        queued = self.job is not None and self.job.status == "queued"
        if job_id is None or queued or now - self._jobs_at >= JOBS_EVERY:
            data.jobs = self.backend.list_jobs()
        if job_id is not None:
            data.job = self.backend.get_job(job_id)
            data.metrics = self.backend.job_metrics(job_id, after=after)
        return data

    def _apply(self, data: JobReads) -> float:
        """On the loop thread: fold the reads into the widgets; returns the next delay."""
        if self._closed:
            return IDLE_DELAY
        if data.jobs is not None:
            self._jobs_at = time.monotonic()
            self._set_jobs(data.jobs)
            if self._pick_up():
                return 0.0  # poll the new job at once
        if data.job_id == self.job_id and self.job_id is not None and data.job is not None:
            self._add_metrics(data.metrics)
            previous = self.job.status if self.job else None
            self.job = data.job
            status = self.job.status
            if status != previous:
                self._dirty = True
            if self._shown_options != self.job_id:
                self._shown_options = self.job_id
                self.show_options(self.job)
            self._render_job()
            self._follow_status(self.job)
            if status in FINAL_STATUSES and self.job_id not in self._final_seen:
                self._final_seen.add(self.job_id)
                self._jobs_at = 0.0
                for callback in list(self.on_job_final):
                    callback(self.job)
        live = self.job is not None and self.job.status in LIVE_STATUSES
        self._draw(live=live)
        return LIVE_DELAY if live else IDLE_DELAY

    def _poll_error(self, exc: BaseException) -> None:
        self.show_error(exc, "update")

    def _add_metrics(self, metrics: list[Metric]) -> None:
        for m in metrics:
            if m.seq and m.seq <= self.last_seq:
                continue
            self.last_seq = max(self.last_seq, m.seq)
            if m.loss is not None:
                self.train_points.append((float(m.iteration), m.loss))
                self._dirty = True
            if m.val_loss is not None:
                self.val_points.append((float(m.iteration), m.val_loss))
                self._dirty = True
            # the figures by wire name (rewardMargin, ...), as PREFERENCE_FIGURES lists them
            self.figures |= {k: float(m[k]) for k in PREFERENCE_FIGURES if m.get(k) is not None}

    def _pick_up(self) -> bool:
        """Follow a live job we have not seen yet when the watched one is idle or done."""
        watching_live = self.job is not None and self.job.status in LIVE_STATUSES
        if self.job_id is not None and (watching_live or self.job is None):
            return False
        live = [j for j in self.jobs if j.status in LIVE_STATUSES]
        live.sort(key=lambda j: (j.status != "running", -j.created_at))
        for job in live:
            if job.id not in self._seen_live:
                self._seen_live.add(job.id)
                self.follow(job.id)
                self.set_status(f"following job {job.id} ({job.status})", "info")
                self._status_about = (job.id, job.status)
                return True
        if self.job_id is None and self.jobs:
            self.follow(self.jobs[0].id)  # show the latest job's curve
            return True
        return False

    def show_options(self, job: Job) -> None:
        """Fill the form with the options ``job`` was started with (its recorded options;
        the job's own fields for one recorded without them)."""
        options = dict(job.options or {})
        self._filling = True
        try:
            with self.hold_sync():
                if job.backend in self.backend_choice.options:
                    self.backend_choice.value = job.backend
                dataset = options.get("datasetId") or job.dataset_id
                if dataset in {v for _, v in self.dataset.options}:
                    self.dataset.value = dataset
                self.model.value = str(options.get("model") or job.model or "")
                self.iterations.value = int(options.get("iterations") or job.total_iterations)
                if isinstance(options.get("batchSize"), int):
                    self.batch_size.value = options["batchSize"]
                if isinstance(options.get("learningRate"), int | float):
                    self.learning_rate.value = float(options["learningRate"])
                self.controls.show(options)
        finally:
            self._filling = False

    # -- the status line -----------------------------------------------------------------
    def _say_job(self, job: Job, kind: str) -> None:
        """Say where ``job`` is; the line is replaced when the job moves on."""
        if job.status == "queued":
            message = f"job {job.id} {self.waiting_for(job)}"
        elif job.status == "failed" and job.error:
            message, kind = f"job {job.id} failed: {job.error}", "error"
        else:
            message = f"job {job.id} {job.status}"
        self.set_status(message, kind)
        self._status_about = (job.id, job.status)

    def _follow_status(self, job: Job) -> None:
        """Replace a message about ``job`` that its status has made stale."""
        about = self._status_about
        if about is None or about[0] != job.id or self.last_status[0] == "busy":
            return
        if about[1] == job.status and job.status != "queued":
            return
        kind = {"completed": "ok", "failed": "error"}.get(job.status, "info")
        self._say_job(job, kind)

    def set_status(self, message: str, kind: str = "info") -> None:
        super().set_status(message, kind)
        self._status_about = None  # set again by the messages that speak of a job

    def waiting_for(self, job: Job) -> str:
        """What a queued job waits for: the running job, or the queued ones before it."""
        ahead = [
            j
            for j in self.jobs
            if j.id != job.id
            and (j.status == "running" or (j.status == "queued" and j.created_at < job.created_at))
        ]
        if not ahead:
            return "queued: waiting for a worker"
        ahead.sort(key=lambda j: (j.status != "running", j.created_at))
        first = ahead[0]
        more = f" and {len(ahead) - 1} more" if len(ahead) > 1 else ""
        return f"queued behind job {first.id} ({first.status}){more}"

    # -- rendering -----------------------------------------------------------------------
    def _set_jobs(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        for job in jobs:
            if job.status in FINAL_STATUSES:
                self._seen_live.add(job.id)  # a finished job never needs picking up
        options = [(f"{j.id} · {j.status} · {short_model(j.model)}", j.id) for j in jobs]
        if self.job_id is not None and self.job_id not in {v for _, v in options}:
            options.insert(0, (f"{self.job_id}", self.job_id))
        rows = [
            [
                j.id,
                j.status,
                short_model(j.model),
                j.dataset_id,
                f"{j.current_iteration}/{j.total_iterations}",
                fmt_num(j.loss),
                fmt_ms(j.created_at),
            ]
            for j in jobs[:10]
        ]
        self._suspend = True
        try:
            with self.hold_sync():
                if list(self.watch.options) != options:
                    self.watch.options = options
                self.watch.value = self.job_id if self.job_id in {v for _, v in options} else None
                self.jobs_table.value = (
                    html_table(
                        [
                            "job",
                            "status",
                            "model",
                            "dataset",
                            "iteration",
                            "loss",
                            "created",
                        ],
                        rows,
                        numeric={5},
                    )
                    if rows
                    else "<i>No job yet.</i>"
                )
        finally:
            self._suspend = False

    def _render_job(self) -> None:
        job = self.job
        status = job.status if job else "—"
        total = job.total_iterations if job else 0
        current = job.current_iteration if job else 0
        parts = [
            f"<b data-status='{esc(status)}' class='milady-job-status'>{esc(status)}</b>",
            f"iteration {current}/{total or '?'}",
            *(self._job_parts(job) if job else ["loss —", "— tokens/s", "ETA —"]),
        ]
        if job is not None and job.status == "queued":
            parts.insert(1, esc(self.waiting_for(job)))
        style = {"completed": "success", "failed": "danger", "cancelled": "warning"}.get(
            status, "info"
        )
        with self.hold_sync():
            self.progress.max = max(1, total)
            self.progress.value = min(current, self.progress.max)
            self.progress.bar_style = style
            self.progress.description = f"{int(100 * current / total) if total else 0}%"
            self.info.value = (
                f"<div class='milady-job-info'>{esc(job.id if job else '')} · "
                + " · ".join(parts)
                + "</div>"
            )
            self.cancel_button.disabled = status not in LIVE_STATUSES

    def _job_parts(self, job: Job) -> list[str]:
        """The watched job's figures on its info line: losses, best, speed, ETA, error."""
        parts = [f"loss {fmt_num(job.loss)}"]
        if job.val_loss is not None:
            parts.append(f"val {fmt_num(job.val_loss)}")
        parts += [
            f"{label} {self.figures[key]:.3f}"
            for key, label in PREFERENCE_FIGURES.items()
            if key in self.figures
        ]
        if job.best_iteration is not None:
            best = f"best val {fmt_num(job.best_val_loss)} @ {job.best_iteration}"
            parts.append(f"<span class='milady-best'>{best}</span>")
        if job.stopped_early:
            parts.append(f"<span title='{esc(job.stop_reason or '')}'>stopped early</span>")
        tps = job.tokens_per_second
        parts.append(f"{fmt_num(round(tps)) if tps is not None else '—'} tokens/s")
        parts.append(f"ETA {_fmt_eta(eta_seconds(job))}")
        if job.status == "failed" and job.error:
            parts.append(f"<span style='color:#b71c1c'>{esc(job.error)}</span>")
        return parts

    def _draw(self, *, live: bool = False, force: bool = False) -> None:
        """Redraw the loss curve when it changed, at most every MIN_REDRAW seconds."""
        now = time.monotonic()
        since = now - self._last_draw
        # Only a change is drawn: an identical PNG would cost CPU and send nothing new.
        due = force or (self._dirty and since >= MIN_REDRAW)
        if not due:
            return
        job = self.job
        title = f"Loss — {self.job_id}" if self.job_id else "Loss"
        if job and job.status in FINAL_STATUSES:
            title += f" ({job.status})"
        png = plots.loss_curve_png(
            self.train_points,
            self.val_points,
            title=title,
            total_iterations=job.total_iterations if job else None,
            best=_best_point(job) if job else None,
        )
        self._last_draw = now
        self._dirty = False
        if png != self.curve.value:
            self.redraws += 1
            with self.hold_sync():
                self.curve.value = png
                self.redraw_label.value = (
                    f"<span class='milady-redraws' data-redraws='{self.redraws}' "
                    f"data-points='{len(self.train_points)}' "
                    f"style='color:#888;font-size:11px'>plot updates: {self.redraws} · "
                    f"{len(self.train_points)} train / {len(self.val_points)} "
                    "validation points</span>"
                )

    def stop(self) -> None:
        self.poller.stop()


#: What a dataset's lines are, by its kind, in the dataset dropdown.
_NOUNS = {"pairs": "pairs", "labelled": "labelled examples"}


def _noun(dataset: Dataset) -> str:
    return _NOUNS.get(dataset.kind or "sft", "examples")


#: The objective a dataset of each kind trains with (``training.options.OBJECTIVE_KINDS``).
OBJECTIVE_OF_KIND = {"sft": "sft", "pairs": "dpo", "labelled": "kto"}


def _best_point(job: Job) -> tuple[float, float] | None:
    """(bestIteration, bestValLoss) of a job, for the marker on its curve."""
    if job.best_iteration is None or job.best_val_loss is None:
        return None
    return float(job.best_iteration), job.best_val_loss
