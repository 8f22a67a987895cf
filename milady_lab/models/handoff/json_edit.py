"""Edit a JSON file's text in place: the few keys activation writes, nothing else.

The agent's config is the user's file, laid out by hand: an object written on one
line inside an indented file (``"env": {"A": "1"}``) must stay on one line, a file
indented with tabs keeps its tabs. Re-dumping the parsed object cannot promise that,
so the edit works on the text: a changed value replaces exactly the characters of
the old one; a new member is written after the object's last member in that
object's own layout (its indentation, separators and line ends, or inline when the
object is inline); a removed member takes its comma with it. Every other byte stays.

Only valid JSON is edited (callers parse it first and refuse anything else), so the
scanner below can be small: it records where each object member's key and value lie
and leaves non-object values to ``json.JSONDecoder.raw_decode``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class JsonStyle:
    """How a JSON file is laid out, so a rewrite looks like the user's own file."""

    indent: int | str | None = 2  # spaces, "\t", or None for one line
    item_sep: str = ","
    key_sep: str = ": "
    ensure_ascii: bool = False
    trailing_newline: bool = True

    @classmethod
    def detect(cls, text: str) -> JsonStyle:
        """The style that reproduces ``text`` exactly when there is one, else a close guess."""
        body = text.removeprefix("\ufeff").strip()
        trailing = text.endswith("\n")
        indent: int | str | None = None
        m = re.search(r"[\[{][ \t]*\r?\n([ \t]*)\S", body)
        if m is not None:
            ws = m.group(1)
            indent = "\t" if ws.startswith("\t") else len(ws)
        obj = json.loads(body)
        candidates = [
            cls(indent, item, key, ascii_, trailing)
            for item in ((",",) if indent is not None else (",", ", "))
            for key in (": ", ":", " : ")
            for ascii_ in (False, True)
        ]
        for style in candidates:
            if style.dump(obj).rstrip("\n") == body:
                return style
        # Hand-edited files: the separators seen first, raw non-ASCII kept as it is.
        km = re.search(r'"(?:[^"\\]|\\.)*"(\s*:\s*)', body)
        key_sep = km.group(1).replace("\n", "").replace("\t", " ") if km else ": "
        item_sep = "," if indent is not None or not re.search(r",\s", body) else ", "
        ensure_ascii = not any(ord(c) > 127 for c in body) and "\\u" in body
        return cls(indent, item_sep, key_sep, ensure_ascii, trailing)

    def dump(self, obj: Any) -> str:
        out = json.dumps(
            obj,
            indent=self.indent,
            separators=(self.item_sep, self.key_sep),
            ensure_ascii=self.ensure_ascii,
        )
        return out + ("\n" if self.trailing_newline else "")


@dataclass
class _Member:
    key: str
    start: int  # the key's opening quote
    key_end: int  # just after the key's closing quote
    value_start: int
    value_end: int
    obj: _Object | None  # the value, when it is an object


@dataclass
class _Object:
    start: int  # "{"
    end: int  # just after "}"
    members: list[_Member] = field(default_factory=list)

    def get(self, key: str) -> _Member | None:
        """The member ``json.loads`` keeps for ``key``: the last one."""
        found = [m for m in self.members if m.key == key]
        return found[-1] if found else None


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    assert m is not None
    return m.end()


def _parse_object(text: str, i: int) -> _Object:
    obj = _Object(i, i)
    j = _skip(text, i + 1)
    while text[j] != "}":
        key, key_end = scanstring(text, j + 1)
        colon = _skip(text, key_end)
        value_start = _skip(text, colon + 1)
        child, value_end = _parse_value(text, value_start)
        obj.members.append(_Member(key, j, key_end, value_start, value_end, child))
        j = _skip(text, value_end)
        if text[j] == ",":
            j = _skip(text, j + 1)
    obj.end = j + 1
    return obj


def _parse_value(text: str, i: int) -> tuple[_Object | None, int]:
    if text[i] == "{":
        obj = _parse_object(text, i)
        return obj, obj.end
    _value, end = _DECODER.raw_decode(text, i)
    return None, end


