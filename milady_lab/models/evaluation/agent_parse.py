"""The agent's own reply parsers, ported from @elizaos/core 2.0.0-alpha.537, so the scores
judge a reply the way the agent reads it: no stricter, no looser.

A model's reply counts as well-formed only if the agent could act on it, and the agent
does not use a strict XML parser: ``parseKeyValueXml`` (core's ``utils.ts``) first tries
TOON (the 2.x templates' format; ``@toon-format/toon``'s ``decode`` plus a loose
line-by-line record, merged), then a forgiving scan for ``<response>`` or the first XML
block whose direct children become the keys (a raw ``<`` or ``&`` in text is fine).
Actions are read by the message service's ``extractPlannerActionNames`` (comma lists or
nested ``<action><name>…</name><params>…</params></action>``) and their params by
``parseActionParams``. Each function below is a line-by-line port of the function it names;
``tests/models/test_agent_parse.py`` runs the core's own code over a corpus of replies and
asserts both give the same answer. TOON documents are decoded by ``toon_format``, the
reference Python implementation of the spec core's bundled decoder follows.

JavaScript's ``undefined`` (an array hole left by an indexed TOON key) is ``MISSING`` while
records are merged; the public functions return plain JSON values (holes as None, as
``JSON.stringify`` writes them).
"""

from __future__ import annotations

import json
import re
from typing import Any

import json5
import toon_format

#: The ``Record<string, unknown>`` the parser answers; plain JSON values.
Record = dict[str, Any]


