"""``json_edit``: a JSON file's text edited by key path, every other byte kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from milady_lab.models.handoff.json_edit import JsonText


def _edit(text: str, *ops: tuple[str, tuple[str, ...], Any]) -> str:
    doc = JsonText(text)
    for op, path, value in ops:
        doc.set(path, value) if op == "set" else doc.delete(path)
    json.loads(doc.text.removeprefix("\ufeff"))  # always still JSON
    return doc.text


@pytest.mark.parametrize(
    ("text", "ops", "expected"),
    [
        # A changed value replaces just its characters, wherever it is.
        (
            '{"a": {"b": 1}, "c": [1,2]}',
            [("set", ("a", "b"), "x")],
            '{"a": {"b": "x"}, "c": [1,2]}',
        ),
        ('{\n  "a": {"b":1}\n}\n', [("set", ("a", "b"), [1, 2])], '{\n  "a": {"b":[1, 2]}\n}\n'),
        # A new member follows the object's own layout: inline stays inline …
        ('{"a": {"b": 1}}', [("set", ("a", "c"), True)], '{"a": {"b": 1, "c": true}}'),
        ('{"a":{"b":1,"d":2}}', [("set", ("a", "c"), None)], '{"a":{"b":1,"d":2,"c":null}}'),
        ('{"a": {}}', [("set", ("a", "c"), 1)], '{"a": {"c": 1}}'),
        # … a multi-line object gets an indented line, nested objects laid out like the file.
        (
            '{\n    "a": 1\n}',
            [("set", ("b", "c"), "x")],
            '{\n    "a": 1,\n    "b": {\n        "c": "x"\n    }\n}',
        ),
        # Duplicate keys: the last one is the one JSON readers keep, so it is the one edited.
        ('{"a": 1, "a": 2}', [("set", ("a",), 3)], '{"a": 1, "a": 3}'),
        # Removing takes the comma with it; the last member leaves "{}".
        ('{"a": 1, "b": 2, "c": 3}', [("delete", ("b",), None)], '{"a": 1, "c": 3}'),
        ('{"a": 1, "b": 2}', [("delete", ("a",), None)], '{"b": 2}'),
        ('{\n  "a": {\n    "b": 1\n  }\n}', [("delete", ("a", "b"), None)], '{\n  "a": {}\n}'),
        ('{"a": 1}', [("delete", ("x", "y"), None)], '{"a": 1}'),
        # Non-ASCII, escapes and the byte-order mark stay as written.
        (
            '\ufeff{"é": "\\u00e9", "k": 1}',
            [("set", ("k",), "ü")],
            '\ufeff{"é": "\\u00e9", "k": "ü"}',
        ),
    ],
)
def test_edits_touch_only_what_changes(text: str, ops: list[Any], expected: str) -> None:
    assert _edit(text, *ops) == expected


def test_a_non_object_on_the_path_is_refused() -> None:
    with pytest.raises(ValueError, match=r"a\.b is not a JSON object"):
        JsonText('{"a": {"b": [1]}}').set(("a", "b", "c"), 1)
    with pytest.raises(ValueError, match="not a JSON object"):
        JsonText("[1]").set(("a",), 1)
