"""Panel logic in plain pytest: ipywidgets 8 widgets work without a kernel, and
``Button.click()`` fires the handlers. The real service runs in-process over demo data."""

from __future__ import annotations

import asyncio
import html
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import polars as pl
import pytest
import tzlocal
from models.ollama_standin import OllamaStandIn

from milady_lab.api.schema import DatasetPreview, Job
from milady_lab.datasets.build import BuildOptions
from milady_lab.service import TrainingService
from milady_lab.widgets import (
    Dashboard,
    DatasetBuilder,
    JobLauncher,
    LocalData,
    ModelManager,
    TrajectoryExplorer,
)
from milady_lab.widgets._async import UiRunner
from milady_lab.widgets._backend import as_record
from milady_lab.widgets._panel import local_zone
from milady_lab.widgets.builder import ANY, FILTER_FIELDS

from .conftest import DEMO_COUNT, register_model, stop_jobs

PNG = b"\x89PNG"


def is_png(value: Any) -> bool:
    return bytes(value[:4]) == PNG


def status_of(panel: Any) -> tuple[str, str]:
    return panel.last_status


def preview(service: TrainingService, body: dict[str, Any]) -> DatasetPreview:
    """What the service previews for ``body``, as the record the panel holds."""
    return as_record(DatasetPreview, service.preview_dataset(body))


# -- explorer -------------------------------------------------------------------------------