class _Missing:
    """JavaScript's ``undefined`` inside a merged record (never returned)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# JavaScript's `.` excludes these line terminators; Python's only excludes \n.
_DOT = r"[^\n\r\u2028\u2029]"
_TOON_LABEL = re.compile(r"TOON(?:\s+DOCUMENT)?[:\s-]*", re.IGNORECASE)
SIMPLE_TOON_KEY = re.compile(
    rf"([A-Za-z_][A-Za-z0-9_.-]*(?:\[[^\]\n]*\])?(?:\{{[^\n]*\}})?):(?:\s?({_DOT}*))?"
)
INDEXED_TOON_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)(?:\[(\d+)\])(?:\{([^}]*)\})?")
_FENCED = re.compile(r"```(?:toon|json)?\s*([\s\S]*?)\s*```", re.IGNORECASE)
_LINES = re.compile(r"\r?\n")
_TAG_CHAR = re.compile(r"[A-Za-z0-9_-]")
_SELF_CLOSING = re.compile(r"/\s*>\Z")
_LOOKS_XML = re.compile(r"<[/!?A-Za-z_][^>\n]*>")
_JSON_BLOCK = re.compile(r"```(?:json|json5)?\s*\r?\n?([\s\S]*?)\r?\n?```", re.IGNORECASE)
_LIST_KEYS = ("actions", "providers", "evaluators")
_RESERVED_XML_KEYS = frozenset({"actions", "thought", "text", "simple", "providers"})


def _js_trim(text: str) -> str:
    return text.strip(" \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                      "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")  # fmt: skip


def _lines(text: str) -> list[str]:
    return _LINES.split(text)


def is_record(value: Any) -> bool:
    return isinstance(value, dict)


# -- src/utils/toon.ts -----------------------------------------------------------------------
def strip_fenced_block(text: str) -> str:
    trimmed = _js_trim(text)
    fenced = _FENCED.fullmatch(trimmed[:100_000])
    return _js_trim(fenced.group(1)) if fenced else trimmed


def strip_optional_toon_label(text: str) -> str:
    lines = _lines(_js_trim(text))
    if len(lines) < 2 or not _TOON_LABEL.fullmatch(_js_trim(lines[0])):
        return _js_trim(text)
    return _js_trim("\n".join(lines[1:]))


def looks_like_toon_document(text: str) -> bool:
    if not text or "<response>" in text or "</response>" in text:
        return False
    lines = [line for line in _lines(_js_trim(text)) if _js_trim(line)]
    if not lines:
        return False
    first = _js_trim(lines[0])
    if _TOON_LABEL.fullmatch(first):
        return any(SIMPLE_TOON_KEY.fullmatch(_js_trim(line)) for line in lines[1:])
    if not SIMPLE_TOON_KEY.fullmatch(first):
        return False
    if len(lines) == 1:
        value = _js_trim(first.split(":", 1)[1])
        return not (value.startswith("{") and value.endswith("}"))
    fields = 0
    for line in lines:
        if SIMPLE_TOON_KEY.fullmatch(_js_trim(line)):
            fields += 1
        elif not re.match(r"[\t ]+", line):
            return False
    return fields > 0


def resolve_toon_candidate(text: str) -> str:
    trimmed = strip_optional_toon_label(strip_fenced_block(text))
    if looks_like_toon_document(trimmed):
        return trimmed
    lines = _lines(trimmed)
    for index, raw in enumerate(lines):
        line = _js_trim(raw)
        if not line or (not _TOON_LABEL.fullmatch(line) and not SIMPLE_TOON_KEY.fullmatch(line)):
            continue
        candidate = strip_optional_toon_label(_js_trim("\n".join(lines[index:])))
        if looks_like_toon_document(candidate):
            return candidate
    return trimmed


def try_parse_toon_value(text: str) -> Any:
    """The decoded TOON document, or None where the text is not one (or does not decode)."""
    trimmed = resolve_toon_candidate(text)
    if not looks_like_toon_document(trimmed):
        return None
    return toon_decode(trimmed)


def toon_decode(text: str) -> Any:
    """``decode`` as core's bundled ``@toon-format/toon`` answers: where a line is indented
    deeper than its place allows, the JS decoder stops there and returns what it read
    (``toon_format`` refuses the document), so the lines before it are decoded; None where
    the document does not decode."""
    lines = text.split("\n")
    while True:
        try:
            return toon_format.decode("\n".join(lines))
        except toon_format.ToonDecodeError as e:
            if e.msg != "Unexpected indentation" or not e.line or e.line > len(lines):
                return None
            lines = lines[: e.line - 1]
        except Exception:  # anything else the decoder raises: JS catches all
            return None


def try_parse_loose_toon_record(text: str) -> Record | None:
    trimmed = resolve_toon_candidate(text)
    if not looks_like_toon_document(trimmed):
        return None
    result: Record = {}
    key: str | None = None
    parsed_any = False
    for line in _lines(trimmed):
        match = SIMPLE_TOON_KEY.fullmatch(line)
        if match:
            key = _js_trim(match.group(1))
            result[key] = _js_trim(match.group(2) or "")
            parsed_any = True
            continue
        if key is None:
            if not _js_trim(line):
                continue
            return None
        previous = result[key] if isinstance(result[key], str) else ""
        continuation = line.rstrip()
        result[key] = f"{previous}\n{continuation}" if previous else continuation
    return result if parsed_any else None


def _trim_outer_quotes(text: str) -> str:
    t = _js_trim(text)
    if (t.startswith('"') and t.endswith('"')) or (t.startswith("'") and t.endswith("'")):
        return t[1:-1]
    return t


def _dedent_block(text: str) -> str:
    lines = _lines(text)
    filled = [line for line in lines if _js_trim(line)]
    if not filled:
        return _js_trim(text)
    indent = min(len(re.match(r"\s*", line).group(0)) for line in filled)  # type: ignore[union-attr]
    return _js_trim("\n".join(line[indent:] if _js_trim(line) else "" for line in lines))


def _split_csv_fields(text: str) -> list[str]:
    fields: list[str] = []
    current, quote, i = "", None, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and i + 1 < len(text):
                current += text[i + 1]
                i += 2
                continue
            if char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ",":
            fields.append(_js_trim(current))
            current = ""
        else:
            current += char
        i += 1
    fields.append(_js_trim(current))
    return fields


def _normalize_indexed(raw: Any, field_spec: str | None) -> Any:
    if field_spec is not None:
        names = [_js_trim(f) for f in field_spec.split(",") if _js_trim(f)]
        cells = _split_csv_fields(raw) if isinstance(raw, str) else []
        return {
            n: _trim_outer_quotes(cells[i] if i < len(cells) else "") for i, n in enumerate(names)
        }
    if isinstance(raw, str):
        block = _dedent_block(raw)
        nested = try_parse_loose_toon_record(block)
        if nested:
            normalized = normalize_structured_record(nested)
            return normalized if normalized is not None else _trim_outer_quotes(block)
        return _trim_outer_quotes(block)
    if isinstance(raw, list):
        return [_normalize_or(entry) if is_record(entry) else entry for entry in raw]
    if is_record(raw):
        return _normalize_or(raw)
    return raw


def _normalize_or(value: Record) -> Any:
    normalized = normalize_structured_record(value)
    return normalized if normalized is not None else value


def normalize_structured_record(value: Any) -> Record | None:
    """``normalizeStructuredRecord``: indexed keys (``facts[0]{a,b}``) to lists, the list
    keys split on commas, ``simple`` to a boolean."""
    if not is_record(value):
        return None
    result: Record = {}
    for key, raw in value.items():
        indexed = INDEXED_TOON_KEY.fullmatch(key)
        if indexed:
            base, index = indexed.group(1), int(indexed.group(2))
            values = list(result[base]) if isinstance(result.get(base), list) else []
            values.extend([MISSING] * (index + 1 - len(values)))
            values[index] = _normalize_indexed(raw, indexed.group(3))
            result[base] = values
            continue
        if key in _LIST_KEYS and isinstance(raw, list):
            result[key] = [_js_trim(e) if isinstance(e, str) else e for e in raw]
            continue
        if key in _LIST_KEYS and isinstance(raw, str):
            result[key] = (
                [_js_trim(e) for e in raw.split(",") if _js_trim(e)] if _js_trim(raw) else []
            )
            continue
        if key == "simple":
            result[key] = raw is True or (isinstance(raw, str) and _js_trim(raw).lower() == "true")
            continue
        result[key] = raw
    return result or None


def is_empty(value: Any) -> bool:
    """``isEmptyStructuredValue``: null, blank text, or lists and records of those."""
    if value is None or value is MISSING:
        return True
    if isinstance(value, list):
        return not value or all(is_empty(e) for e in value)
    if is_record(value):
        return not value or all(is_empty(e) for e in value.values())
    if isinstance(value, str):
        return not _js_trim(value)
    return False


def _merge(primary: Any, secondary: Any) -> Any:
    if is_empty(primary):
        return secondary
    if is_empty(secondary):
        return primary
    if isinstance(primary, list) and isinstance(secondary, list):
        size = max(len(primary), len(secondary))
        merged = [
            _merge(
                primary[i] if i < len(primary) else MISSING,
                secondary[i] if i < len(secondary) else MISSING,
            )
            for i in range(size)
        ]
        return [e for e in merged if e is not MISSING]
    if is_record(primary) and is_record(secondary):
        keys = list(primary) + [k for k in secondary if k not in primary]
        return {k: _merge(primary.get(k, MISSING), secondary.get(k, MISSING)) for k in keys}
    return primary


def _plain(value: Any) -> Any:
    """MISSING to None, as ``JSON.stringify`` writes an array hole."""
    if value is MISSING:
        return None
    if isinstance(value, list):
        return [_plain(e) for e in value]
    if is_record(value):
        return {k: _plain(e) for k, e in value.items() if e is not MISSING}
    return value


def _parameter_value(value: Any) -> Any:
    """``toActionParameterValue``: JSON values kept, anything else as a string."""
    if value is None or value is MISSING:
        return None
    if isinstance(value, list):
        return [_parameter_value(e) for e in value]
    if is_record(value):
        return {k: _parameter_value(e) for k, e in value.items()}
    return value


def parse_toon_action_params(value: Any) -> dict[str, Record]:
    parsed = try_parse_toon_value(value) if isinstance(value, str) else value
    if not is_record(parsed):
        return {}
    candidate = parsed["params"] if is_record(parsed.get("params")) else parsed
    out: dict[str, Record] = {}
    for action, params in candidate.items():
        if is_record(params) and params:
            out[_js_trim(action).upper()] = {k: _parameter_value(v) for k, v in params.items()}
    return out


# -- src/utils.ts: parseKeyValueXml --------------------------------------------------------
def _tag_at(text: str, start: int) -> tuple[str, int]:
    j = start
    while j < len(text) and _TAG_CHAR.fullmatch(text[j]):
        j += 1
    return text[start:j], j


def _balanced_blocks(text: str, *, first_only: bool) -> list[tuple[str, str, str]]:
    """The elements at the top of ``text`` as (tag, start tag, raw inner text): the scan
    ``findFirstXmlBlock``, ``extractDirectChildren`` and ``extractXmlChildren`` share (a
    same-named opening tag nests; an element never closed is skipped)."""
    out: list[tuple[str, str, str]] = []
    i, n = 0, len(text)
    while i < n:
        open_idx = text.find("<", i)
        if open_idx == -1:
            break
        if text.startswith(("</", "<!--", "<?"), open_idx):
            i = open_idx + 1
            continue
        tag, j = _tag_at(text, open_idx + 1)
        if not tag:
            i = open_idx + 1
            continue
        start_end = text.find(">", j)
        if start_end == -1:
            break
        start_text = text[open_idx : start_end + 1]
        if _SELF_CLOSING.search(start_text):
            i = start_end + 1
            continue
        close = f"</{tag}>"
        depth, search = 1, start_end + 1
        while depth > 0 and search < n:
            next_open, next_close = text.find(f"<{tag}", search), text.find(close, search)
            if next_close == -1:
                break
            if next_open != -1 and next_open < next_close:
                nested_end = text.find(">", next_open + 1)
                if nested_end == -1:
                    break
                if not _SELF_CLOSING.search(text[next_open : nested_end + 1]):
                    depth += 1
                search = nested_end + 1
            else:
                depth -= 1
                search = next_close + len(close)
        if depth != 0:
            i = start_end + 1
            continue
        out.append((tag, start_text, text[start_end + 1 : search - len(close)]))
        if first_only:
            return out
        i = search
    return out


def _unescape(text: str) -> str:
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'")):
        text = text.replace(entity, char)
    return text.replace("&amp;", "&")


def _xml_content(text: str) -> str | None:
    start = text.find("<response>")
    if start != -1:
        end = text.find("</response>", start + len("<response>"))
        if end != -1 and end > start + len("<response>"):
            return text[start + len("<response>") : end]
    if not _LOOKS_XML.search(text[:100_000]):
        return None
    first = _balanced_blocks(text, first_only=True)
    return first[0][2] if first else None


def parse_key_value_xml(text: str | None) -> Record | None:
    """``parseKeyValueXml``: the reply's fields, or None where the agent finds none."""
    if not text:
        return None
    merged = _merge_records(
        normalize_structured_record(try_parse_toon_value(text)),
        normalize_structured_record(try_parse_loose_toon_record(text)),
    )
    if merged:
        return _plain(merged)
    content = _xml_content(text)
    if content is None:
        return None
    result: Record = {}
    for key, _start, raw in _balanced_blocks(content, first_only=False):
        value = _js_trim(_unescape(raw))
        if key in _LIST_KEYS:
            singular = key[:-1]
            if value and re.search(rf"<{singular}[\s>/]", value):
                result[key] = value
            else:
                result[key] = [_js_trim(v) for v in value.split(",")] if value else []
        elif key == "simple":
            result[key] = value.lower() == "true"
        else:
            result[key] = value
    return result or None


