"""The shipped ``openapi.json``: served as is, and the source of request-body shapes.

Handlers check each JSON body against the spec's request schema before the service
sees it, so the types the spec promises are the types the server accepts (the service
also takes numbers as strings, for the CLI; REST clients get strict JSON). The
service still does every semantic check (ranges too, and ids, state, backends).
"""

from __future__ import annotations

import functools
import itertools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

_URN = "urn:milady-lab:openapi"
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a list",
}


@functools.cache
def spec_bytes() -> bytes:
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


@functools.cache
def spec() -> dict[str, Any]:
    return json.loads(spec_bytes())


@functools.cache
def spec_for_base_url(base_url: str) -> bytes:
    """The spec as served under ``base_url`` (its paths are relative to that)."""
    doc = {**spec(), "servers": [{"url": base_url.rstrip("/") or "/"}]}
    return json.dumps(doc, indent=1).encode()


@functools.cache
def _operations() -> dict[str, dict[str, Any]]:
    out = {}
    for item in spec()["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and "operationId" in op:
                out[op["operationId"]] = op
    return out


@functools.cache
def request_schema(operation_id: str) -> dict[str, Any] | None:
    """The JSON request-body schema of an operation (None when it takes no body)."""
    op = _operations()[operation_id]
    try:
        return op["requestBody"]["content"]["application/json"]["schema"]
    except KeyError:
        return None


@functools.cache
def _validator(ref: str) -> Draft202012Validator:
    """A validator for the component at ``ref`` (``#/components/schemas/...``)."""
    doc = {**spec(), "$schema": "https://json-schema.org/draft/2020-12/schema"}
    registry: Registry = Registry().with_resource(_URN, Resource.from_contents(doc))
    return Draft202012Validator({"$ref": f"{_URN}{ref}"}, registry=registry)


def validate_body(body: Any, schema: dict[str, Any]) -> str | None:
    """A user-facing message for the first way ``body`` breaks ``schema``; None if it fits."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise ValueError("request schemas are component references")
    target = doc_at(ref)
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    errors = sorted(
        _validator(ref).iter_errors(body),
        key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path], e.validator),
    )
    if not errors:
        return None
    return _message(errors[0], body, target)


def doc_at(ref: str) -> dict[str, Any]:
    node: Any = spec()
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _message(error: Any, body: dict[str, Any], target: dict[str, Any]) -> str:
    props = target.get("properties", {})
    if not error.absolute_path:
        if error.validator == "additionalProperties":
            unknown = sorted(str(k) for k in body if k not in props)
            expected = ", ".join(props) if props else "no fields"
            return f"unknown field(s) {', '.join(unknown)}; expected {expected}"
        return "the request body must be a JSON object"
    # "privacy.redact" for a nested object's key; a list's item reads as the list.
    field = ".".join(
        str(p) for p in itertools.takewhile(lambda p: isinstance(p, str), error.absolute_path)
    )
    value = error.instance
    if error.validator == "additionalProperties" and isinstance(value, dict):
        # A nested object (e.g. privacy) with a key it does not know: name the key.
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = sorted(str(k)[:40] for k in value if k not in known)
        return f"unknown {field} key(s) {', '.join(unknown)}; expected {', '.join(known)}"
    shown = repr(value)[:60] if not isinstance(value, dict | list) else type(value).__name__
    kind = error.validator
    rule = error.validator_value
    if kind == "type":
        types = [rule] if isinstance(rule, str) else [t for t in rule if t != "null"]
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"{field} must be {words}, got {shown}"
    if kind == "minimum":
        return f"{field} must be at least {rule}, got {shown}"
    if kind == "maximum":
        return f"{field} must be at most {rule}, got {shown}"
    if kind == "exclusiveMinimum":
        return f"{field} must be greater than {rule}, got {shown}"
    if kind == "minLength":
        return f"{field} must not be empty" if rule == 1 else f"{field} is too short"
    if kind == "maxLength":
        return f"{field} must be at most {rule} characters long"
    if kind == "minItems":
        return f"{field} must list at least {rule} value(s)"
    if kind == "maxItems":
        return f"{field} may list at most {rule} values"
    if kind == "enum":
        options = ", ".join(str(o) for o in rule if o is not None)
        return f"{field} must be one of {options}, got {shown}"
    custom = error.schema.get("x-error") if isinstance(error.schema, dict) else None
    if custom:
        return f"{field} {custom}"
    return f"{field} is invalid: {error.message[:200]}"
