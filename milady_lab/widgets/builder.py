"""DatasetBuilder: choose build options, preview what they give, build, inspect datasets."""

from __future__ import annotations

import html
import math
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..api.schema import Dataset, DatasetPreview
from . import plots
from ._backend import read_dataset_texts
from ._bodies import BuildBody
from ._fields import STYLE, TRAJECTORY_FILTERS, Change, count, trajectory_filters, wrap_row
from ._panel import Panel, fmt_ms, header, html_table, local_zone
from ._shape import shape_body, shape_filters

#: Optional filter fields, offered only when the builder accepts them (BuildOptions.FIELDS).
FILTER_FIELDS = TRAJECTORY_FILTERS
#: The menu entry for "no filter" on source and status.
ANY = "(any)"


def privacy_checkboxes(fields: tuple[str, ...]) -> dict[str, w.Checkbox]:
    """The privacy options as checkboxes (when the builder takes them): redaction ticked,
    handles not, the REST defaults."""
    if "privacy" not in fields:
        return {}
    return {
        "redact": w.Checkbox(
            value=True,
            description="Redact secrets",
            tooltip="API keys, tokens, passwords, private keys, seed phrases, emails, "
            "phone numbers and IP addresses become placeholders such as <EMAIL>",
            indent=False,
            layout=w.Layout(width="150px"),
        ),
        "anonymizeHandles": w.Checkbox(
            value=False,
            description="Anonymize handles",
            tooltip="the people the agent talks to become user_<id> pseudonyms",
            indent=False,
            layout=w.Layout(width="170px"),
        ),
    }


def redaction_summary(body: BuildBody, result: DatasetPreview) -> str:
    """The preview's redaction counts per kind, as HTML (the kinds are rule names)."""
    if body.get("privacy", {}).get("redact") is False:
        return " · <b>redaction off</b>: secrets stay as recorded"
    counts = result.redactions
    if counts is None:
        return ""
    if not counts:
        return " · nothing to redact"
    parts = ", ".join(f"{html.escape(str(k))} {int(n):,}" for k, n in counts.items())
    return f" · redacted: {parts}"


def find_tokenizer(cache: Path | None) -> Path | None:
    """A ``tokenizer.json`` of a base model already converted into the cache, if any."""
    if cache is None or not Path(cache).is_dir():
        return None
    for pattern in ("models/*/tokenizer.json", "*/tokenizer.json", "**/tokenizer.json"):
        for found in sorted(Path(cache).glob(pattern)):
            return found
    return None


def token_lengths(texts: list[str], tokenizer_file: Path | None = None) -> tuple[list[int], str]:
    """Token count per text with the base model's tokenizer, else a chars/4 estimate."""
    if tokenizer_file is not None:
        try:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer_file))
            return [len(e.ids) for e in tok.encode_batch(texts)], "tokens"
        except Exception:  # a broken cache must not break the panel; fall back
            pass
    return [math.ceil(len(t) / 4) for t in texts], "≈ tokens (chars / 4)"