def _merge_records(primary: Record | None, secondary: Record | None) -> Any:
    if not primary:
        return secondary
    if not secondary:
        return primary
    return _merge(primary, secondary)


# -- the message service: extractPlannerActionNames, parseActionParams ----------------------
def js_string(value: Any) -> str:
    """``String(value)`` for JSON values."""
    if value is None:
        return "null"
    if value is MISSING:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, list):
        return ",".join("" if e is None or e is MISSING else js_string(e) for e in value)
    if is_record(value):
        return "[object Object]"
    return str(value)


_NAME_ONLY = re.compile(r"<name\b[^>]*>([\s\S]*?)</name>", re.IGNORECASE)
_ACTION_ONLY = re.compile(r"<action\b[^>]*>([\s\S]*?)</action>", re.IGNORECASE)
_ACTION_OPEN = re.compile(r"<action\b[^>]*>", re.IGNORECASE)
_PARAMS_IN = re.compile(r"<params\b[^>]*>([\s\S]*?)</params>", re.IGNORECASE)


def unwrap_planner_identifier(value: str) -> str:
    trimmed = re.sub(r"^[\"'`]+|[\"'`]+$", "", _js_trim(value[:10_000]))
    if not trimmed:
        return ""
    name = _NAME_ONLY.fullmatch(trimmed)
    if name:
        return _js_trim(name.group(1))
    action = _ACTION_ONLY.fullmatch(trimmed)
    if action:
        inner = _js_trim(action.group(1))
        if not inner:
            return ""
        nested = _NAME_ONLY.search(inner)
        if nested:
            return _js_trim(nested.group(1))
        return trimmed if re.search(r"<[A-Za-z][^>]*>", inner) else inner
    if _ACTION_OPEN.match(trimmed):
        loose = _NAME_ONLY.search(trimmed)
        if loose:
            return _js_trim(loose.group(1))
    return trimmed