def test_explorer_lists_pages_and_filters(
    backend: LocalData, service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = TrajectoryExplorer(backend)
    everything = service.trajectories_frame().collect()
    assert ex.frame.height == everything.height == DEMO_COUNT
    assert len(ex.rows.options) == ex.page_size
    assert is_png(ex.calls_chart.value) and is_png(ex.tokens_chart.value)

    # paging with the buttons
    first_page = [v for _, v in ex.rows.options]
    ex.next_button.click()
    assert ex.page == 1 and [v for _, v in ex.rows.options] != first_page
    ex.prev_button.click()
    assert [v for _, v in ex.rows.options] == first_page
    assert ex.prev_button.disabled

    # source and status
    source = everything.get_column("source").mode().item(0)
    ex.source_filter.value = source
    assert 0 < ex.frame.height < DEMO_COUNT
    assert set(ex.frame.get_column("source").to_list()) == {source}
    status = ex.frame.get_column("status").mode().item(0)
    ex.status_filter.value = status
    assert set(ex.frame.get_column("status").to_list()) == {status}
    ex.clear_button.click()
    assert ex.frame.height == DEMO_COUNT

    # minimum LLM calls
    ex.min_calls.value = 3
    assert ex.frame.height == everything.filter(pl.col("llmCallCount") >= 3).height
    ex.min_calls.value = 0

    # date range: the day of the newest trajectory only, a day of the user's own time zone
    tokyo = ZoneInfo("Asia/Tokyo")
    monkeypatch.setattr(tzlocal, "get_localzone", lambda: tokyo)
    newest = datetime.fromtimestamp(everything.get_column("startTime").max() / 1000, tokyo).date()
    ex.date_from.value = newest
    ex.date_to.value = newest
    lo = int(datetime(newest.year, newest.month, newest.day, tzinfo=tokyo).timestamp() * 1000)
    hi = lo + int(timedelta(days=1).total_seconds() * 1000)
    expected = everything.filter((pl.col("startTime") >= lo) & (pl.col("startTime") < hi))
    assert ex.frame.height == expected.height > 0
    body = ex.filter_body()
    assert body["timeZone"] == "Asia/Tokyo"
    # the build the explorer hands on bounds the same instants as the explorer shows
    where = BuildOptions.from_body(body).steps_filter()
    assert where is not None and (where.start_ms, where.end_ms) == (lo, hi)
    ex.clear_filters()
    assert ex.frame.height == DEMO_COUNT


def test_explorer_search_and_detail(backend: LocalData, service: TrainingService) -> None:
    ex = TrajectoryExplorer(backend)
    calls = service.llm_calls_frame().collect()
    # a word from one reply, in other case: the search ignores case
    reply = next(r for r in calls.get_column("response").to_list() if r and len(r) > 40)
    needle = reply[10:30].upper()
    ex.search.value = needle
    hits = set(ex.frame.get_column("id").to_list())
    expected = set(
        calls.filter(
            pl.concat_str(
                [pl.col(c).fill_null("") for c in ("systemPrompt", "userPrompt", "response")],
                separator="\n",
            )
            .str.to_lowercase()
            .str.contains(needle.lower(), literal=True)
        )
        .get_column("trajectoryId")
        .to_list()
    )
    assert hits and hits == expected & set(service.trajectories_frame().collect()["id"])
    ex.search.value = "no such text anywhere 1234567"
    assert ex.frame.height == 0
    assert ex.rows.options == ()
    ex.search.value = ""

    # selecting a row shows its calls and provider accesses
    tid = next(iter(hits))
    ex.search.value = needle
    ex.rows.value = tid
    detail = service.get_trajectory(tid)["trajectory"]
    assert ex.selected_id == tid
    assert ex.selected.height == len(detail["llmCalls"]) > 0
    assert set(ex.selected.get_column("trajectoryId").to_list()) == {tid}
    assert "Call 1" in ex.detail.value and "<details>" in ex.detail.value
    if detail["providerAccesses"]:
        assert "Provider accesses" in ex.detail.value


def test_explorer_shows_errors_instead_of_raising(service: TrainingService) -> None:
    class Flaky(LocalData):
        def get_trajectory(self, trajectory_id: str) -> dict[str, Any]:
            raise RuntimeError("disk on fire")

    ex = TrajectoryExplorer(Flaky(service))
    ex.rows.value = ex.rows.options[0][1]
    kind, message = status_of(ex)
    assert kind == "error" and "RuntimeError: disk on fire" in message
    # a not-found from the service reads as the service wrote it
    ex.backend = LocalData(service)
    ex.guard("open trajectory")(ex.select)("no-such-trajectory")
    kind, message = status_of(ex)
    assert kind == "error" and "no trajectory with id 'no-such-trajectory'" in message


# -- dataset builder ------------------------------------------------------------------------


def test_builder_preview_build_and_list(backend: LocalData, service: TrainingService) -> None:
    b = DatasetBuilder(backend)
    b.wait()
    assert b.last_preview == preview(service, {"minLlmCallsPerTrajectory": 1})
    assert "examples" in b.preview_label.value
    b.limit.value = 10
    b.min_calls.value = 2
    b.wait()
    assert b.last_preview == preview(service, {"limit": 10, "minLlmCallsPerTrajectory": 2})
    assert b.last_preview["trajectoryCount"] == 10

    b.build_button.click()
    assert b.build_button.disabled
    b.wait()
    b.wait()  # the histogram is computed after the listing refresh
    kind, message = status_of(b)
    assert kind == "ok" and "10 trajectories" in message, message
    assert not b.build_button.disabled
    assert b.progress.bar_style == "success" and b.progress.value == b.progress.max
    listed = service.list_datasets()["datasets"]
    assert len(listed) == 1 and listed[0]["id"] in b.table.value
    assert b.dataset_pick.value == listed[0]["id"]
    assert is_png(b.histogram.value)


def test_builder_filters_preview_and_build_like_the_service(
    backend: LocalData, service: TrainingService
) -> None:
    b = DatasetBuilder(backend)
    b.wait()
    assert set(FILTER_FIELDS) <= set(b.fields)
    sources = service.trajectories_frame().collect()["source"].unique().drop_nulls().to_list()
    assert b.filters["source"].options == (ANY, *sorted(sources))
    assert "completed" in b.filters["status"].options
    starts = service.trajectories_frame().collect()["startTime"]
    first = datetime.fromtimestamp(int(starts.min()) / 1000, UTC).date()  # type: ignore[arg-type]
    b.filters["source"].value = "chat"
    b.filters["status"].value = "completed"
    b.filters["startDate"].value = first + timedelta(days=20)
    b.filters["search"].value = "  the "
    b.wait()
    body = {
        "minLlmCallsPerTrajectory": 1,
        "source": "chat",
        "status": "completed",
        "startDate": (first + timedelta(days=20)).isoformat(),
        "timeZone": local_zone().key,  # the date pickers' days are the kernel's
        "search": "the",
        "privacy": {"redact": True, "anonymizeHandles": False},  # the checkboxes' defaults
    }
    assert b.body() == body
    everything = service.preview_dataset({})
    assert b.last_preview == preview(service, body)
    assert 0 < b.last_preview["trajectoryCount"] < everything["trajectoryCount"]
    b.build_button.click()
    b.wait()
    b.wait()
    built = b.last_built
    assert built is not None and built["options"] == {**body, "limit": None}
    assert built["trajectoryCount"] == b.last_preview["trajectoryCount"]
    # An empty selection is the service's message in the panel, not an exception.
    b.filters["search"].value = "no such text anywhere 1f9c"
    b.wait()
    assert b.last_preview == DatasetPreview(trajectory_count=0, example_count=0, redactions={})
    b.build_button.click()
    b.wait()
    kind, message = status_of(b)
    assert kind == "error" and "matches the filters" in message, message


def test_builder_counts_a_burst_of_changes_once(service: TrainingService) -> None:
    gate = threading.Event()
    asked: list[dict[str, Any]] = []

    class SlowCounts(LocalData):
        def preview_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
            asked.append(dict(body))
            gate.wait(30)
            return super().preview_dataset(body)

    b = DatasetBuilder(SlowCounts(service))  # the first count starts and waits at the gate
    for n in (5, 6, 7, 8):
        b.limit.value = n  # typing a number: four changes while the first count runs
    assert "counting" in b.preview_label.value
    gate.set()
    b.wait()
    assert [a.get("limit") for a in asked] == [None, 8]  # one more count, the latest options
    assert b.last_preview == preview(service, {"limit": 8})
    assert "8 trajectories" in b.preview_label.value


def test_builder_shows_the_services_error(backend: LocalData, service: TrainingService) -> None:
    b = DatasetBuilder(backend)
    b.min_calls.value = 10_000
    b.wait()
    b.build_button.click()
    b.wait()
    kind, message = status_of(b)
    assert kind == "error" and message.startswith("build failed: no trajectory qualifies")
    assert not b.build_button.disabled
    assert service.list_datasets()["datasets"] == []


# -- job launcher ---------------------------------------------------------------------------


def test_launcher_options_and_start_error(backend: LocalData, service: TrainingService) -> None:
    from milady_lab.training.backends import available_backends, best_backend

    service.build_dataset({"limit": 5})
    jl = JobLauncher(backend)
    assert list(jl.backend_choice.options) == available_backends()
    assert jl.backend_choice.value == best_backend()
    assert jl.dataset.value == service.list_datasets()["datasets"][0]["id"]
    assert "smollm2-135m-instruct" in jl.model.options
    assert not jl.poller.running  # no kernel loop: tests poll by hand

    jl.model.value = "no-such-model-anywhere"
    jl.start_button.click()
    jl.wait()
    kind, message = status_of(jl)
    assert kind == "error" and message.startswith("start failed:"), message
    assert not jl.start_button.disabled
    jl.cancel_button.click()  # nothing to cancel: a message, no exception
    assert status_of(jl)[0] in ("info", "error")
    jl.close()


@pytest.mark.slow
def test_launcher_start_live_curve_cancel(
    backend: LocalData, service: TrainingService, tiny_model: Path
) -> None:
    service.build_dataset({"limit": 20})
    jl = JobLauncher(backend)
    jl.model.value = str(tiny_model)
    jl.iterations.value = 100_000
    jl.batch_size.value = 2
    jl.start_button.click()
    jl.wait()
    assert status_of(jl)[0] == "ok", status_of(jl)
    job_id = jl.job_id
    assert job_id is not None and not jl.cancel_button.disabled

    deadline = time.monotonic() + 90
    redraws_at_start = jl.redraws
    while jl.redraws < redraws_at_start + 2 or len(jl.train_points) < 2:
        assert time.monotonic() < deadline, f"no live curve; job: {service.get_job(job_id)}"
        jl.poll_once()
        time.sleep(0.3)
    assert jl.job["status"] == "running"
    assert "iteration" in jl.info.value and "tokens/s" in jl.info.value
    assert 0 < jl.progress.value <= jl.progress.max == 100_000
    assert f"data-redraws='{jl.redraws}'" in jl.redraw_label.value

    jl.cancel_button.click()
    jl.wait(30)
    assert service.get_job(job_id)["job"]["status"] == "cancelled"
    assert status_of(jl) == ("ok", f"job {job_id} cancelled")
    jl.poll_once()
    assert "cancelled" in jl.info.value and jl.cancel_button.disabled
    assert jl.progress.bar_style == "warning"
    jl.close()


@pytest.mark.slow
def test_launcher_picks_up_a_running_job(
    backend: LocalData, service: TrainingService, tiny_model: Path
) -> None:
    service.build_dataset({"limit": 5})
    job = service.start_job({"model": str(tiny_model), "iterations": 100_000, "batchSize": 1})[
        "job"
    ]
    jl = JobLauncher(backend)
    assert jl.job_id == job["id"]
    assert jl.watch.value == job["id"]
    assert jl.job is not None and jl.job["status"] in ("queued", "running")
    service.cancel_job(job["id"])
    jl.poll_once()
    assert jl.job["status"] == "cancelled"
    jl.close()


@pytest.mark.slow
def test_live_loop_runs_on_an_asyncio_loop(
    backend: LocalData, service: TrainingService, tiny_model: Path
) -> None:
    """On a running loop (as in a kernel) the panel polls by itself and stops on close."""
    service.build_dataset({"limit": 5})

    async def scenario() -> tuple[str | None, bool, bool]:
        jl = JobLauncher(backend)
        assert jl.poller.running
        job = await asyncio.to_thread(
            service.start_job, {"model": str(tiny_model), "iterations": 100_000, "batchSize": 1}
        )
        for _ in range(100):  # the idle poll (2 s) notices the new job
            if jl.job_id == job["job"]["id"] and jl.job is not None:
                break
            await asyncio.sleep(0.1)
        picked = jl.job_id
        await asyncio.to_thread(service.cancel_job, job["job"]["id"])
        task = jl.poller.task
        jl.close()
        await asyncio.sleep(0.1)
        return (
            picked if picked == job["job"]["id"] else None,
            task is not None and task.done(),
            jl.poller.running,
        )

    picked, task_done, still_running = asyncio.run(scenario())
    assert picked is not None
    assert task_done and not still_running


def test_runner_applies_results_on_the_loop_thread() -> None:
    import threading

    async def scenario() -> tuple[int, int, Any]:
        runner = UiRunner()
        loop_thread = threading.get_ident()
        seen: list[tuple[int, Any]] = []
        runner.submit(
            lambda: threading.get_ident(), lambda r, e: seen.append((threading.get_ident(), r))
        )
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.02)
        runner.close()
        return loop_thread, seen[0][0], seen[0][1]

    loop_thread, applied_on, worker = asyncio.run(scenario())
    assert applied_on == loop_thread != worker