class DatasetBuilder(Panel):
    """Build options with a live preview, a Build button with progress, and the datasets."""

    title = "Datasets"

    def __init__(self, backend: Any = None, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.on_built: list[Callable[[Dataset], None]] = []
        self.datasets: list[Dataset] = []
        self.last_preview: DatasetPreview | None = None
        self.last_built: Dataset | None = None
        self._preview_busy = False
        self._preview_stale = False
        self._progress: tuple[int, int] = (0, 0)
        self._progress_posted = 0.0
        self._progress_lock = threading.Lock()
        self.fields = self.backend.build_fields()
        self.can_preview = self.backend.can_preview

        self._option_widgets()
        self._result_widgets()
        self._lay_out()
        self._wire()
        self.guard("load datasets")(self.refresh)()
        self.guard("preview")(self.preview)()
        self.guard("filters")(self.load_filter_values)()

    def _option_widgets(self) -> None:
        """The explorer's filters (those the builder behind the backend takes), the
        limits and the privacy switches."""
        self.limit = count("Limit (0 = all)", 0, 0, 10**9, "190px")
        self.min_calls = count("Min LLM calls / trajectory", 1, 1, 10**6, "230px")
        self.filters: dict[str, w.Widget] = trajectory_filters(self.fields, ANY)
        self.privacy = privacy_checkboxes(self.fields)
        self.shape = shape_filters(self.fields)

    def _result_widgets(self) -> None:
        """Buttons, the preview line, the build's progress and the built datasets."""
        self.preview_button = w.Button(description="Preview", icon="eye")
        self.build_button = w.Button(
            description="Build dataset", icon="cogs", button_style="primary"
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.preview_label = w.HTML()
        self.progress = w.IntProgress(
            value=0,
            min=0,
            max=1,
            description="Build",
            layout=w.Layout(width="420px", visibility="hidden"),
        )
        self.table = w.HTML(layout=w.Layout(width="100%"))
        self.dataset_pick = w.Dropdown(
            description="Histogram of", options=[], style=STYLE, layout=w.Layout(width="420px")
        )
        self.histogram = w.Image(format="png", layout=w.Layout(width="460px"))

    def _lay_out(self) -> None:
        """The explorer's layout: the filters on one row, search and the limit below."""
        f = self.filters
        first = [f[k] for k in ("source", "status") if k in f] + [self.min_calls]
        first += [f[k] for k in ("startDate", "endDate") if k in f]
        second = [f["search"]] if "search" in f else []
        options_box = w.VBox(
            [
                wrap_row(first),
                wrap_row([*second, self.limit, *self.privacy.values()]),
                wrap_row(list(self.shape.values())),
            ]
        )
        buttons = w.HBox([self.preview_button, self.build_button, self.refresh_button])
        self.children = [
            header(self.title),
            options_box,
            buttons,
            self.preview_label,
            self.progress,
            self.status_line,
            w.HTML("<h4 style='margin:8px 0 2px 0'>Built datasets</h4>"),
            self.table,
            self.dataset_pick,
            self.histogram,
        ]

    def _wire(self) -> None:
        """Any option change refreshes the preview; every callback goes through ``guard``."""
        self._suspend = False
        options = (*self.filters.values(), *self.privacy.values(), *self.shape.values())
        for widget in (self.limit, self.min_calls, *options):
            widget.observe(self.guard("preview")(self._options_changed), names="value")
        self.preview_button.on_click(self.guard("preview")(lambda _b: self.preview()))
        self.build_button.on_click(self.guard("build")(lambda _b: self.build()))
        self.refresh_button.on_click(self.guard("refresh")(lambda _b: self._refresh_all()))
        self.dataset_pick.observe(
            self.guard("histogram")(lambda _c: self.show_histogram()), names="value"
        )

    # -- options ------------------------------------------------------------------------
    def body(self) -> BuildBody:
        """The build request the widgets describe."""
        body: BuildBody = {"minLlmCallsPerTrajectory": int(self.min_calls.value)}
        if self.limit.value:
            body["limit"] = int(self.limit.value)
        for key, widget in self.filters.items():
            value = widget.value
            if isinstance(value, str):
                value = value.strip()
            if value in (None, "", ANY):
                continue
            body[key] = value.isoformat() if hasattr(value, "isoformat") else value
        if "startDate" in body or "endDate" in body:
            body["timeZone"] = local_zone().key  # the date pickers' days are the user's
        if self.privacy:
            body["privacy"] = {key: bool(box.value) for key, box in self.privacy.items()}
        return body | shape_body(self.shape)

    def set_filters(self, body: BuildBody) -> None:
        """Take filters from a build body (e.g. the explorer's), then preview once."""
        self._suspend = True
        try:
            for key, widget in self.filters.items():
                value = body.get(key)
                if isinstance(widget, w.Dropdown):
                    if value is not None and value not in widget.options:
                        widget.options = [*widget.options, value]
                    widget.value = ANY if value is None else value
                elif isinstance(widget, w.DatePicker):
                    widget.value = date.fromisoformat(value) if isinstance(value, str) else value
                else:
                    widget.value = value or ""
            if "minLlmCallsPerTrajectory" in body:
                self.min_calls.value = max(1, int(body["minLlmCallsPerTrajectory"] or 1))
        finally:
            self._suspend = False
        self.preview()

    def load_filter_values(self) -> None:
        """Fill the source and status menus from the trajectories, in the background."""
        menus = {k: self.filters[k] for k in ("source", "status") if k in self.filters}
        if not menus:
            return

        def done(values: dict[str, list[str]]) -> None:
            self._suspend = True
            try:
                for key, menu in menus.items():
                    current = menu.value
                    menu.options = [ANY, *values.get(key, [])]
                    menu.value = current if current in menu.options else ANY
            finally:
                self._suspend = False

        self.in_background("filters", self.backend.filter_values, done)

    def _options_changed(self, _change: Change) -> None:
        if not self._suspend:
            self.preview()

    # -- preview ------------------------------------------------------------------------
    def preview(self) -> None:
        """Count trajectories and examples for the current options, in the background.

        One count runs at a time (each reads every trajectory): options changed while it
        runs are counted once when it ends, with their latest values.
        """
        if not self.can_preview:
            self.preview_label.value = (
                "<b>Preview:</b> <i>not offered by this server; Build reports the counts.</i>"
            )
            return
        self.preview_label.value = "<i>counting…</i>"
        if self._preview_busy:
            self._preview_stale = True
            return
        self._preview_busy = True
        body = self.body()

        def done(result: DatasetPreview) -> None:
            if self._preview_ended():
                return
            self.last_preview = result
            self.preview_label.value = (
                f"<b>Preview:</b> {result.trajectory_count:,} trajectories → "
                f"{result.example_count:,} examples" + redaction_summary(body, result)
            )

        self.in_background("preview", lambda: self.backend.preview_dataset(body), done)

    def _preview_ended(self) -> bool:
        """The count in flight is over; True when newer options started another one."""
        self._preview_busy = False
        if self._preview_stale:
            self._preview_stale = False
            self.preview()
            return True
        return False

    def after_error(self, action: str) -> None:
        if action == "preview" and not self._preview_ended():
            self.preview_label.value = "<b>Preview:</b> —"
        if action == "build":
            self.build_button.disabled = False
            self.progress.bar_style = "danger"

    # -- build --------------------------------------------------------------------------
    def build(self) -> None:
        """Build a dataset with the current options without blocking the kernel."""
        body = self.body()
        with self.hold_sync():
            self.build_button.disabled = True
            self.progress.layout.visibility = "visible"
            self.progress.bar_style = "info"
            self.progress.value = 0
            self.progress.max = 1
        self._progress = (0, 0)

        def report(done: int, total: int) -> None:  # called in the worker thread
            with self._progress_lock:
                self._progress = (done, total)
                now = time.monotonic()
                if now - self._progress_posted < 0.2 and done < total:
                    return
                self._progress_posted = now
            self.runner.post(self._show_progress)

        def finished(rec: Dataset) -> None:
            self.last_built = rec
            with self.hold_sync():
                self.build_button.disabled = False
                self.progress.max = max(1, self.progress.max)
                self.progress.value = self.progress.max
                self.progress.bar_style = "success"
            built = (
                f"built {rec.id}: {rec.trajectory_count:,} trajectories, "
                f"{rec.example_count:,} examples"
            )
            if rec.warnings:  # most examples too long for training's default length
                self.set_status(f"{built}. {' '.join(rec.warnings)}", "warn")
            else:
                self.set_status(built, "ok")
            self.refresh(select=rec.id)
            for callback in list(self.on_built):
                callback(rec)

        self.in_background(
            "build",
            lambda: self.backend.build_dataset(body, progress=report),
            finished,
            busy="building dataset…",
        )

    def _show_progress(self) -> None:
        done, total = self._progress
        with self.hold_sync():
            self.progress.max = max(1, total)
            self.progress.value = min(done, self.progress.max)

    # -- datasets -----------------------------------------------------------------------
    def _refresh_all(self) -> None:
        self.refresh()
        self.load_filter_values()

    def refresh(self, select: str | None = None) -> None:
        """List the built datasets again."""
        self.datasets = self.backend.list_datasets()
        rows = [
            [
                d.id,
                fmt_ms(d.created_at),
                d.trajectory_count,
                d.example_count,
                "—" if d.train_count is None else d.train_count,
                "—" if d.valid_count is None else d.valid_count,
            ]
            for d in self.datasets
        ]
        self.table.value = (
            html_table(
                ["id", "created", "trajectories", "examples", "train", "valid"],
                rows,
                numeric={2, 3, 4, 5},
            )
            if rows
            else "<i>No dataset built yet: choose options and press Build.</i>"
        )
        options = [(f"{d.id} · {d.example_count} examples", d.id) for d in self.datasets]
        current = select or self.dataset_pick.value
        self.dataset_pick.options = options
        ids = [v for _, v in options]
        if ids:
            new = current if current in ids else ids[0]
            if self.dataset_pick.value != new:
                self.dataset_pick.value = new
            elif select:
                self.show_histogram()
        else:
            self.histogram.value = plots.message_png("no dataset yet")

    def show_histogram(self) -> None:
        """Token-length histogram of the chosen dataset's examples (computed off-thread)."""
        ds_id = self.dataset_pick.value
        rec = next((d for d in self.datasets if d.id == ds_id), None)
        if rec is None:
            return
        # at once: the previous dataset's bars must not stand for this one meanwhile
        self.histogram.value = plots.message_png(f"counting the tokens of {ds_id}…", width=4.8)
        cache = getattr(
            getattr(getattr(self.backend, "service", None), "settings", None), "cache", None
        )

        def work() -> tuple[list[int], str] | None:
            texts = read_dataset_texts(rec) if self.backend.local_files else None
            if texts is None:
                return None
            return token_lengths(texts, find_tokenizer(cache))

        def done(result: tuple[list[int], str] | None) -> None:
            if self.dataset_pick.value != ds_id:
                return
            if result is None:
                self.histogram.value = plots.message_png("dataset files are not readable here")
                return
            lengths, unit = result
            self.histogram.value = plots.histogram_png(
                lengths, f"Example length — {ds_id}", unit, bins=30, width=4.8
            )

        self.in_background("histogram", work, done)
