"""The dashboard in a real JupyterLab, driven in Debian's Chromium by Playwright.

Starts JupyterLab (with the milady-lab extension and ipywidgets' lab extension) on a
free loopback port with a token, opens a notebook that shows ``Dashboard()``, runs it,
starts a job on a tiny Llama, watches the loss curve redraw, runs a cell while the job
trains, cancels the job, and leaves screenshots in ``tests/artifacts/``.

Issue 25's visible items are checked on the way: no label, button or table column of a
panel is cut off ("iteratio…"), the launcher shows the followed job's options and refuses
``-5`` iterations beside the field. ``MILADY_LAB_DOC_IMAGES=1 make test-browser`` also
writes each panel's screenshot, small (a 256-colour PNG), to ``docs/img/`` for the
documentation; a plain run leaves the tree clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from widgets.conftest import DEMO_SEED, stop_jobs
from widgets.jupyter_proc import JupyterProcess, run_jupyter

from milady_lab.config import Settings
from milady_lab.service import TrainingService

pytestmark = pytest.mark.browser

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
DOC_IMAGES = ROOT / "docs" / "img"
#: The documentation's screenshots stay small.
DOC_IMAGE_LIMIT = 200_000
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FINAL = ("completed", "failed", "cancelled")
SHOTS = (
    "explorer.png",
    "datasets.png",
    "refused.png",
    "running.png",
    "cancelled.png",
    "models.png",
)
TRAIN_ITERATIONS = 1000  # long enough to be cancelled while running
LEARNING_RATE = "0.01"  # a tiny random model: let the curve visibly fall


def ensure_chromium() -> Path:
    """Debian's chromium, installed by scripts/system-deps.sh when missing; never downloaded."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "system-deps.sh")], check=True)
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing and scripts/system-deps.sh could not install it")
    return CHROMIUM


@pytest.fixture
def lab(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[JupyterProcess, Settings]]:
    from milady_lab.demo import write_demo_db

    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(HERE / "dashboard.ipynb", root / "dashboard.ipynb")
    settings = Settings.from_env(
        home=tmp_path / "home",
        trajectories=write_demo_db(
            tmp_path / "trajectories.sqlite", count=150, seed=DEMO_SEED, shape="regular"
        ),
        agent_config=tmp_path / "milady.json",
        cache=tmp_path / "cache",
    )
    svc = TrainingService(settings)
    svc.build_dataset({"limit": 24, "minLlmCallsPerTrajectory": 1})
    # A short real job, so the Models tab lists a real model; it trains while Lab starts.
    first = svc.start_job(
        {"model": str(tiny_model), "iterations": 8, "batchSize": 2, "learningRate": 0.01}
    )["job"]
    env = {
        **settings.as_env(),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
    }
    try:
        with run_jupyter("lab", root, tmp_path / "jupyter", env, timeout=180) as jp:
            done = _wait(
                lambda: (j := svc.get_job(first["id"])["job"])["status"] in FINAL and j,
                180,
                "the first job to finish",
            )
            assert done["status"] == "completed", done
            # Scores as a benchmark stores them: the Models tab shows its column and bars.
            model_id = svc.store.model_id_for_job(first["id"])
            svc.store.update_model(
                model_id,
                benchmark={
                    "modelId": model_id,
                    "completedAt": done["completedAt"],
                    "scores": {"coherence": 0.61, "consistency": 0.72, "helpfulness": 0.35},
                    "baseline": {"coherence": 0.52, "consistency": 0.44, "helpfulness": 0.21},
                },
            )
            yield jp, settings
    finally:
        stop_jobs(svc)
        svc.close()


def svc_jobs(settings: Settings) -> list[dict[str, Any]]:
    """The jobs the service has recorded (read from the state home)."""
    svc = TrainingService(settings, reconcile=False)
    try:
        return svc.list_jobs()["jobs"]
    finally:
        svc.close()


