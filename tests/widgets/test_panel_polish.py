"""The widget items of issue 25, driven in-process: the launcher shows the followed job's
options, refuses bad numbers beside the field, keeps its status line current and says
what a queued job waits for; chart titles fit; every glyph renders in DejaVu Sans; the
Models tab picks the newest model; dates read in local time; a new dataset's histogram
never shows the previous one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tzlocal
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

from milady_lab.api.schema import Job, Metric
from milady_lab.service import TrainingService
from milady_lab.training.options import JobOptions
from milady_lab.training.request import StartJobRequest
from milady_lab.widgets import DatasetBuilder, JobLauncher, LocalData, ModelManager, plots
from milady_lab.widgets._panel import KIND_ICON

from .conftest import register_model

WIDGETS = Path(__file__).resolve().parents[2] / "milady_lab" / "widgets"


class JobsStandIn(LocalData):
    """The real service for datasets and models; jobs a test sets by hand (no worker), and
    every start request it was sent."""

    def __init__(self, service: TrainingService) -> None:
        super().__init__(service)
        self.jobs: list[Job] = []
        self.sent: list[dict[str, Any]] = []

    def list_jobs(self) -> list[Job]:
        return sorted(self.jobs, key=lambda j: -j.created_at)

    def get_job(self, job_id: str) -> Job:
        return next(j for j in self.jobs if j.id == job_id)

    def job_metrics(self, job_id: str, after: int = 0) -> list[Metric]:
        return []

    def start_job(self, body: Any) -> Job:
        self.sent.append(dict(body))
        job = make_job(f"job-{len(self.jobs) + 1}", "queued", options=recorded(self.service, body))
        self.jobs.append(job)
        return job

    def move(self, job_id: str, status: str) -> None:
        self.jobs = [
            msgspec.structs.replace(j, status=status) if j.id == job_id else j for j in self.jobs
        ]


def recorded(service: TrainingService, body: dict[str, Any]) -> dict[str, Any]:
    """The options a job started with ``body`` records, as the service stores them."""
    return JobOptions.from_body(dict(body), service.store).to_record().to_dict()


def make_job(job_id: str, status: str, *, options: dict[str, Any] | None = None) -> Job:
    created = int(time.time() * 1000) + int(job_id.rsplit("-", 1)[-1] if "-" in job_id else 0)
    total = int((options or {}).get("iterations") or 100)
    return Job(
        id=job_id, status=status, dataset_id=(options or {}).get("datasetId"), backend="cpu",
        model=str((options or {}).get("model") or "smollm2-135m-instruct"), created_at=created,
        completed_at=None, progress=0.0, current_iteration=0, total_iterations=total, loss=None,
        model_id=None, options=options,
    )  # fmt: skip


@pytest.fixture
def jobs(service: TrainingService) -> JobsStandIn:
    service.build_dataset({"limit": 5})
    return JobsStandIn(service)


# -- 1. the followed job's options ------------------------------------------------------------


def test_the_form_shows_the_followed_jobs_options(jobs: JobsStandIn) -> None:
    body = {
        "iterations": 8, "batchSize": 2, "learningRate": 1e-3, "loraRank": 4, "seed": 7,
        "loraLayers": 2, "promptGradientTokens": "all",
    }  # fmt: skip
    jobs.jobs = [make_job("job-1", "running", options=recorded(jobs.service, body))]
    jl = JobLauncher(jobs, autostart=False)
    assert jl.job_id == "job-1"
    # not the defaults 100 / 4 / 2e-4, and not the base model's size defaults either
    assert (jl.iterations.value, jl.batch_size.value, jl.learning_rate.value) == (8, 2, 1e-3)
    assert (jl.controls.lora_rank.value, jl.controls.seed.value) == (4, 7)
    assert jl.controls.lora_layers.value == "2"
    start = jl.body()
    assert start["loraLayers"] == "2"  # typed by the service (or ``json_typed`` over REST)
    assert jl.controls.prompt_gradient_tokens.value == "all"
    assert start["promptGradientTokens"] == "all"
    assert (start["iterations"], start["batchSize"], start["learningRate"]) == (8, 2, 1e-3)

    # an edit made while following stays: the form is filled once per job, not every poll
    jl.iterations.value = 50
    jl.poll_once()
    assert jl.iterations.value == 50

    # following another job shows that job's options
    other = {"iterations": 30, "batchSize": 1, "learningRate": 5e-4}
    jobs.jobs.append(make_job("job-2", "completed", options=recorded(jobs.service, other)))
    jl._set_jobs(jobs.list_jobs())
    jl.watch.value = "job-2"
    assert (jl.iterations.value, jl.batch_size.value, jl.learning_rate.value) == (30, 1, 5e-4)
    jl.close()


# -- 2. refused numbers ------------------------------------------------------------------------


def test_invalid_numbers_are_refused_beside_the_field_and_nothing_is_sent(
    jobs: JobsStandIn,
) -> None:
    jl = JobLauncher(jobs, autostart=False)
    jl.iterations.value = -5
    jl.learning_rate.value = 0.0
    jl.controls.lora_rank.value = 0
    jl.start_button.click()
    jl.wait()
    assert jobs.sent == []
    assert jl.iterations.value == -5  # shown as typed, not clamped to 1
    assert jl.checks.notes == {
        "iterations": "must be ≥ 1 and ≤ 1,000,000",
        "learningRate": "must be > 0 and ≤ 1",
        "loraRank": "must be ≥ 1 and ≤ 512",
    }
    widget, note, _ = jl.checks.fields["iterations"]
    assert note.layout.display == "" and "must be ≥ 1" in note.value
    assert widget in note_box(jl, "iterations").children  # the note sits beside its field
    kind, message = jl.last_status
    assert kind == "error" and message.startswith("not started: Iterations must be ≥ 1")

    # fixing a field clears its note; once all are fixed the job starts with those values
    jl.iterations.value = 8
    assert "iterations" not in jl.checks.notes and note.layout.display == "none"
    jl.learning_rate.value = 1e-3
    jl.controls.lora_rank.value = 4
    jl.start_button.click()
    jl.wait()
    assert [(b["iterations"], b["learningRate"], b["loraRank"]) for b in jobs.sent] == [
        (8, 1e-3, 4)
    ]
    assert jl.checks.notes == {}
    jl.close()


def note_box(jl: JobLauncher, key: str) -> Any:
    _widget, note, _ = jl.checks.fields[key]
    boxes = [b for b in _walk(jl) if note in getattr(b, "children", ())]
    assert len(boxes) == 1
    return boxes[0]


def _walk(widget: Any) -> Iterator[Any]:
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_the_checks_refuse_exactly_what_the_service_refuses(jobs: JobsStandIn) -> None:
    """Every checked field, at and beyond its bounds, against the request struct itself."""
    jl = JobLauncher(jobs, autostart=False)
    assert set(jl.checks.fields) >= {"iterations", "batchSize", "learningRate", "epochs", "beta"}
    for key, (_widget, _note, bounds) in jl.checks.fields.items():
        edges = [b for b in (bounds.ge, bounds.gt, bounds.le, bounds.lt) if b is not None]
        for edge in edges:
            for value in (edge - 1, edge, edge + 1, edge - 0.5, edge + 0.5):
                value = int(value) if bounds.whole and value == int(value) else value
                try:
                    msgspec.convert({key: value}, StartJobRequest)
                    accepted = True
                except msgspec.ValidationError:
                    accepted = False
                if bounds.whole and not isinstance(value, int):
                    accepted = False  # a whole-number box never holds 2.5
                assert (bounds.problem(value) is None) == accepted, (key, value)
    jl.close()


# -- 3. current messages; what a queued job waits for --------------------------------------------


def test_messages_follow_the_job_and_a_queued_job_says_what_it_waits_for(
    jobs: JobsStandIn,
) -> None:
    jobs.jobs = [make_job("job-0", "running")]
    jl = JobLauncher(jobs, autostart=False)
    jl.iterations.value = 8
    jl.start_button.click()
    jl.wait()
    queued = jl.job_id
    assert queued == "job-2" and jl.job is not None and jl.job.status == "queued"
    assert jl.last_status == ("ok", "job job-2 queued behind job job-0 (running)")
    assert "queued behind job job-0 (running)" in jl.info.value

    jobs.move("job-0", "completed")
    jobs.move("job-2", "running")
    jl.poll_once()
    assert jl.last_status == ("info", "job job-2 running")
    jobs.move("job-2", "completed")
    jl.poll_once()
    assert jl.last_status == ("ok", "job job-2 completed")  # no stale "queued" left
    assert "queued" not in jl.status_line.value
    jl.close()


def test_a_message_about_something_else_is_left_alone(jobs: JobsStandIn) -> None:
    jobs.jobs = [make_job("job-1", "running")]
    jl = JobLauncher(jobs, autostart=False)
    jl.set_status("your note", "info")
    jobs.move("job-1", "completed")
    jl.poll_once()
    assert jl.last_status == ("info", "your note")
    jl.close()


# -- 4. chart titles fit -------------------------------------------------------------------------


def test_a_long_chart_title_is_wrapped_inside_the_figure() -> None:
    fig = Figure(figsize=(5.0, 2.8), dpi=plots.DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    title = "Benchmark — smollm2-135m-instruct-a-rather-long-adapter-name-v12 (cancelled)"
    text = plots.fit_title(ax, title)
    fig.tight_layout()
    box = text.get_window_extent(fig.canvas.get_renderer())
    assert "\n" in text.get_text()
    assert "".join(text.get_text().split()) == "".join(title.split())  # nothing lost
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


# -- 5. glyphs ----------------------------------------------------------------------------------


def test_every_glyph_of_the_panels_is_in_dejavu_sans() -> None:
    """DejaVu Sans is the font the Binder image and Debian's Chromium have (fonts-dejavu-core;
    matplotlib ships the same file): a character it lacks, like the emoji ⏳, is an empty box."""
    font = FT2Font(font_manager.findfont("DejaVu Sans", fallback_to_default=False))
    charmap = font.get_charmap()
    missing = {
        (path.name, ch)
        for path in sorted(WIDGETS.glob("*.py"))
        for ch in path.read_text(encoding="utf-8")
        if ord(ch) > 127 and ord(ch) not in charmap
    }
    assert missing == set()
    assert all(ord(ch) in charmap for icon in KIND_ICON.values() for ch in icon)
    assert "⏳" not in "".join(KIND_ICON.values())


# -- 6. the newest model, local dates, a fresh histogram --------------------------------


@pytest.fixture
def far_time_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A zone three hours from UTC, so that a UTC time would show."""
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    time.tzset()
    tzlocal.reload_localzone()  # it caches the zone it found first
    yield
    monkeypatch.undo()
    time.tzset()
    tzlocal.reload_localzone()