class JsonText:
    """A JSON object document as text, edited by key path with its layout kept."""

    def __init__(self, text: str, style: JsonStyle | None = None) -> None:
        self.text = text
        self.style = style or JsonStyle.detect(text)
        self.newline = "\r\n" if "\r\n" in text else "\n"

    def _root(self) -> _Object:
        start = _skip(self.text, len(self.text) - len(self.text.lstrip("\ufeff")))
        if self.text[start : start + 1] != "{":
            raise ValueError("the document is not a JSON object")
        return _parse_object(self.text, start)

    def set(self, path: tuple[str, ...], value: Any) -> None:
        """Set ``path`` to ``value``, creating missing objects on the way."""
        obj = self._root()
        for i, key in enumerate(path):
            member = obj.get(key)
            rest = path[i + 1 :]
            if member is None:
                new: Any = value
                for k in reversed(rest):
                    new = {k: new}
                self._insert(obj, key, new)
                return
            if not rest:
                indent = self._line_indent(member.start)
                self._splice(member.value_start, member.value_end, self._render(value, indent))
                return
            if member.obj is None:
                raise ValueError(f"{'.'.join(path[: i + 1])} is not a JSON object")
            obj = member.obj

    def delete(self, path: tuple[str, ...]) -> None:
        """Remove the member at ``path`` (and its comma); nothing when it is absent."""
        obj = self._root()
        for key in path[:-1]:
            member = obj.get(key)
            if member is None or member.obj is None:
                return
            obj = member.obj
        members = obj.members
        for i in reversed(range(len(members))):
            if members[i].key != path[-1]:
                continue
            if len(members) == 1:
                self._splice(obj.start + 1, obj.end - 1, "")
            elif i > 0:
                self._splice(members[i - 1].value_end, members[i].value_end, "")
            else:
                self._splice(members[0].start, members[1].start, "")
            return

    # -- layout -------------------------------------------------------------------------------
    def _splice(self, start: int, end: int, new: str) -> None:
        self.text = self.text[:start] + new + self.text[end:]

    def _line_indent(self, pos: int) -> str | None:
        """The whitespace before ``pos`` on its line, or None when text precedes it."""
        line_start = self.text.rfind("\n", 0, pos) + 1
        lead = self.text[line_start:pos]
        return lead if lead.strip() == "" else None

    def _render(self, value: Any, indent: str | None) -> str:
        """``value`` as JSON: laid out like the file when ``indent`` (the member's own
        line indentation) is known, else on one line with the file's separators."""
        st = self.style
        if indent is None or st.indent is None or not isinstance(value, dict | list):
            key_sep = st.key_sep if st.indent is None else st.key_sep.rstrip() + " "
            item_sep = st.item_sep if st.indent is None else ", "
            return json.dumps(value, separators=(item_sep, key_sep), ensure_ascii=st.ensure_ascii)
        out = json.dumps(
            value, indent=st.indent, separators=(",", st.key_sep), ensure_ascii=st.ensure_ascii
        )
        return out.replace("\n", self.newline + indent)

    def _insert(self, obj: _Object, key: str, value: Any) -> None:
        """A new last member of ``obj``, laid out like its siblings."""
        name = json.dumps(key, ensure_ascii=self.style.ensure_ascii)
        members = obj.members
        if not members:  # "{}" stays on one line
            body = f"{name}{self.style.key_sep}{self._render(value, None)}"
            self._splice(obj.start, obj.end, "{" + body + "}")
            return
        last = members[-1]
        key_sep = self.text[last.key_end : last.value_start]
        indent = self._line_indent(last.start)
        multiline = "\n" in self.text[obj.start : obj.end] and indent is not None
        if multiline:
            sep = "," + self.newline + (indent or "")
        elif len(members) > 1:
            sep = self.text[members[-2].value_end : last.start]
        else:
            sep = "," + (" " if key_sep.endswith(" ") else "")
        rendered = self._render(value, indent if multiline else None)
        self._splice(last.value_end, last.value_end, f"{sep}{name}{key_sep}{rendered}")