# -- models ---------------------------------------------------------------------------------


def test_models_list_activate_and_errors(backend: LocalData, service: TrainingService) -> None:
    plain = register_model(service)
    benched = register_model(
        service,
        id="m-benched",
        name="benched-v2",
        benchmark={  # a BenchmarkAnswer, as run_benchmark stores it
            "modelId": "m-benched",
            "completedAt": 1_700_000_000_000,
            "scores": {"coherence": 0.6, "consistency": 0.7, "helpfulness": 0.3},
            "baseline": {"coherence": 0.5, "consistency": 0.4, "helpfulness": 0.2},
        },
    )
    mm = ModelManager(backend)
    assert plain["name"] in mm.table.value and "benched-v2" in mm.table.value
    assert "0.60" in mm.table.value and "1.234" in mm.table.value
    mm.pick.value = benched["id"]
    assert is_png(mm.chart.value)

    # activate without an import or provider model: the service's 409 message
    mm.pick.value = plain["id"]
    mm.activate_button.click()
    mm.wait()
    kind, message = status_of(mm)
    assert kind == "error" and message.startswith("activate failed:") and "import" in message
    assert not mm.activate_button.disabled

    # a non-loopback Ollama URL is refused before any connection
    mm.ollama_url.value = "http://example.com:11434"
    mm.import_button.click()
    mm.wait()
    kind, message = status_of(mm)
    assert kind == "error" and message.startswith("import failed:") and "loopback" in message
    ollama = OllamaStandIn(bases={"milady-test": "llama"}).start()  # it has the model
    mm.ollama_url.value = ollama.url

    # benchmark of a model whose dataset is unknown: the service's message
    mm.benchmark_button.click()
    mm.wait()
    kind, message = status_of(mm)
    assert kind == "error" and message.startswith("benchmark failed:"), message

    # never benchmarked (and it cannot be): the gate refuses; force activates, and it
    # shows in the table
    mm.provider_model.value = "ollama/milady-test"
    mm.activate_button.click()
    mm.wait()
    kind, message = status_of(mm)
    assert kind == "error" and "does not exist" in message and "create" in message, message
    mm.create_config.value = True  # no agent config in this lab yet: make one
    mm.activate_button.click()
    mm.wait()
    kind, message = status_of(mm)
    assert kind == "error" and "has not been benchmarked" in message, message
    mm.force.value = True
    mm.activate_button.click()
    try:
        mm.wait()
    finally:
        ollama.stop()
    # the Ollama URL of the panel is the one asked, and it lists the model: no warning
    kind, message = status_of(mm)
    assert (kind, message) == ("ok", "activated: the agent now uses ollama/milady-test"), message
    assert "/api/tags" in ollama.paths("GET")
    mm.ollama_url.value = "http://127.0.0.1:9"  # nothing answers there: a warning naming it
    mm.activate_button.click()
    mm.wait()
    kind, message = status_of(mm)
    assert kind == "ok" and message.startswith("activated: the agent now uses ollama/milady-test")
    assert "(warning: could not check that Ollama has milady-test" in message, message
    assert "127.0.0.1:9" in message, message
    assert service.get_model(plain["id"])["model"]["active"] is True
    assert "<b>✓</b>" in mm.table.value


