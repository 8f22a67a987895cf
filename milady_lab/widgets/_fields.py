"""Form fields the panels share, so the explorer and the builder filter alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

import ipywidgets as w

STYLE = {"description_width": "auto"}


class Change(TypedDict):
    """What a traitlets observer is handed (``observe(fn, names="value")``): the trait's
    old and new value."""

    name: str
    old: Any
    new: Any
    owner: w.DOMWidget
    type: str


#: Trajectory filters in the order the panels lay them out (REST body names).
TRAJECTORY_FILTERS = ("source", "status", "startDate", "endDate", "search")


def dropdown(description: str, blank: str, width: str = "170px") -> w.Dropdown:
    """A choice whose first option, ``blank``, means "no filter"."""
    return w.Dropdown(
        options=[blank],
        value=blank,
        description=description,
        style=STYLE,
        layout=w.Layout(width=width),
    )


def optional_text(description: str, placeholder: str, width: str) -> w.Text:
    """A field whose empty value means "let the service choose" (shown as the placeholder)."""
    return w.Text(
        value="", placeholder=placeholder, description=description, style=STYLE,
        layout=w.Layout(width=width),
    )  # fmt: skip


def count(description: str, value: int, low: int, high: int, width: str) -> w.BoundedIntText:
    """A bounded whole number: the browser refuses what the service would refuse."""
    return w.BoundedIntText(
        value=value,
        min=low,
        max=high,
        description=description,
        style=STYLE,
        layout=w.Layout(width=width),
    )


def _search() -> w.Text:
    return w.Text(
        description="Search",
        placeholder="text in prompts or replies",
        continuous_update=False,  # one query per edit, not per keystroke
        style=STYLE,
        layout=w.Layout(width="300px"),
    )


def trajectory_filters(fields: tuple[str, ...], blank: str) -> dict[str, w.Widget]:
    """The filter widgets of ``TRAJECTORY_FILTERS`` that ``fields`` names, keyed by field."""
    makers: dict[str, Callable[[], w.Widget]] = {
        "source": lambda: dropdown("Source", blank),
        "status": lambda: dropdown("Status", blank),
        "startDate": lambda: w.DatePicker(
            description="From", style=STYLE, layout=w.Layout(width="190px")
        ),
        "endDate": lambda: w.DatePicker(
            description="To", style=STYLE, layout=w.Layout(width="175px")
        ),
        "search": _search,
    }
    return {name: makers[name]() for name in TRAJECTORY_FILTERS if name in fields}


def wrap_row(children: list[w.Widget], **layout: str) -> w.HBox:
    """A row that wraps on a narrow notebook instead of scrolling sideways."""
    return w.HBox(children, layout=w.Layout(flex_flow="row wrap", **layout))
