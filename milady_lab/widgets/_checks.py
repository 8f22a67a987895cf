"""Number fields that refuse a bad value, with the reason next to the field, instead of
clamping it.

A bounded ipywidget clamps what is typed: ``-5`` iterations silently became 1 and a job
started that nobody asked for. The launcher's numbers are plain number boxes; before a
start, :class:`FieldChecks` checks each value the request carries against the bounds of
its field in the request struct (``StartJobRequest``: the one description of what the
service accepts), writes what is wrong next to the field, and nothing is sent until the
values are fixed. Editing a field clears its note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as w
import msgspec

from ._fields import STYLE, Change
from ._panel import esc


@dataclass(frozen=True)
class Bounds:
    """The numeric constraints of one request field (``None``: no such bound)."""

    whole: bool
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` would be refused, in words; None when it is acceptable."""
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return "must be a number"
        if self.whole and value != int(value):
            return "must be a whole number"
        low = self._range()
        if (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt):
            return low
        if (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt):
            return low
        return None

    def _range(self) -> str:
        lower = f"≥ {_num(self.ge)}" if self.ge is not None else None
        lower = f"> {_num(self.gt)}" if self.gt is not None else lower
        upper = f"≤ {_num(self.le)}" if self.le is not None else None
        upper = f"< {_num(self.lt)}" if self.lt is not None else upper
        return "must be " + " and ".join(b for b in (lower, upper) if b)


def _num(value: float) -> str:
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def bounds_of(struct: type[msgspec.Struct], wire_name: str) -> Bounds:
    """The bounds of the number field ``wire_name`` (its REST name) of a request struct."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    field = next((f for f in info.fields if f.encode_name == wire_name), None)
    if field is None:
        raise KeyError(f"{struct.__name__} has no field {wire_name!r}")
    kind: Any = field.type
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if isinstance(kind, msgspec.inspect.UnionType):
        kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
    while isinstance(kind, msgspec.inspect.Metadata):
        kind = kind.type
    if not isinstance(kind, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        raise TypeError(f"{wire_name} is not a number field")
    return Bounds(
        whole=isinstance(kind, msgspec.inspect.IntType),
        ge=kind.ge,
        gt=kind.gt,
        le=kind.le,
        lt=kind.lt,
    )


def whole(description: str, value: int, width: str) -> w.IntText:
    """A whole-number box that takes any value: the form checks it, it never clamps."""
    return w.IntText(
        value=value, description=description, style=STYLE, layout=w.Layout(width=width)
    )


def decimal(description: str, value: float, width: str, step: float | None = None) -> w.FloatText:
    """A number box that takes any value (checked by the form, never clamped)."""
    return w.FloatText(
        value=value, step=step, description=description, style=STYLE,
        layout=w.Layout(width=width),
    )  # fmt: skip


class FieldChecks:
    """Number widgets by the request field they fill, each with a note beside it."""

    def __init__(self, struct: type[msgspec.Struct]) -> None:
        self.struct = struct
        self.fields: dict[str, tuple[w.DOMWidget, w.HTML, Bounds]] = {}
        #: What each field's note says now, by request field (only the fields with one).
        self.notes: dict[str, str] = {}

    def add(self, wire_name: str, widget: w.DOMWidget) -> w.HBox:
        """Check ``widget`` as the request's ``wire_name``; lay out the box this returns."""
        note = w.HTML(layout=w.Layout(display="none"))
        note.add_class("milady-field-error")
        self.fields[wire_name] = (widget, note, bounds_of(self.struct, wire_name))

        def edited(_change: Change) -> None:
            self._note(wire_name, "")

        widget.observe(edited, names="value")
        box = w.HBox([widget, note], layout=w.Layout(align_items="center"))
        box.add_class("milady-field")
        return box

    def check(self, body: dict[str, Any]) -> dict[str, str]:
        """Note beside each field whose value in ``body`` would be refused; clear the
        others. Returns ``{field description: reason}`` (empty: the body may be sent)."""
        problems: dict[str, str] = {}
        for key, (widget, _box, bounds) in self.fields.items():
            reason = bounds.problem(body[key]) if key in body else None
            self._note(key, reason or "")
            if reason:
                problems[widget.description or key] = reason
        return problems

    def _note(self, key: str, reason: str) -> None:
        note = self.fields[key][1]
        if reason:
            self.notes[key] = reason
        else:
            self.notes.pop(key, None)
        note.value = (
            f"<span style='color:#b71c1c;font-size:12px;white-space:nowrap'>{esc(reason)}</span>"
            if reason
            else ""
        )
        note.layout.display = "" if reason else "none"
