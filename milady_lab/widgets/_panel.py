"""What every panel shares: backend and runner wiring, the status line, safe handlers."""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import ipywidgets as w
import tzlocal

from ._async import UiRunner
from ._backend import PanelData, describe_error, make_backend

CSS = """
<style>
.milady-panel { font-size: 13px; }
.milady-panel h3.milady-title { margin: 4px 0 6px 0; font-size: 15px; }
.milady-status { padding: 3px 8px; border-radius: 3px; margin: 4px 0; min-height: 1.4em; }
.milady-status-ok { background: #e8f5e9; color: #1b5e20; }
.milady-status-error { background: #fdecea; color: #b71c1c; }
.milady-status-info { background: #f1f3f4; color: #333; }
.milady-status-busy { background: #fff8e1; color: #6d4c00; }
.milady-status-warn { background: #fff3e0; color: #8a4b00; }
.milady-rows select { font-family: var(--jp-code-font-family, monospace) !important;
  font-size: 12px !important; }
.milady-mono { font-family: var(--jp-code-font-family, monospace); font-size: 12px;
  white-space: pre; }
table.milady-table { border-collapse: collapse; font-size: 12px; margin: 2px 0; }
table.milady-table th { text-align: left; border-bottom: 1px solid #bbb; padding: 2px 6px;
  white-space: nowrap; }
table.milady-table td { border-bottom: 1px solid #eee; padding: 2px 6px; white-space: nowrap; }
.milady-scroll { overflow-x: auto; max-width: 100%; }
table.milady-table td.num, table.milady-table th.num { text-align: right; }
.milady-detail details { margin: 2px 0 2px 12px; }
.milady-detail summary { cursor: pointer; color: #444; }
.milady-detail pre { white-space: pre-wrap; word-break: break-word; max-height: 300px;
  overflow: auto; background: #f7f7f7; padding: 6px; margin: 2px 0; font-size: 11px; }
.milady-call { border-left: 3px solid #4C72B0; padding-left: 8px; margin: 6px 0; }
.milady-chip { display: inline-block; padding: 0 6px; border-radius: 8px; background: #eef;
  font-size: 11px; margin-right: 4px; }
</style>
"""

#: The status line's marks: symbols DejaVu Sans has (the Binder image's and Debian
#: Chromium's font), never emoji, which render as empty boxes there. A busy message ends in
#: "…" and needs none.
KIND_ICON = {"ok": "✓", "error": "×", "info": "", "busy": "", "warn": "!"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def local_zone() -> ZoneInfo:
    """The kernel's time zone, by its IANA name (``tzlocal``): what dates, day filters and
    day buckets use, and what a build is told its days are in (``timeZone``)."""
    zone = tzlocal.get_localzone()
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("UTC")


def fmt_ms(ms: Any) -> str:
    """A timestamp in ms since epoch as a short date-time in the kernel's local time zone."""
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return "—"
    return datetime.fromtimestamp(ms / 1000, local_zone()).strftime("%Y-%m-%d %H:%M")


def short_model(name: Any) -> str:
    """A base model as shown in tables and menus: a local folder by its own name (the
    whole path would push the table's columns off a notebook's width)."""
    text = "" if name is None else str(name)
    if text.startswith(("/", "~")):
        parts = [p for p in text.split("/") if p]
        return "…/" + parts[-1] if len(parts) > 1 else text
    return text


def fmt_num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return esc(value)


def html_table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    """A small escaped HTML table; cells are escaped unless wrapped in ``Raw``."""
    numeric = numeric or set()

    def cell(i: int, v: Any, tag: str) -> str:
        cls = ' class="num"' if i in numeric else ""
        text = v.html if isinstance(v, Raw) else esc(v)
        return f"<{tag}{cls}>{text}</{tag}>"

    head = "".join(cell(i, h, "th") for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows
    )
    return (
        f'<div class="milady-scroll"><table class="milady-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


class Raw:
    """Marks a table cell as already-escaped HTML."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


class Panel(w.VBox):
    """Base of the four panels: one backend, one runner, one status line."""

    title = "milady-lab"

    def __init__(
        self,
        backend: PanelData | None = None,
        *,
        runner: UiRunner | None = None,
        service: Any = None,
        client: Any = None,
        remote: bool = False,
        settings: Any = None,
        **kwargs: Any,
    ) -> None:
        # The backend first: discovering a server may import ipykernel, which changes the
        # comm manager; widgets opened before that could not be closed cleanly afterwards.
        backend_ = make_backend(
            backend, service=service, client=client, remote=remote, settings=settings
        )
        super().__init__(**kwargs)
        self._owns_backend = backend is None
        self.backend = backend_
        self._owns_runner = runner is None
        self.runner = runner or UiRunner()
        self.status_line = w.HTML(layout=w.Layout(width="100%"))
        self.status_line.add_class("milady-status-holder")
        self.last_status: tuple[str, str] = ("info", "")
        self.add_class("milady-panel")
        self._closed = False

    # -- status line -------------------------------------------------------------------
    def set_status(self, message: str, kind: str = "info") -> None:
        """Show one line in the panel: ok, warn, error, busy or info."""
        self.last_status = (kind, message)
        icon = KIND_ICON.get(kind, "")
        self.status_line.value = (
            f'<div class="milady-status milady-status-{kind}" data-kind="{kind}">'
            f"{icon + ' ' if icon else ''}{esc(message)}</div>"
        )

    def show_error(self, exc: BaseException, action: str = "") -> None:
        prefix = f"{action} failed: " if action else ""
        self.set_status(prefix + describe_error(exc), "error")

    # -- safe handlers -----------------------------------------------------------------
    def guard(self, action: str) -> Callable[[Callable[..., Any]], Callable[..., None]]:
        """Wrap a widget callback so that nothing raises into the notebook."""

        def deco(fn: Callable[..., Any]) -> Callable[..., None]:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> None:
                try:
                    fn(*args, **kwargs)
                except Exception as exc:
                    self.show_error(exc, action)

            return wrapper

        return deco

    def in_background(
        self,
        action: str,
        work: Callable[[], Any],
        done: Callable[[Any], None],
        busy: str | None = None,
    ) -> None:
        """Run ``work`` off the kernel thread; ``done(result)`` or the error on the UI thread."""
        if busy:
            self.set_status(busy, "busy")

        def finished(result: Any, error: BaseException | None) -> None:
            if self._closed:
                return
            if error is not None:
                self.show_error(error, action)
                self.after_error(action)
                return
            try:
                done(result)
            except Exception as exc:
                self.show_error(exc, action)

        self.runner.submit(work, finished)

    def after_error(self, action: str) -> None:
        """Hook: re-enable buttons after a failed background action."""

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for background work and apply its results (plain Python and tests)."""
        self.runner.wait(timeout)

    # -- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop polling and background work; release what this panel opened."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._owns_runner:
            self.runner.close()
        if self._owns_backend:
            self.backend.close()
        for child in list(self.children):
            child.close()
        super().close()

    def stop(self) -> None:
        """Hook: stop live updates (pollers)."""


def header(title: str) -> w.HTML:
    return w.HTML(f'{CSS}<h3 class="milady-title">{esc(title)}</h3>')