def _accept_kernel_dialog(page) -> bool:
    """JupyterLab may ask which kernel to use: take the notebook's own (python3)."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        button = dialog.locator("button", has_text=re.compile(r"^Select$"))
        if button.count():
            button.first.click()
            return True
    return False


def _kernel_ready(page) -> bool:
    """True once a kernel is connected and idle, with no dialog in the way."""
    if _accept_kernel_dialog(page):
        return False
    status = page.locator(".jp-Notebook-ExecutionIndicator")
    idle = status.count() > 0 and status.first.get_attribute("data-status") == "idle"
    named = page.locator(".jp-KernelName", has_text="Python 3").count() > 0
    return idle and named and page.locator(".jp-Dialog").count() == 0


def _visible(page, locator) -> bool:
    _accept_kernel_dialog(page)
    return locator.count() > 0 and locator.first.is_visible()


def _redraws(page) -> int:
    loc = page.locator(".milady-redraws")
    if not loc.count():
        return 0
    return int(loc.first.get_attribute("data-redraws") or 0)


def _points(page) -> int:
    loc = page.locator(".milady-redraws")
    return int(loc.first.get_attribute("data-points") or 0) if loc.count() else 0


#: What a user cannot read in full: text cut with an ellipsis (widget descriptions,
#: buttons, toggle buttons, checkbox labels, table cells) or running past the right edge of
#: a box that clips it (a table column beyond the panel, or scrolled out of its box).
_CUT_OFF = """(root) => {
  const cut = [];
  const selector = '.widget-label, .widget-label-basic, button, .widget-toggle-button, '
    + 'label, th, td, .lm-TabBar-tabLabel';
  const clipRight = (el) => {
    let right = Infinity;
    for (let a = el.parentElement; a; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== 'visible') {
        right = Math.min(right, a.getBoundingClientRect().right);
      }
    }
    return right;
  };
  for (const el of root.querySelectorAll(selector)) {
    if (!el.offsetParent || el.clientWidth === 0) continue;  // hidden
    const text = `${el.tagName.toLowerCase()}.${el.className}: "`
      + `${el.textContent.trim().slice(0, 50)}"`;
    if (el.scrollWidth > el.clientWidth + 1) {
      cut.push(`${text} cut: ${el.scrollWidth} > ${el.clientWidth}`);
    } else if (el.getBoundingClientRect().right > clipRight(el) + 1) {
      cut.push(`${text} past the edge: ${el.getBoundingClientRect().right} > ${clipRight(el)}`);
    }
  }
  return cut;
}"""


def _cut_off(panel) -> list[str]:
    """What is cut off in a panel (empty when every label and column shows in full)."""
    return panel.evaluate(_CUT_OFF)


def _shoot(element, name: str) -> None:
    """A screenshot in tests/artifacts/; with ``MILADY_LAB_DOC_IMAGES=1`` also a 256-colour
    copy in docs/img/ (a plain test run leaves the tree as it found it)."""
    from PIL import Image

    path = ARTIFACTS / name
    element.screenshot(path=str(path))
    if os.environ.get("MILADY_LAB_DOC_IMAGES") != "1":
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256)
        small.save(DOC_IMAGES / name, optimize=True)


def _wait(pred, timeout: float, what: str, page=None, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            if page is not None:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@pytest.mark.timeout(420)
def test_dashboard_in_jupyterlab(lab: tuple[JupyterProcess, Settings], tiny_model: Path) -> None:
    from playwright.sync_api import sync_playwright

    jp, settings = lab
    ensure_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in (*SHOTS, "failure.png"):
        (ARTIFACTS / old).unlink(missing_ok=True)
    profile = lab[1].home.parent / "chromium-profile"

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1900},  # a laptop: the default notebook width
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        try:
            page.set_default_timeout(60_000)
            page.goto(f"{jp.url}/lab/tree/dashboard.ipynb?reset&token={jp.token}")
            page.locator(".jp-NotebookPanel").first.wait_for(state="visible", timeout=120_000)
            _wait(lambda: _kernel_ready(page), 120, "the kernel to be idle", page)
            time.sleep(1.0)
            _wait(lambda: _kernel_ready(page), 60, "the kernel to stay idle", page)

            # Run → Run All Cells, as a user would
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            dashboard = page.locator(".milady-dashboard")
            _wait(lambda: _visible(page, dashboard), 120, "the dashboard to render", page)
            explorer = page.locator(".milady-panel").first
            rows = explorer.locator(".milady-rows select")
            rows.wait_for(state="visible")
            _wait(lambda: rows.locator("option").count() > 0, 60, "trajectory rows", page)
            rows.select_option(index=1)
            page.locator(".milady-detail .milady-call").first.wait_for(state="visible")
            _wait(lambda: explorer.locator("img").count() >= 2, 30, "explorer charts", page)
            assert _cut_off(explorer) == []
            _shoot(dashboard, "explorer.png")

            # Datasets tab: a source filter and a limit, their preview, Build
            page.locator(".milady-dashboard .lm-TabBar-tab", has_text="Datasets").click()
            builder = page.locator(
                ".milady-panel", has=page.locator("button", has_text="Build dataset")
            )
            builder.wait_for(state="visible")
            source = builder.locator(".widget-dropdown", has_text="Source").locator("select")
            _wait(lambda: source.locator("option", has_text="chat").count() == 1, 30, "sources")
            source.select_option("chat")
            limit = builder.locator(".widget-inline-hbox", has_text="Limit").locator("input")
            limit.fill("20")
            limit.press("Enter")
            builder.locator(".widget-html", has_text="20 trajectories").wait_for()
            builder.locator("button", has_text="Build dataset").click()
            builder.locator(".milady-status[data-kind='ok']", has_text="built").wait_for()
            _wait(
                lambda: builder.locator("table.milady-table tbody tr").count() == 2,
                30,
                "two datasets listed",
                page,
            )
            time.sleep(1.5)  # the histogram of the new dataset
            assert _cut_off(builder) == []
            _shoot(dashboard, "datasets.png")

            # Training tab: tiny model, many iterations, Start
            page.locator(".milady-dashboard .lm-TabBar-tab", has_text="Training").click()
            launcher = page.locator(".milady-panel", has=page.locator(".milady-loss-curve"))
            launcher.wait_for(state="visible")
            model_input = launcher.locator(".widget-inline-hbox", has_text="Base model").locator(
                "input"
            )
            iters = launcher.locator(".widget-inline-hbox", has_text="Iterations").locator("input")
            batch = launcher.locator(".widget-inline-hbox", has_text="Batch size").locator("input")
            lr = launcher.locator(".widget-inline-hbox", has_text="Learning rate").locator("input")
            # the form shows the followed job's options (the first job's), not the defaults
            _wait(lambda: iters.input_value() == "8", 30, "the first job's iterations", page)
            assert (batch.input_value(), float(lr.input_value())) == ("2", 0.01)
            assert Path(model_input.input_value()).resolve() == tiny_model.resolve()
            # the advanced options too show every label in full
            advanced = launcher.locator(".jupyter-widget-Collapse-header", has_text="Advanced")
            advanced.click()
            launcher.locator(".widget-inline-hbox", has_text="Grad. accumulation").wait_for()
            assert _cut_off(launcher) == []
            # -5 iterations are refused beside the field, not clamped; no job starts
            iters.fill("-5")
            iters.press("Enter")
            time.sleep(0.5)
            launcher.locator("button", has_text="Start").click()
            note = launcher.locator(".milady-field-error", has_text="must be ≥ 1")
            note.wait_for(state="visible")
            launcher.locator(".milady-status[data-kind='error']", has_text="not started").wait_for()
            assert iters.input_value() == "-5"
            assert _cut_off(launcher) == []
            _shoot(dashboard, "refused.png")
            assert len(svc_jobs(settings)) == 1

            model_input.fill(str(tiny_model))
            model_input.press("Enter")
            iters.fill(str(TRAIN_ITERATIONS))
            iters.press("Enter")
            note.wait_for(state="hidden")
            advanced.click()  # folded again: the loss curve in view
            batch.fill("2")
            batch.press("Enter")
            lr.fill(LEARNING_RATE)
            lr.press("Enter")
            time.sleep(0.5)  # let the values sync to the kernel
            before = _redraws(page)
            launcher.locator("button", has_text="Start").click()

            status = launcher.locator(".milady-job-status")
            _wait(
                lambda: status.count() and status.first.get_attribute("data-status") == "running",
                120,
                "the job to run",
                page,
            )
            curve = launcher.locator(".milady-loss-curve")
            srcs = set()

            def redrawn(n: int) -> bool:
                src = curve.get_attribute("src")
                if src:
                    srcs.add(src)
                return _redraws(page) >= before + n and len(srcs) >= n

            _wait(lambda: redrawn(2), 120, "the loss curve to redraw twice", page)

            # a cell runs while the job trains: the kernel is free
            cell = page.locator(".jp-Cell.jp-CodeCell").nth(1)
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            out = cell.locator(".jp-OutputArea-output", has_text="kernel free")
            out.wait_for(state="visible", timeout=60_000)
            seen_in_cell = int(re.findall(r"so far: (\d+)", out.inner_text())[0])
            assert seen_in_cell >= before + 2
            # ... and the plot keeps updating after it
            _wait(lambda: _redraws(page) > seen_in_cell, 60, "more redraws after the cell", page)
            # enough points for a readable screenshot
            _wait(lambda: _points(page) >= 10, 90, "ten loss points", page)
            assert status.first.get_attribute("data-status") == "running"
            time.sleep(0.6)  # the throttled redraw of the last points
            assert _cut_off(launcher) == []
            _shoot(dashboard, "running.png")

            launcher.locator("button", has_text="Cancel").click()
            _wait(
                lambda: status.first.get_attribute("data-status") == "cancelled",
                60,
                "the job to read cancelled",
                page,
            )
            launcher.locator(".milady-status[data-kind='ok']", has_text="cancelled").wait_for()
            time.sleep(1.0)  # the final curve redraw
            _shoot(dashboard, "cancelled.png")

            # Models tab: the model of the first job; activate it for the agent
            page.locator(".milady-dashboard .lm-TabBar-tab", has_text="Models").click()
            models = page.locator(".milady-panel", has=page.locator("button", has_text="Activate"))
            models.wait_for(state="visible")
            models.locator("table.milady-table tbody tr").first.wait_for()
            # the newest (only) model is chosen, its benchmark drawn
            models.locator("img.widget-image >> visible=true").first.wait_for()
            provider = models.locator(".widget-inline-hbox", has_text="Provider model").locator(
                "input"
            )
            provider.fill("ollama/milady-demo")
            provider.press("Enter")
            time.sleep(0.5)
            # The demo model is not benchmarked here: skip the gate, as a user would.
            models.locator(".widget-checkbox", has_text="force").locator("input").check()
            # This lab has no agent config yet: let the activation create one.
            models.locator(".widget-checkbox", has_text="create the agent config").locator(
                "input"
            ).check()
            models.locator("button", has_text="Activate").click()
            models.locator(".milady-status[data-kind='ok']", has_text="activated").wait_for()
            time.sleep(0.5)
            assert _cut_off(models) == []
            _shoot(dashboard, "models.png")
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            print("--- browser console ---", *console[-40:], sep="\n")
            print("--- jupyter log ---", jp.log_tail(80), sep="\n")
            raise
        finally:
            browser.close()

    svc = TrainingService(settings, reconcile=False)
    try:
        jobs = svc.list_jobs()["jobs"]
        assert sorted(j["status"] for j in jobs) == ["cancelled", "completed"]
        assert [m["active"] for m in svc.list_models()["models"]] == [True]
    finally:
        svc.close()
    config = json.loads(settings.agent_config.read_text())
    assert config["agents"]["defaults"]["model"]["primary"] == "ollama/milady-demo"
    for name in SHOTS:
        assert (ARTIFACTS / name).stat().st_size > 10_000
        assert 10_000 < (DOC_IMAGES / name).stat().st_size < DOC_IMAGE_LIMIT
    assert os.environ.get("MILADY_LAB_HOME") != str(settings.home)
