"""Small matplotlib charts rendered to PNG bytes for ``ipywidgets.Image``.

Each chart builds its own :class:`matplotlib.figure.Figure` with the Agg canvas — no
pyplot, so no global figure registry and no interactive backend inside the kernel.
The panels still call these from one thread only (see ``_async``), because
matplotlib's font and text caches are not safe to share between threads.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3"]
DPI = 96


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def fit_title(ax: Any, title: str, fontsize: float = 10) -> Any:
    """Set ``ax``'s title, wrapped onto more lines until it fits the figure's width: a
    long job or model name must not run off the image. Returns the title's ``Text``."""
    text = ax.set_title(title, fontsize=fontsize, loc="left")
    fig = ax.get_figure()
    renderer = fig.canvas.get_renderer()
    room = fig.bbox.width * 0.88  # the axes start a little in from the left edge
    chars = len(title)
    while text.get_window_extent(renderer).width > room and chars > 8:
        chars = max(8, int(chars * 0.85))
        text.set_text(textwrap.fill(title, chars, break_long_words=True))
    return text


def _style(ax: Any, title: str, xlabel: str = "", ylabel: str = "") -> None:
    fit_title(ax, title)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def message_png(text: str, width: float = 4.2, height: float = 2.6) -> bytes:
    """A placeholder chart holding one line of text (no data yet, not available)."""
    fig = _figure(width, height)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#777777", wrap=True)
    return _png(fig)


def histogram_png(
    values: Sequence[float],
    title: str,
    xlabel: str,
    *,
    bins: int | Sequence[float] = 20,
    width: float = 4.2,
    height: float = 2.6,
    integer: bool = False,
) -> bytes:
    """A histogram; ``integer`` centres one bar on each whole number (counts per item)."""
    if not values:
        return message_png(f"{title}: no data", width, height)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    if integer:
        lo, hi = int(min(values)), int(max(values))
        if hi - lo <= 40:
            bins = [x - 0.5 for x in range(lo, hi + 2)]
    ax.hist(values, bins=bins, color=PALETTE[0], edgecolor="white", linewidth=0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if integer:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _style(ax, title, xlabel, "count")
    fig.tight_layout()
    return _png(fig)


def tokens_over_time_png(
    series: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    *,
    bucket_ms: int = 86_400_000,
    title: str = "Tokens over time by source",
    width: float = 4.8,
    height: float = 2.6,
) -> bytes:
    """Stacked bars, one colour per source: ``{source: (bucket start ms, tokens)}``, the
    starts read as wall-clock times (the user's local days)."""
    if not series:
        return message_png(f"{title}: no data", width, height)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    buckets = sorted({x for xs, _ in series.values() for x in xs})
    bottom = dict.fromkeys(buckets, 0.0)
    bar_width = bucket_ms / 86_400_000 * 0.85  # matplotlib date units are days
    for i, (source, (xs, ys)) in enumerate(sorted(series.items())):
        by_bucket = dict(zip(xs, ys, strict=False))
        heights = [float(by_bucket.get(b, 0.0)) for b in buckets]
        # Wall-clock bucket starts (``_groups.wall_clock_ms``): shown as they are.
        dates = [datetime.fromtimestamp(b / 1000, UTC).replace(tzinfo=None) for b in buckets]
        ax.bar(
            dates,
            heights,
            bar_width,
            bottom=[bottom[b] for b in buckets],
            align="edge",
            color=PALETTE[i % len(PALETTE)],
            label=source,
            linewidth=0,
        )
        for b, h in zip(buckets, heights, strict=True):
            bottom[b] += h
    _style(ax, title, "", "tokens")
    ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper left")
    ax.set_ylim(0, max(bottom.values()) * 1.3 or 1)
    fig.autofmt_xdate(rotation=30)
    fig.tight_layout()
    return _png(fig)


def loss_curve_png(
    train: Sequence[tuple[float, float]],
    valid: Sequence[tuple[float, float]],
    *,
    title: str = "Loss",
    total_iterations: int | None = None,
    best: tuple[float, float] | None = None,
    width: float = 7.0,
    height: float = 3.0,
) -> bytes:
    """Training loss (line) and validation loss (markers) against iteration; ``best``
    (iteration, valLoss) is marked: the adapter a ``saveBest`` job registers.

    The x axis follows the points, not ``total_iterations``: early in a long run the
    curve would otherwise be a few pixels at the left edge.
    """
    if not train and not valid:
        return message_png("waiting for the first loss…", width, height)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    if train:
        few = len(train) < 40
        ax.plot(
            [p[0] for p in train],
            [p[1] for p in train],
            color=PALETTE[0],
            linewidth=1.4,
            marker="o" if few else None,
            markersize=3,
            label="train",
        )
    if valid:
        ax.plot(
            [p[0] for p in valid],
            [p[1] for p in valid],
            color=PALETTE[1],
            marker="s",
            markersize=4,
            linewidth=1.0,
            linestyle="--",
            label="validation",
        )
    if best is not None:
        ax.axvline(best[0], color=PALETTE[2], linewidth=0.8, linestyle=":")
        ax.plot([best[0]], [best[1]], marker="*", markersize=12, color=PALETTE[2],
                linestyle="none", label=f"best (iteration {int(best[0])})")  # fmt: skip
    last = max(p[0] for p in [*train, *valid])
    ax.set_xlim(0, max(last * 1.05, last + 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if total_iterations:
        title = f"{title} · {int(last)}/{total_iterations} iterations"
    _style(ax, title, "iteration", "loss")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


def scores_png(
    scores: Mapping[str, float],
    baseline: Mapping[str, float] | None = None,
    *,
    title: str = "Benchmark",
    width: float = 5.0,
    height: float = 2.8,
    active: Mapping[str, float] | None = None,
    intervals: Mapping[str, Mapping[str, Any]] | None = None,
) -> bytes:
    """Grouped bars, base vs fine-tuned vs active, with 95 % intervals as error bars."""
    names = [n for n in scores if scores[n] is not None]
    if not names:
        return message_png("no benchmark yet", width, height)
    groups = [("base model", baseline, "baseline", "#AAAAAA"), ("fine-tuned", scores, "scores",
              PALETTE[0]), ("active", active, "active", PALETTE[1 % len(PALETTE)])]  # fmt: skip
    groups = [g for g in groups if g[1]]
    fig = _figure(width, height)
    ax = fig.add_subplot()
    w = 0.8 / len(groups)
    for j, (label, block, key, color) in enumerate(groups):
        assert block is not None
        xs = [i - 0.4 + w * (j + 0.5) for i in range(len(names))]
        ys = [float(block.get(n) or 0.0) for n in names]
        iv = (intervals or {}).get(key) or {}
        err = [
            [max(0.0, y - (iv.get(n) or [y, y])[0]) for n, y in zip(names, ys, strict=True)],
            [max(0.0, (iv.get(n) or [y, y])[1] - y) for n, y in zip(names, ys, strict=True)],
        ]
        bars = ax.bar(xs, ys, w, color=color, label=label, yerr=err if iv else None, capsize=2)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(list(range(len(names))), names, fontsize=7)
    ax.set_ylim(0, 1.15)
    _style(ax, title, "", "score")
    ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=3)
    fig.tight_layout()
    return _png(fig)
