"""Checks for user input, shared by the REST handlers, the CLI and the Python API.

Values arrive as JSON types (REST bodies), strings (query strings, CLI flags) or Python
objects (the API). Each check either returns a clean value or raises ``InputError``
with a message naming the field, before anything is changed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .api.schema import JsonObject
from .errors import InputError

_INT_TEXT = re.compile(r"[+-]?\d{1,18}")
#: Ids milady-lab hands out, and anything a user may name: no path separators,
#: quotes, NUL or whitespace, bounded length.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


def body_object(body: Any, allowed: Iterable[str]) -> JsonObject:
    """A request body: a JSON object (or nothing) holding only the ``allowed`` keys."""
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise InputError("the request body must be a JSON object")
    allowed = tuple(allowed)
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        expected = ", ".join(allowed) if allowed else "no fields"
        raise InputError(f"unknown field(s) {', '.join(unknown)}; expected {expected}")
    return dict(body)


def integer(
    value: Any,
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    """An integer from an int or a decimal string; ``None`` gives ``default``."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer, not a boolean")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not _INT_TEXT.fullmatch(text):
            raise InputError(f"{name} must be an integer, got {value[:40]!r}")
        value = int(text)
    if not isinstance(value, int):
        raise InputError(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum}, got {value}")
    return value


def number(
    value: Any,
    name: str,
    *,
    default: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
) -> float | None:
    """A finite float from a number or a numeric string."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, not a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InputError(f"{name} must be a number, got {value[:40]!r}") from None
    if not isinstance(value, int | float):
        raise InputError(f"{name} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number")
    if exclusive_minimum is not None and value <= exclusive_minimum:
        raise InputError(f"{name} must be greater than {exclusive_minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum:g}, got {value:g}")
    return value


def text(
    value: Any, name: str, *, default: str | None = None, max_length: int = 1000
) -> str | None:
    """A non-blank string without control characters."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string")
    if not value.strip():
        raise InputError(f"{name} must not be blank")
    if len(value) > max_length:
        raise InputError(f"{name} is longer than {max_length} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{name} must not contain control characters")
    return value


def boolean(value: Any, name: str, *, default: bool) -> bool:
    """true or false (JSON booleans only: "false" is a string, not a flag)."""
    if value is None:
        return default
    if type(value) is not bool:
        raise InputError(f"{name} must be true or false, got {type(value).__name__}")
    return value


def choice(
    value: Any, name: str, options: Iterable[str], *, default: str | None = None
) -> str | None:
    if value is None:
        return default
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        shown = value[:40] if isinstance(value, str) else value
        raise InputError(f"{name} must be one of {', '.join(options)}, got {shown!r}")
    return value


def is_valid_id(value: Any) -> bool:
    """Whether ``value`` is shaped like an id milady-lab hands out (safe in paths and URLs)."""
    return isinstance(value, str) and bool(_ID.fullmatch(value))
