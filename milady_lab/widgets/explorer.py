"""TrajectoryExplorer: browse, filter and read the agent's trajectories in a notebook."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import ipywidgets as w
import polars as pl

from ..api.schema import Trajectory, TrajectorySummary
from ..datasets.build import day_start_ms
from ..trajectories.base import LLM_CALL_SCHEMA
from . import plots
from ._backend import as_record, calls_frame
from ._bodies import BuildBody
from ._fields import STYLE, TRAJECTORY_FILTERS, Change, count, trajectory_filters, wrap_row
from ._groups import GROUPS, group_summary, grouped_rows, tokens_over_time
from ._panel import Panel, esc, fmt_ms, header, html_table, local_zone

ALL = "(all)"
PAGE_SIZE = 15


def _row_label(r: TrajectorySummary) -> str:
    tokens = (r.total_prompt_tokens or 0) + (r.total_completion_tokens or 0)
    return (
        f"{fmt_ms(r.start_time):16}  {(r.source or '?')[:10]:10}  "
        f"{(r.status or '?')[:9]:9}  {r.llm_call_count or 0:>5}  "
        f"{tokens:>8,}  {r.id[:36]}"
        + (f"  scenario {r.scenario_id}" if r.scenario_id else "")
        + ("  (archived)" if r.archived else "")
    )


ROW_HEADER = f"{'start':16}  {'source':10}  {'status':9}  {'calls':>5}  {'tokens':>8}  id"


class TrajectoryExplorer(Panel):
    """A paginated, filterable table of trajectories with each one's LLM calls.

    ``explorer.frame`` is the filtered summaries frame and ``explorer.selected`` the
    selected trajectory's LLM calls, both Polars, for scripted analysis.
    """

    title = "Trajectories"

    def __init__(self, backend: Any = None, *, page_size: int = PAGE_SIZE, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.page_size = page_size
        self.page = 0
        self._all = pl.DataFrame(schema=_summary_schema())
        self._frame = self._all
        self._search_cache: dict[str, set[str]] = {}
        self._suspend = False
        self.selected_id: str | None = None
        self.selected_detail: Trajectory | None = None
        self._selected = pl.DataFrame(schema=LLM_CALL_SCHEMA)

        self._filter_widgets()
        self._view_widgets()
        self._lay_out()
        self._wire()
        self.guard("load trajectories")(self.reload)()

    def _filter_widgets(self) -> None:
        """The same filters as the dataset builder, plus clear and reload."""
        f = trajectory_filters(TRAJECTORY_FILTERS, ALL)
        self.source_filter, self.status_filter = f["source"], f["status"]
        self.date_from, self.date_to, self.search = f["startDate"], f["endDate"], f["search"]
        self.min_calls = count("Min LLM calls", 0, 0, 100_000, "150px")
        self.clear_button = w.Button(
            description="Clear", icon="times", layout=w.Layout(width="80px")
        )
        self.refresh_button = w.Button(
            description="Reload", icon="refresh", layout=w.Layout(width="90px")
        )
        self.count_label = w.HTML()
        self.group_by = w.Dropdown(
            options=list(GROUPS), value="source", description="Group by", style=STYLE,
            layout=w.Layout(width="170px"),
        )  # fmt: skip

    def _view_widgets(self) -> None:
        """The pager, the table of summaries, the charts and the opened trajectory."""
        self.prev_button = w.Button(description="◀ Prev", layout=w.Layout(width="80px"))
        self.next_button = w.Button(description="Next ▶", layout=w.Layout(width="80px"))
        self.page_label = w.HTML()
        self.table_header = w.HTML(f'<div class="milady-mono">&nbsp;{esc(ROW_HEADER)}</div>')
        self.rows = w.Select(options=[], rows=self.page_size, layout=w.Layout(width="100%"))
        self.rows.add_class("milady-rows")
        self.calls_chart = w.Image(format="png", layout=w.Layout(width="420px"))
        self.tokens_chart = w.Image(format="png", layout=w.Layout(width="480px"))
        self.groups_table = w.HTML()
        self._calls_cache: pl.DataFrame | None = None
        # Long trajectories scroll inside the panel instead of stretching the notebook.
        self.detail = w.HTML(layout=w.Layout(width="100%", max_height="560px", overflow="auto"))
        self.detail.add_class("milady-detail")

    @property
    def _filter_inputs(self) -> tuple[w.Widget, ...]:
        return (
            self.source_filter,
            self.status_filter,
            self.min_calls,
            self.date_from,
            self.date_to,
            self.search,
        )

    def _lay_out(self) -> None:
        """Filters on two rows, the charts, then the table and the opened trajectory."""
        self.filter_bar = wrap_row(  # the Dashboard adds its "build from these" button here
            [self.search, self.group_by, self.clear_button, self.refresh_button, self.count_label],
            align_items="center",
        )
        pager = w.HBox(
            [self.prev_button, self.next_button, self.page_label],
            layout=w.Layout(align_items="center"),
        )
        self.children = [
            header(self.title),
            wrap_row(list(self._filter_inputs[:5])),
            self.filter_bar,
            wrap_row([self.calls_chart, self.tokens_chart]),
            self.groups_table,
            self.table_header,
            self.rows,
            pager,
            self.status_line,
            self.detail,
        ]

    def _wire(self) -> None:
        """A filter change re-filters; every callback goes through ``guard``."""
        for widget in self._filter_inputs:
            widget.observe(self.guard("filter")(self._filters_changed), names="value")
        self.rows.observe(self.guard("open trajectory")(self._on_select), names="value")
        self.prev_button.on_click(self.guard("page")(lambda _b: self.go_page(self.page - 1)))
        self.next_button.on_click(self.guard("page")(lambda _b: self.go_page(self.page + 1)))
        self.clear_button.on_click(self.guard("clear")(lambda _b: self.clear_filters()))
        self.refresh_button.on_click(self.guard("reload")(lambda _b: self.reload()))
        self.group_by.observe(self.guard("group")(lambda _c: self._render_charts()), names="value")

    # -- data ---------------------------------------------------------------------------
    @property
    def frame(self) -> pl.DataFrame:
        """The trajectory summaries that pass the current filters."""
        return self._frame

    @property
    def selected(self) -> pl.DataFrame:
        """The selected trajectory's LLM calls (empty when none is selected)."""
        return self._selected

    def reload(self) -> None:
        """Read all trajectory summaries again and re-apply the filters."""
        self._all = self.backend.trajectories_frame()
        self._search_cache.clear()
        self._calls_cache = None
        self._suspend = True
        try:
            for dropdown, col in ((self.source_filter, "source"), (self.status_filter, "status")):
                values = sorted(v for v in self._all.get_column(col).unique().to_list() if v)
                current = dropdown.value
                dropdown.options = [ALL, *values]
                dropdown.value = current if current in dropdown.options else ALL
        finally:
            self._suspend = False
        self.apply_filters()
        if not self._all.height:
            self.set_status(
                f"no trajectories yet (source: {self.backend.status().trajectory_source or '?'})",
                "info",
            )

    def filter_expr(self) -> pl.Expr:
        """The current filters, except text search, as one Polars predicate."""
        expr = pl.lit(True)
        if self.source_filter.value != ALL:
            expr &= pl.col("source") == self.source_filter.value
        if self.status_filter.value != ALL:
            expr &= pl.col("status") == self.status_filter.value
        if self.min_calls.value:
            expr &= pl.col("llmCallCount").fill_null(0) >= int(self.min_calls.value)
        zone = local_zone()  # the date pickers' days are the user's
        if self.date_from.value:
            expr &= pl.col("startTime") >= day_start_ms(self.date_from.value, zone)
        if self.date_to.value:
            end = self.date_to.value + timedelta(days=1)
            expr &= pl.col("startTime") < day_start_ms(end, zone)
        return expr

    def filter_body(self) -> BuildBody:
        """The current filters as dataset-build options (``DatasetBuilder.set_filters``)."""
        body: BuildBody = {}
        if self.source_filter.value != ALL:
            body["source"] = self.source_filter.value
        if self.status_filter.value != ALL:
            body["status"] = self.status_filter.value
        if self.min_calls.value:
            body["minLlmCallsPerTrajectory"] = int(self.min_calls.value)
        if self.date_from.value:
            body["startDate"] = self.date_from.value.isoformat()
        if self.date_to.value:
            body["endDate"] = self.date_to.value.isoformat()
        if self.date_from.value or self.date_to.value:
            body["timeZone"] = local_zone().key
        if (self.search.value or "").strip():
            body["search"] = self.search.value.strip()
        return body

    def apply_filters(self) -> None:
        frame = self._all.lazy().filter(self.filter_expr()).collect()
        text = (self.search.value or "").strip()
        if text:
            key = text.lower()
            if key not in self._search_cache:
                self._search_cache[key] = self.backend.search_trajectory_ids(
                    text, self._all.get_column("id").to_list()
                )
            frame = frame.filter(pl.col("id").is_in(sorted(self._search_cache[key])))
        self._frame = frame
        self.page = 0
        self._render_page()
        self._render_charts()
        shown = f"{frame.height:,} of {self._all.height:,} trajectories"
        self.count_label.value = f"<b>{shown}</b>"
        self.set_status(f"{shown} match the filters" + (f" and “{text}”" if text else ""), "info")

    def clear_filters(self) -> None:
        self._suspend = True
        try:
            for widget, value in (
                (self.source_filter, ALL),
                (self.status_filter, ALL),
                (self.min_calls, 0),
                (self.date_from, None),
                (self.date_to, None),
                (self.search, ""),
            ):
                widget.value = value
        finally:
            self._suspend = False
        self.apply_filters()

    def _filters_changed(self, _change: Change) -> None:
        if not self._suspend:
            self.apply_filters()

    # -- table ----------------------------------------------------------------------------
    @property
    def pages(self) -> int:
        return max(1, -(-self._frame.height // self.page_size))

    def go_page(self, page: int) -> None:
        self.page = min(max(0, page), self.pages - 1)
        self._render_page()

    def _render_page(self) -> None:
        start = self.page * self.page_size
        page = self._frame.slice(start, self.page_size).to_dicts()
        rows = as_record(list[TrajectorySummary], page)
        with self.hold_sync():
            self.rows.options = [(_row_label(r), r.id) for r in rows]
            self.rows.value = self.selected_id if self.selected_id in {r.id for r in rows} else None
            self.page_label.value = f"page {self.page + 1} of {self.pages}"
            self.prev_button.disabled = self.page == 0
            self.next_button.disabled = self.page >= self.pages - 1

    def _render_charts(self) -> None:
        key = self.group_by.value
        if key == "reward":
            rewards = self._frame.get_column("totalReward").drop_nulls()
            self.calls_chart.value = plots.histogram_png(
                rewards.filter(rewards != 0).to_list(), "totalReward (non-zero)", "reward"
            )
        else:
            counts = self._frame.get_column("llmCallCount").fill_null(0).to_list()
            self.calls_chart.value = plots.histogram_png(
                counts, "LLM calls per trajectory", "LLM calls", integer=True
            )
        rows = grouped_rows(self._frame, self.calls() if key == "purpose" else None, key)
        series, bucket = tokens_over_time(rows, local_zone().key)
        self.tokens_chart.value = plots.tokens_over_time_png(
            series, bucket_ms=bucket, title=f"Tokens over time by {key}"
        )
        self.groups_table.value = _groups_html(group_summary(rows), key)

    def calls(self) -> pl.DataFrame:
        """The LLM calls of every trajectory (read once per reload, for the purpose groups)."""
        if self._calls_cache is None:
            self._calls_cache = self.backend.calls_of(self._all.get_column("id").to_list())
        ids = self._frame.get_column("id")
        return self._calls_cache.filter(pl.col("trajectoryId").is_in(ids.implode()))

    # -- detail -------------------------------------------------------------------------
    def _on_select(self, change: Change) -> None:
        tid = change["new"]
        if tid is None:
            return
        self.select(tid)

    def select(self, trajectory_id: str) -> None:
        """Show one trajectory's LLM calls and provider accesses."""
        detail = self.backend.get_trajectory(trajectory_id)
        self.selected_id = trajectory_id
        self.selected_detail = detail
        self._selected = calls_frame(detail)
        self.detail.value = render_detail(detail)
        if self.rows.value != trajectory_id and trajectory_id in {v for _, v in self.rows.options}:
            self.rows.value = trajectory_id


def _summary_schema() -> dict[str, pl.DataType]:
    from ..trajectories.base import SUMMARY_SCHEMA

    return SUMMARY_SCHEMA


def _groups_html(summary: pl.DataFrame, key: str) -> str:
    """The per-group figures under the charts."""
    rows = [
        [r["group"], r["trajectories"], r["calls"], r["tokens"], fmt_reward(r["meanReward"])]
        for r in summary.head(20).to_dicts()
    ]
    head = [key, "trajectories", "LLM calls", "tokens", "mean reward"]
    return html_table(head, rows, numeric={1, 2, 3, 4}) if rows else ""


def fmt_reward(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _fold(label: str, text: Any, open_limit: int = 280) -> str:
    """Short text inline; long text folded in <details> so the page stays readable."""
    body = "" if text is None else str(text)
    if not body.strip():
        return f"<div><b>{esc(label)}</b> <i>(empty)</i></div>"
    if len(body) <= open_limit:
        return f"<div><b>{esc(label)}</b><pre>{esc(body)}</pre></div>"
    preview = esc(body[:120].replace("\n", " "))
    return (
        f"<details><summary><b>{esc(label)}</b> ({len(body):,} chars) — {preview}…</summary>"
        f"<pre>{esc(body)}</pre></details>"
    )


def render_detail(detail: Trajectory) -> str:
    """One trajectory as HTML: summary chips, each LLM call, the provider accesses."""
    calls, accesses = detail.llm_calls, detail.provider_accesses
    chips = "".join(
        f'<span class="milady-chip">{esc(k)}: {esc(v)}</span>'
        for k, v in (
            ("source", detail.source),
            ("status", detail.status),
            ("start", fmt_ms(detail.start_time)),
            ("LLM calls", len(calls)),
            ("provider accesses", len(accesses)),
            # The agent's grouping (rollouts of one scenario), and its 30-day archive.
            *(
                (label, value)
                for label, value in (("scenario", detail.scenario_id), ("batch", detail.batch_id))
                if value
            ),
            *((("archived", "yes"),) if detail.archived else ()),
        )
    )
    parts = [
        f"<h4 style='margin:6px 0'>Trajectory <code>{esc(detail.id)}</code></h4>",
        f"<div>{chips}</div>",
    ]
    for i, call in enumerate(calls, 1):
        tokens = (call.prompt_tokens, call.completion_tokens)
        shown = (
            f"{tokens[0] or 0}+{tokens[1] or 0} tokens"
            if any(t is not None for t in tokens)
            else ""
        )
        meta = " · ".join(esc(x) for x in (call.model, call.purpose, call.step_id, shown) if x)
        parts.append(
            f'<div class="milady-call"><div><b>Call {i}</b> '
            f'<span style="color:#666">{meta}</span></div>'
            f"{_fold('system', call.system_prompt)}{_fold('user', call.user_prompt)}"
            f"{_fold('reply', call.response)}</div>"
        )
    if not calls:
        parts.append("<div><i>No LLM calls recorded.</i></div>")
    if accesses:
        rows = [
            [a.provider_name or a.provider_id, a.purpose, a.step_id, fmt_ms(a.timestamp)]
            for a in accesses
        ]
        parts.append(
            "<h4 style='margin:8px 0 2px 0'>Provider accesses</h4>"
            + html_table(["provider", "purpose", "step", "time"], rows)
        )
    return "".join(parts)