def _standalone_params(names: list[str], parsed: Record) -> str:
    fragments = []
    for name in names:
        upper = name.upper()
        key = next((k for k in parsed if k.upper() == upper), None)
        value = parsed.get(key) if key is not None else None
        reserved = key is None or key.lower() in _RESERVED_XML_KEYS
        if not reserved and isinstance(value, str) and "<" in value:
            fragments.append(f"<{upper}>{value}</{upper}>")
    return "\n".join(fragments)


def extract_planner_action_names(parsed: Record) -> list[str]:
    """``extractPlannerActionNames``: the action names, in order. Like the original it
    fills an empty ``params`` field of ``parsed`` from params written inside the actions."""
    actions = parsed.get("actions")
    if isinstance(actions, str):
        if _ACTION_OPEN.search(actions):
            entries: list[tuple[str, str | None]] = []
            for match in _ACTION_ONLY.finditer(actions):
                inner = match.group(1)
                name_match, params_match = _NAME_ONLY.search(inner), _PARAMS_IN.search(inner)
                name = unwrap_planner_identifier(
                    name_match.group(1) if name_match else match.group(0)
                )
                if name:
                    entries.append(
                        (name, _js_trim(params_match.group(1)) if params_match else None)
                    )
            if entries:
                inline = "\n".join(f"<{n.upper()}>{p}</{n.upper()}>" for n, p in entries if p)
                if inline and parsed.get("params", MISSING) == "":
                    parsed["params"] = inline
                return [n for n, _ in entries]
        names = [unwrap_planner_identifier(a) for a in actions.split(",")]
        names = [n for n in names if n]
        if parsed.get("params", MISSING) == "":
            assembled = _standalone_params(names, parsed)
            if assembled:
                parsed["params"] = assembled
        return names
    if isinstance(actions, list):
        return [n for n in (unwrap_planner_identifier(js_string(a)) for a in actions) if n]
    return []


