"""Bodies decoded once, at the edge, into their structs; a bad one is a 400 naming the field.

The handler decodes a REST body here; the service decodes what a Python caller or the
CLI passes the same way, so every way in refuses the same bodies with the same words.
msgspec does the decoding. When it refuses a body, the reason is said in the user's
words ("iterations must be at least 1, got 0") from the struct's JSON schema, the same
schema ``openapi.json`` publishes.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from typing import Any, TypeVar

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from ..errors import InputError
from .schema import JsonObject

B = TypeVar("B", bound=msgspec.Struct)

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a list",
}
_AT = re.compile(r" - at `\$((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)`$")


def body(value: Any, kind: type[B], *, strict: bool = True) -> B:
    """``value`` (JSON values; None for no body) as a ``kind`` struct, or an
    ``InputError`` that names the field and says what it must be. A ``kind`` struct
    (decoded already, by a handler) is taken as it is.

    ``strict=False`` is for Python callers and the CLI, whose flags arrive as text: a
    number or true/false written as a string is taken for one (``"12"``, ``"0.5"``)."""
    if isinstance(value, kind):
        return value
    if value is None:
        return kind()
    if not isinstance(value, dict):
        raise InputError("the request body must be a JSON object")
    try:
        return msgspec.convert(value, kind, strict=strict)
    except msgspec.ValidationError as exc:
        if not strict:
            value = _lenient(value, _schema(kind))
        raise InputError(explain(value, kind, exc)) from None


def _lenient(value: JsonObject, schema: JsonObject) -> JsonObject:
    """``value`` with the strings a non-strict decode takes for numbers or booleans
    replaced by them, where the field takes no string: the reason a body is refused is
    then about its value, not the text it came as."""
    props = schema.get("properties", {})
    out = dict(value)
    for key, item in value.items():
        prop = props.get(key)
        if not isinstance(item, str) or not isinstance(prop, dict):
            continue
        types = {prop.get("type"), *(p.get("type") for p in prop.get("anyOf", []))}
        if "string" in types:
            continue
        for kind in (int, float, bool):
            if _JSON_TYPES[kind] in types:
                with contextlib.suppress(msgspec.ValidationError):
                    out[key] = msgspec.convert(item, kind, strict=False)
                    break
    return out


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean"}


def explain(value: JsonObject, kind: type[msgspec.Struct], exc: msgspec.ValidationError) -> str:
    """The first way ``value`` breaks ``kind``, in a sentence."""
    schema = _schema(kind)
    errors = sorted(
        _validator(kind).iter_errors(value),
        key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path], e.validator),
    )
    if errors:
        return _sentence(errors[0], value, schema)
    # What JSON Schema does not check (a date's format): msgspec's reason, with the
    # field's own sentence (``x-error``) when it has one.
    text = str(exc)
    where = _AT.search(text)
    path = where.group(1).lstrip(".") if where else ""
    field = re.sub(r"\[\d+\]", "", path)
    prop = schema.get("properties", {}).get(field.split(".")[0], {}) if field else {}
    custom = _x_error(prop)
    reason = _AT.sub("", text)
    if custom:
        return f"{field} {custom}"
    return f"{field} is invalid: {reason}" if field else f"the request body is invalid: {reason}"


@functools.cache
def _components() -> dict[str, JsonObject]:
    from .openapi import document

    return document()["components"]["schemas"]


def _schema(kind: type) -> JsonObject:
    return _components()[kind.__name__]


@functools.cache
def _validator(kind: type) -> Draft202012Validator:
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{kind.__name__}",
        "components": {"schemas": _components()},
    }
    return Draft202012Validator(root)


def _x_error(prop: JsonObject) -> str | None:
    for part in [prop, *prop.get("anyOf", [])]:
        if isinstance(part, dict) and part.get("x-error"):
            return str(part["x-error"])
    return None


def _sentence(error: SchemaError, value: JsonObject, target: JsonObject) -> str:
    props = target.get("properties", {})
    if not error.absolute_path:
        if error.validator == "additionalProperties":
            unknown = sorted(str(k) for k in value if k not in props)
            expected = ", ".join(props) if props else "no fields"
            return f"unknown field(s) {', '.join(unknown)}; expected {expected}"
        return "the request body must be a JSON object"
    # "privacy.redact" for a nested object's key; a list's item reads as the list.
    field = ".".join(
        str(p) for p in itertools.takewhile(lambda p: isinstance(p, str), error.absolute_path)
    )
    found = error.instance
    if error.validator == "additionalProperties" and isinstance(found, dict):
        # A nested object (e.g. privacy) with a key it does not know: name the key.
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = sorted(str(k)[:40] for k in found if k not in known)
        return f"unknown {field} key(s) {', '.join(unknown)}; expected {', '.join(known)}"
    shown = repr(found)[:60] if not isinstance(found, dict | list) else type(found).__name__
    kind, rule = error.validator, error.validator_value
    if kind == "type":
        types = [rule] if isinstance(rule, str) else [t for t in rule if t != "null"]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"{field} must be {words}, got {shown}"
    if kind == "anyOf":
        return _any_of(error, field, shown)
    simple = {
        "minimum": f"must be at least {rule}, got {shown}",
        "maximum": f"must be at most {rule}, got {shown}",
        "exclusiveMinimum": f"must be greater than {rule}, got {shown}",
        "exclusiveMaximum": f"must be less than {rule}, got {shown}",
        "maxLength": f"must be at most {rule} characters long",
        "minItems": f"must list at least {rule} value(s)",
        "maxItems": f"may list at most {rule} values",
    }
    if kind in simple:
        return f"{field} {simple[kind]}"
    if kind == "minLength":
        return f"{field} must not be empty" if rule == 1 else f"{field} is too short"
    if kind in ("enum", "const"):
        options = rule if kind == "enum" else [rule]
        listed = ", ".join(str(o) for o in options if o is not None)
        return f"{field} must be one of {listed}, got {shown}"
    custom = _x_error(error.schema) if isinstance(error.schema, dict) else None
    if custom:
        return f"{field} {custom}"
    return f"{field} is invalid: {error.message[:200]}"


def _any_of(error: SchemaError, field: str, shown: str) -> str:
    """A field of several forms (``X | None``, a name or a list of names): why the value
    fits none, said by the form it breaks least (a bound rather than a type)."""
    arms = [c for c in error.context or [] if not _null_only(c)]
    inside = [c for c in arms if len(c.absolute_path) > len(error.absolute_path)]
    if inside:  # the value has the right form; something within it (a nested key) is wrong
        return _sentence(max(inside, key=lambda c: len(c.absolute_path)), {}, {})
    if arms and all(c.validator == "type" for c in arms):
        words = " or ".join(_TYPE_WORDS.get(str(c.validator_value), "") for c in arms)
        return f"{field} must be {words}, got {shown}"
    fitting = [c for c in arms if c.validator != "type"]
    # The arm written for this kind of value (a list's bound, not the name's enum).
    inner = next(
        (c for c in fitting if c.schema.get("type") == _json_type(c.instance)), None
    ) or next(iter(fitting), None)
    if inner is None:
        return f"{field} is invalid: {error.message[:200]}"
    return _sentence(inner, {}, {})


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    kinds = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return next((name for t, name in kinds.items() if isinstance(value, t)), "null")


def _null_only(error: SchemaError) -> bool:
    """The ``null`` arm's complaint (the value is not null): never the reason to give."""
    return error.validator == "type" and error.validator_value == "null"