def test_models_preselect_the_newest_and_dates_read_in_local_time(
    backend: LocalData, service: TrainingService, far_time_zone: None
) -> None:
    older = register_model(service, id="m-old", name="older-v1", createdAt=1_700_000_000_000)
    newer = register_model(service, id="m-new", name="newer-v2", createdAt=1_700_003_600_000)
    mm = ModelManager(backend)
    assert mm.pick.value == "m-new"

    for rec in (older, newer):
        ms = rec["createdAt"]
        local = datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")
        utc = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        assert local != utc
        assert local in mm.table.value and utc not in mm.table.value
        assert str(ms) not in mm.table.value
    assert "(UTC)" not in mm.table.value

    # a model the user chose stays chosen ...
    mm.pick.value = "m-old"
    mm.refresh()
    assert mm.pick.value == "m-old"
    # ... until a new one is registered (a job just completed): that one is chosen
    register_model(service, id="m-newest", name="newest-v3", createdAt=1_700_007_200_000)
    mm.refresh()
    assert mm.pick.value == "m-newest"
    mm.close()


def test_the_launcher_and_builder_tables_show_local_dates(
    jobs: JobsStandIn, service: TrainingService, far_time_zone: None
) -> None:
    jobs.jobs = [make_job("job-1", "completed")]
    jl = JobLauncher(jobs, autostart=False)
    created = jobs.jobs[0].created_at
    local = datetime.fromtimestamp(created / 1000).strftime("%Y-%m-%d %H:%M")
    assert local in jl.jobs_table.value and "(UTC)" not in jl.jobs_table.value
    jl.close()
    builder = DatasetBuilder(LocalData(service))
    builder.wait()
    ds = service.list_datasets()["datasets"][0]
    local = datetime.fromtimestamp(ds["createdAt"] / 1000).strftime("%Y-%m-%d %H:%M")
    assert local in builder.table.value and "(UTC)" not in builder.table.value
    builder.close()


def test_a_new_datasets_histogram_never_shows_the_previous_one(
    backend: LocalData, service: TrainingService
) -> None:
    b = DatasetBuilder(backend)
    b.wait()
    first = b.dataset_pick.value
    b.show_histogram()
    b.wait()
    old = b.histogram.value
    assert plots_is_png(old)

    b.limit.value = 12
    b.wait()
    b.build_button.click()
    deadline = time.monotonic() + 60
    shown: list[bytes] = []

    def watch(change: dict[str, Any]) -> None:
        shown.append(bytes(change["new"]))

    b.histogram.observe(watch, names="value")
    while b.last_built is None:
        assert time.monotonic() < deadline
        b.wait()
    b.wait()
    assert b.dataset_pick.value == b.last_built.id != first
    # the first image after the build is the "counting" placeholder, then the new bars
    assert shown and shown[0] != bytes(old)
    assert len(shown) >= 2 and shown[-1] not in (bytes(old), shown[0])
    b.close()


def plots_is_png(value: Any) -> bool:
    return bytes(value[:4]) == b"\x89PNG"