_JS_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Infinity")
_JS_RADIX = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")


def js_number(text: str) -> float | int | None:
    """``Number(text)`` where it is a number; None where JavaScript says NaN."""
    t = _js_trim(text)
    if not t:
        return 0
    radix = _JS_RADIX.fullmatch(t)
    if radix:
        return int(t, 0)
    if not _JS_DECIMAL.fullmatch(t):
        return None
    value = float(t.replace("Infinity", "inf"))
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _param_value(value: str) -> Any:
    """``parseParamValue``: booleans, null and numbers from a param's text."""
    if not value:
        return None
    lower = value.lower()
    if lower in ("true", "false"):
        return lower == "true"
    if lower == "null":
        return None
    number = js_number(value)
    if number is not None and _js_trim(value):
        return number
    return value


def _xml_children(xml: str) -> list[tuple[str, str]]:
    """``extractXmlChildren``: (key, trimmed raw inner text); ``<param name="x">`` keyed x."""
    out = []
    for tag, start_text, raw in _balanced_blocks(xml, first_only=False):
        key = tag
        if tag.lower() == "param":
            attr = re.search(
                r"\bname\s*=\s*(?:\"([^\"]+)\"|'([^']+)'|([A-Za-z0-9_-]+))", start_text
            )
            candidate = attr and (attr.group(1) or attr.group(2) or attr.group(3))
            key = candidate or tag
        out.append((key, _js_trim(raw)))
    return out


def parse_json_object_from_text(text: str) -> Any:
    """``parseJSONObjectFromText``: a JSON5 value in the text (or its fence), not a list."""
    if not text:
        return None
    safe = text[:100_000]
    match = _JSON_BLOCK.search(safe)
    try:
        value = json5.loads(_js_trim(match.group(1)) if match else _js_trim(safe))
    except Exception:  # json5 raises ValueError and friends; JS catches all
        return None
    return None if isinstance(value, list) or not value else value


def _params_of(xml: str) -> Record:
    return {key: _param_value(value) for key, value in _xml_children(xml)}


def parse_action_params(value: Any) -> dict[str, Record]:
    """``parseActionParams``: each action's params, keyed by its upper-cased name."""
    toon = parse_toon_action_params(value)
    if toon:
        return toon
    if not value or not isinstance(value, str):
        return {}
    children = _xml_children(value)
    elements = [v for k, v in children if k == "action"]
    out: dict[str, Record] = {}
    if elements:
        for element in elements:
            parts = _xml_children(element)
            name = next((v for k, v in parts if k == "name"), None)
            params = next((v for k, v in parts if k == "params"), None)
            if name is None or not _js_trim(name).upper():
                continue
            found = _params_of(params) if params is not None else {}
            if found:
                out[_js_trim(name).upper()] = found
        return out
    for action, inner in children:
        found = _params_of(inner)
        if not found:
            structured = parse_json_object_from_text(inner)
            if structured is None:
                structured = try_parse_toon_value(inner)
            if is_record(structured):
                found = {k: _parameter_value(v) for k, v in structured.items()}
        if found:
            out[action.upper()] = found
    return out


def agent_reading(reply: str) -> Record:
    """What the core makes of one reply: the parsed fields, the action names and the
    params by action, as the JS harness in the tests reports them."""
    parsed = parse_key_value_xml(reply)
    if parsed is None:
        return {"parsed": None, "actions": [], "params": {}}
    working = json.loads(json.dumps(parsed))
    names = extract_planner_action_names(working)
    return {
        "parsed": parsed,
        "actions": names,
        "params": parse_action_params(working.get("params")),
    }