@pytest.mark.slow
def test_models_benchmark_shows_bars(
    backend: LocalData, service: TrainingService, tiny_model: Path
) -> None:
    """A real model from a short job; Benchmark runs in a thread and draws the bars."""
    service.build_dataset({"limit": 12})
    job = service.start_job(
        {"model": str(tiny_model), "iterations": 4, "batchSize": 2, "learningRate": 0.01}
    )["job"]
    deadline = time.monotonic() + 120
    while service.get_job(job["id"])["job"]["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert service.get_job(job["id"])["job"]["status"] == "completed"
    mm = ModelManager(backend)
    assert mm.chart.layout.display == "none" and "no benchmark yet" in mm.bench_note.value
    mm.benchmark_button.click()
    assert mm.benchmark_button.disabled and status_of(mm)[0] == "busy"
    mm.wait(180)
    kind, message = status_of(mm)
    assert kind == "ok" and message.startswith("benchmark done: coherence"), message
    assert mm.chart.layout.display == "" and is_png(mm.chart.value)
    assert "(" in mm.table.value  # scores with the base model's in brackets
    assert not mm.benchmark_button.disabled
    # the replies behind the figures, per purpose, as the benchmark stored them
    stored = service.list_benchmarks(service.list_models()["models"][0]["id"]).benchmarks[0]
    purpose, rows = next(iter(stored.samples.items()))
    assert f"<summary>{html.escape(purpose)} ({len(rows)})</summary>" in mm.samples.value
    assert html.escape(rows[0]["reference"][:40]) in mm.samples.value


def test_models_empty_state(backend: LocalData) -> None:
    mm = ModelManager(backend)
    assert "No model yet" in mm.table.value
    assert mm.activate_button.disabled and mm.benchmark_button.disabled
    mm.guard("activate")(mm.activate)()
    assert status_of(mm)[0] == "error" and "choose a model first" in status_of(mm)[1]


# -- dashboard ------------------------------------------------------------------------------


def test_dashboard_header_names_the_home_and_the_source(backend: LocalData) -> None:
    """The banner says where the lab keeps its state and what it reads, and how it found it."""
    from milady_lab.widgets._panel import esc

    st = backend.status()
    dash = Dashboard(backend=backend)
    try:
        text = dash.banner.value
        assert st["home"] == str(backend.service.settings.home)
        assert f"home: {esc(st['home'])}" in text
        assert f"trajectories: {esc(st['trajectorySource'])}" in text
        assert st["trajectorySourceFoundBy"] and esc(st["trajectorySourceFoundBy"]) in text
    finally:
        dash.close()


def test_dashboard_tabs_share_one_backend(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    dash = Dashboard()
    try:
        assert dash.tabs.titles == ("Trajectories", "Datasets", "Training", "Models")
        assert all(p.backend is dash.backend for p in dash.panels)
        assert dash.backend.mode == "in-process"
        assert "in-process" in dash.banner.value
        assert dash.explorer.frame.height == DEMO_COUNT
        # a build in the builder tab appears in the launcher's dataset list
        dash.builder.limit.value = 3
        dash.builder.build_button.click()
        dash.wait()
        dash.wait()
        built = dash.builder.last_built
        assert built is not None and dash.launcher.dataset.value == built["id"]
        # the explorer's filters become the builder's with one click
        dash.explorer.source_filter.value = "chat"
        dash.explorer.search.value = "the"
        dash.use_filters_button.click()
        dash.wait()
        assert dash.tabs.selected_index == 1
        assert dash.builder.body() == {
            "minLlmCallsPerTrajectory": 1,
            "limit": 3,
            "source": "chat",
            "search": "the",
            "privacy": {"redact": True, "anonymizeHandles": False},  # the checkboxes' defaults
        }
        # the builder counts what the explorer shows (min calls 1 = any usable call)
        assert dash.builder.last_preview is not None
        assert dash.builder.last_preview["trajectoryCount"] <= dash.explorer.frame.height
    finally:
        dash.close()
    assert dash.runner._closed


def test_builder_privacy_checkboxes_and_redaction_counts(settings, tmp_path: Path) -> None:
    """Redaction is ticked by default, the preview shows what it would replace per kind,
    and unticking it (or ticking handles) is what the build then records."""
    from privacy.plant import planted_db

    db, expected, secrets = planted_db(tmp_path / "planted.sqlite")
    svc = TrainingService(settings.with_overrides(trajectories=db))
    try:
        b = DatasetBuilder(LocalData(svc))
        b.wait()
        assert b.privacy["redact"].value is True and b.privacy["anonymizeHandles"].value is False
        assert b.body()["privacy"] == {"redact": True, "anonymizeHandles": False}
        assert b.last_preview["redactions"] == dict(expected)
        label = b.preview_label.value
        assert f"openai_key {expected['openai_key']}" in label and "email" in label
        assert not [s for s in secrets if s in label]
        b.privacy["redact"].value = False
        b.privacy["anonymizeHandles"].value = True
        b.wait()
        assert "redaction off" in b.preview_label.value
        b.build_button.click()
        b.wait()
        b.wait()
        assert b.last_built["options"]["privacy"] == {"redact": False, "anonymizeHandles": True}
    finally:
        stop_jobs(svc)
        svc.close()


def test_auto_improve_policy_from_the_model_manager(
    backend: LocalData, service: TrainingService
) -> None:
    mm = ModelManager(backend)
    try:
        panel = mm.auto
        assert panel.policy_body()["enabled"] is False  # off by default, as stored
        panel.enabled.value = True
        panel.min_new.value = DEMO_COUNT + 1
        panel.cooldown.value = 0.5
        panel.activate.value = "if-better"
        panel.backend_pick.value = "cpu"
        panel.save_button.click()
        mm.wait()
        assert status_of(panel)[0] == "ok", panel.last_status
        policy = service.get_auto()["policy"]
        assert (policy["enabled"], policy["minNewTrajectories"], policy["cooldownHours"]) == (
            True,
            DEMO_COUNT + 1,
            0.5,
        )
        assert (policy["activate"], policy["backend"], policy["iterations"]) == (
            "if-better",
            "cpu",
            None,
        )

        # A round with too few new trajectories: its reason shows in the panel.
        service.auto_run_once(timeout_s=30)
        mm.refresh()
        shown = html.unescape(panel.decisions.value)
        assert "auto_skipped" in shown and f"< {DEMO_COUNT + 1}" in shown, shown
        assert "auto_skipped" in panel.state_line.value

        # A value the service refuses: its message, and the stored policy unchanged.
        panel.model.value = "no-such-model-anywhere"
        panel.save_button.click()
        mm.wait()
        kind, message = status_of(panel)
        assert kind == "error" and "no-such-model-anywhere" in message, message
        assert service.get_auto()["policy"]["model"] is None
    finally:
        mm.close()


def test_launcher_training_controls_and_best_marker(
    backend: LocalData, service: TrainingService
) -> None:
    """The controls of issue 15 in the launcher: sensible defaults, the body they make
    (accepted by the service's checks), and the best iteration on the live curve."""
    from milady_lab.training.defaults import SIZE_TABLE
    from milady_lab.training.options import JobOptions

    ds = service.build_dataset({"limit": 5})["dataset"]
    jl = JobLauncher(backend)
    c = jl.controls
    assert (c.max_seq_length.value, c.gradient_accumulation.value, c.lr_schedule.value) == (
        SIZE_TABLE[0].max_seq_length,  # the built-in model's row
        1,
        "cosine",
    )
    assert c.target_modules.value == "attention" and c.save_best.value is True
    assert c.epochs.layout.display == "none" and c.advanced.selected_index is None
    body = jl.body()
    assert body["iterations"] == 100 and "epochs" not in body
    assert "earlyStoppingPatience" not in body and "warmupSteps" not in body  # auto
    # A bigger base model brings its row of the size table.
    jl.model.value = "llama-3.1-8b"
    large = SIZE_TABLE[-1]
    assert (jl.learning_rate.value, jl.batch_size.value, c.lora_rank.value) == (
        large.learning_rate,
        large.batch_size,
        large.lora_rank,
    )
    jl.model.value = ""
    c.length_by.value = "epochs"
    assert c.epochs.layout.display == ""
    c.epochs.value = 2
    c.patience.value = 3
    c.warmup_steps.value = "4"
    c.target_modules.value = "q_proj,v_proj"
    body = jl.body()
    assert body["epochs"] == 2.0 and "iterations" not in body
    assert body["earlyStoppingPatience"] == 3 and body["warmupSteps"] == "4"
    opts = JobOptions.from_body(body, service.store)
    assert opts.dataset_id == ds["id"] and opts.epochs == 2.0
    assert opts.iterations == -(-2 * ds["trainCount"] // 4)  # ceil(epochs × examples / batch)
    assert opts.target_modules == ("q_proj", "v_proj") and opts.warmup_steps == 4

    # The live curve marks the best iteration, and the info line names it.
    jl.job_id = "job-x"
    jl.train_points = [(1.0, 3.0), (2.0, 2.5), (3.0, 2.2), (4.0, 2.1)]
    jl.val_points = [(2.0, 2.6), (4.0, 2.8)]
    jl.job = Job(
        id="job-x", status="completed", dataset_id=None, backend="cpu", model="tiny",
        created_at=1, completed_at=2, progress=1.0, current_iteration=4, total_iterations=4,
        loss=2.1, model_id=None,
    )  # fmt: skip
    jl._draw(force=True)
    without = jl.curve.value
    jl.job = msgspec.structs.replace(
        jl.job, best_iteration=2, best_val_loss=2.6, stopped_early=True, stop_reason="x"
    )
    jl._render_job()
    jl._draw(force=True)
    assert jl.curve.value != without
    assert "best val 2.6" in jl.info.value and "@ 2" in jl.info.value
    assert "stopped early" in jl.info.value
    jl.close()


def test_builder_shapes_a_dataset_by_purpose_and_reward(
    backend: LocalData, service: TrainingService
) -> None:
    b = DatasetBuilder(backend)
    b.wait()
    assert set(b.shape) == {"purpose", "model", "minReward", "rewardField", "topFraction"}
    assert "purpose" not in b.body() and "rewardField" not in b.body()  # empty: not sent
    b.shape["purpose"].value = "response, action_selection"
    b.shape["minReward"].value = "0.3"
    b.shape["topFraction"].value = 0.5
    b.wait()
    shaped = {"purpose": ["response", "action_selection"], "minReward": "0.3",
              "topFraction": 0.5, "rewardField": "totalReward"}  # fmt: skip
    assert b.body().items() >= shaped.items()
    assert b.last_preview == preview(service, dict(b.body()))
    everything = service.preview_dataset({})["trajectoryCount"]
    assert 0 < b.last_preview["trajectoryCount"] < everything
    b.build_button.click()
    b.wait()
    b.wait()
    assert b.last_built is not None
    assert b.last_built["options"]["minReward"] == 0.3
    assert b.last_built["options"]["purpose"] == ["response", "action_selection"]


def test_explorer_groups_and_plots_by_purpose_and_reward(
    backend: LocalData, service: TrainingService
) -> None:
    """Group by purpose: the agent's calls per purpose; by reward: trajectories per reward
    band and a reward histogram; the figures agree with the service's own frames."""
    ex = TrajectoryExplorer(backend)
    calls = service.llm_calls_frame().collect()
    summaries = service.trajectories_frame().collect()
    by_source = ex.groups_table.value
    assert "trajectories" in by_source and "LLM calls" in by_source

    ex.group_by.value = "purpose"
    assert is_png(ex.tokens_chart.value)
    expected = calls.group_by(pl.coalesce("purpose", "actionType", pl.lit("?"))).len()
    for purpose, n in expected.iter_rows():
        assert f"<td>{purpose}</td>" in ex.groups_table.value
        assert f">{n}<" in ex.groups_table.value.replace(",", "")
    # The groups follow the filters.
    source = summaries.get_column("source").mode().item(0)
    ex.source_filter.value = source
    kept = set(summaries.filter(pl.col("source") == source)["id"].to_list())
    assert set(ex.calls()["trajectoryId"].to_list()) <= kept
    ex.source_filter.value = "(all)"

    ex.group_by.value = "reward"
    rewarded = summaries.filter(pl.col("totalReward").fill_null(0) != 0)
    assert 0 < rewarded.height < summaries.height  # the demo judges some trajectories
    html = ex.groups_table.value
    assert "no reward" in html and "mean reward" in html
    none = summaries.height - rewarded.height
    assert f'<td>no reward</td><td class="num">{none:,}</td>' in html
    assert is_png(ex.calls_chart.value)
    ex.close()
