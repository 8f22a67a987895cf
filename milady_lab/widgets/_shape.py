"""The builder's purpose, model and reward fields (issue 15): a dataset shaped like the
agent's work. Empty fields are not sent; lists are comma-separated."""

from __future__ import annotations

import ipywidgets as w

from ..trajectories.base import REWARD_FIELDS
from ._bodies import BuildBody
from ._fields import STYLE

#: The body fields these widgets fill, in layout order.
SHAPE_FIELDS = ("purpose", "model", "minReward", "rewardField", "topFraction")


def _text(description: str, placeholder: str, width: str) -> w.Text:
    return w.Text(
        value="", placeholder=placeholder, description=description, style=STYLE,
        continuous_update=False, layout=w.Layout(width=width),
    )  # fmt: skip


def shape_filters(fields: tuple[str, ...]) -> dict[str, w.Widget]:
    """The widgets of the ``SHAPE_FIELDS`` the builder behind the backend accepts."""
    makers = {
        "purpose": lambda: _text("Purpose", "should_respond, response …", "300px"),
        "model": lambda: _text("Call model", "any", "220px"),
        "minReward": lambda: _text("Min reward", "none", "170px"),
        "rewardField": lambda: w.Dropdown(
            options=list(REWARD_FIELDS),
            value="totalReward",
            description="Reward",
            style=STYLE,
            layout=w.Layout(width="220px"),
        ),
        "topFraction": lambda: w.BoundedFloatText(
            value=1.0,
            min=0.01,
            max=1.0,
            step=0.05,
            description="Top fraction",
            style=STYLE,
            layout=w.Layout(width="180px"),
        ),
    }
    return {name: makers[name]() for name in SHAPE_FIELDS if name in fields}


def _names(text: str) -> str | list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    return items[0] if len(items) == 1 else items


def shape_body(widgets: dict[str, w.Widget]) -> BuildBody:
    """The body fields the widgets set; ``rewardField`` only with a reward filter."""
    body: BuildBody = {}
    for key in ("purpose", "model"):
        if key in widgets and widgets[key].value.strip():
            body[key] = _names(widgets[key].value)
    if "minReward" in widgets and widgets["minReward"].value.strip():
        body["minReward"] = widgets["minReward"].value.strip()  # the service checks it
    if "topFraction" in widgets and widgets["topFraction"].value < 1.0:
        body["topFraction"] = float(widgets["topFraction"].value)
    if body.keys() & {"minReward", "topFraction"} and "rewardField" in widgets:
        body["rewardField"] = widgets["rewardField"].value
    return body
