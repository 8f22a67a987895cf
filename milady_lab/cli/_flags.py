"""CLI flags derived from a request body's struct: one flag per field, named after it
(``--learning-rate`` for ``learningRate``), its help the field's description.

The values go to the service as the user typed them; the service decodes them like any
body (``milady_lab.api.decode``), so a bad value gets the same sentence as over REST,
and a field added to a body is a flag with help the moment it exists.
"""

from __future__ import annotations

import argparse
import datetime
import typing
from collections.abc import Iterable, Mapping

import msgspec

from ..api.schema import JsonObject


def add_body_flags(
    parser: argparse.ArgumentParser,
    kind: type[msgspec.Struct],
    *,
    skip: Iterable[str] = (),
    renamed: Mapping[str, str] | None = None,
    repeated: Iterable[str] = (),
) -> None:
    """A flag for every field of ``kind`` but ``skip``; ``renamed`` gives a shorter flag
    (attribute → flag without dashes); fields in ``repeated`` may be given several times
    (any of the values)."""
    renamed = renamed or {}
    repeated = set(repeated)
    for field in msgspec.structs.fields(kind):
        if field.name in skip:
            continue
        flag = "--" + renamed.get(field.name, field.name).replace("_", "-")
        parser.add_argument(
            flag,
            dest=field.name,
            action="append" if field.name in repeated else "store",
            metavar="TEXT" if field.name in repeated else _metavar(field.type),
            help=_help(field.type, several=field.name in repeated),
        )


def body_from(args: argparse.Namespace, kind: type[msgspec.Struct]) -> JsonObject:
    """The body the flags describe: every field given on the command line, by its wire name
    (a flag given once is its value; given several times, the list)."""
    body: JsonObject = {}
    for field in msgspec.structs.fields(kind):
        value = getattr(args, field.name, None)
        if value is None:
            continue
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        body[field.encode_name] = value
    return body


def _help(kind: object, several: bool) -> str:
    text = _description(kind) or ""
    text = text[:1].lower() + text[1:]
    if several:
        text += " (repeat the flag for any of several)"
    return text.replace("%", "%%")  # argparse formats help with %


def _metavar(kind: object) -> str:
    """What the flag takes: its choices and the kinds of value (``N|auto``,
    ``{attention,all-linear}|a,b``)."""
    words = {int: "N", float: "X", bool: "true|false", datetime.date: "YYYY-MM-DD", str: "TEXT"}
    choices: list[str] = []
    parts: list[str] = []
    pending = [kind]
    while pending:
        current = pending.pop(0)
        if typing.get_origin(current) is typing.Literal:
            choices += [str(c) for c in typing.get_args(current) if c != ""]
        elif typing.get_origin(current) is list:
            parts.append("a,b")  # several names, comma-separated
        elif current in words:
            parts.append(words[current])  # type: ignore[index]
        else:
            pending.extend(typing.get_args(current))
    if choices:
        parts.insert(0, "{" + ",".join(choices) + "}")
    return "|".join(dict.fromkeys(parts)) or "TEXT"


def _description(kind: object) -> str | None:
    """The field's description: the first ``Meta(description=...)`` through
    ``Annotated[...]`` and ``X | None``."""
    pending = [kind]
    while pending:
        current = pending.pop(0)
        for meta in getattr(current, "__metadata__", ()):
            if isinstance(meta, msgspec.Meta) and meta.description:
                return meta.description
        pending.extend(typing.get_args(current))
    return None
