"""Tool calls, function results and tool schemas recorded on an LLM call, in one form.

The trajectory spec names no tool fields, and writers differ (OpenAI's nested
``{"type": "function", "function": {...}}``, the flat ``{name, arguments}`` of the
Vercel AI SDK and elizaOS, Anthropic's ``input``, snake_case or camelCase, arguments as
an object or as JSON text). A call may carry:

* ``toolCalls`` / ``tool_calls`` — the calls the model made in its reply;
* ``toolResults`` / ``tool_results`` / ``functionResults`` / ``function_results`` — the
  results it was given (answers to the calls of the turn before);
* ``tools`` — the tool schemas it was offered.

Each is read leniently (an item without a name or content is left out, nothing here
raises) into one canonical JSON text, the frame's ``toolCalls`` / ``toolResults`` /
``tools`` columns:

* a call: ``{"name", "arguments", "id"?}`` (arguments an object when they parse);
* a result: ``{"content", "name"?, "id"?, "arguments"?}`` (content as text);
* a tool: ``{"type": "function", "function": {"name", "description"?, "parameters"?}}``.

``chat_turns`` turns them into the Hugging Face chat-template messages that the dataset
lines carry and that both training backends render with the base model's template.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Literal, NotRequired, TypedDict

import polars as pl

from ..api.schema import JsonObject

#: Accepted keys per field of one call record, in order of preference.
CALLS_KEYS = ("toolCalls", "tool_calls")
RESULTS_KEYS = ("toolResults", "tool_results", "functionResults", "function_results")
TOOLS_KEYS = ("tools",)

_NAME_KEYS = ("name", "toolName", "tool_name", "functionName", "function_name")
_ID_KEYS = ("id", "toolCallId", "tool_call_id", "callId", "call_id")
_ARGS_KEYS = ("arguments", "args", "input", "parameters")
_CONTENT_KEYS = ("content", "result", "output", "response")


class ToolCall(TypedDict):
    """A call the model made, canonical: arguments an object when they parse, else text."""

    name: str
    arguments: JsonObject | str
    id: NotRequired[str]


class ToolResult(TypedDict):
    """A result the call was given, canonical: content as text."""

    content: str
    name: NotRequired[str]
    id: NotRequired[str]
    arguments: NotRequired[JsonObject | str]


class ToolFunction(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: NotRequired[JsonObject]


class ToolSchema(TypedDict):
    """A tool the model was offered, in OpenAI function form."""

    type: Literal["function"]
    function: ToolFunction


class HfToolCall(TypedDict):
    """A tool call as Hugging Face chat templates read it."""

    type: Literal["function"]
    function: JsonObject
    id: NotRequired[str]


class ChatMessage(TypedDict):
    """One message of a dataset line (Hugging Face chat form): the tool fields only on
    the turns that have them."""

    role: str
    content: str
    tool_calls: NotRequired[list[HfToolCall]]
    name: NotRequired[str]
    tool_call_id: NotRequired[str]


def _pick(obj: JsonObject, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if obj.get(key) is not None:
            return obj[key]
    return None


def compact(value: Any) -> str:
    """JSON text without spaces: the canonical columns' encoding."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is None:
        return None
    try:
        return compact(value)
    except (TypeError, ValueError):
        return None


def _name(obj: JsonObject) -> str | None:
    name = _pick(obj, _NAME_KEYS)
    return name.strip() if isinstance(name, str) and name.strip() else None


def _arguments(value: Any) -> JsonObject | str:
    """An object when the value is one or JSON text of one; other text as it is."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict) else value
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[JsonObject]:
    """The objects of a field: a list, JSON text of one, or one lone object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, dict):
        value = [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _function(item: JsonObject) -> tuple[JsonObject, str] | None:
    """The object that names the function (OpenAI nests it under ``function``), and the name."""
    inner = item.get("function")
    source = inner if isinstance(inner, dict) else item
    name = _name(source)
    return None if name is None else (source, name)


def _call(item: JsonObject) -> ToolCall | None:
    if (found := _function(item)) is None:
        return None
    source, name = found
    out: ToolCall = {"name": name, "arguments": _arguments(_pick(source, _ARGS_KEYS))}
    call_id = _text(_pick(item, _ID_KEYS))
    if call_id:
        out["id"] = call_id
    return out


def _result(item: JsonObject) -> ToolResult | None:
    content = _text(_pick(item, _CONTENT_KEYS))
    if content is None:
        return None
    out: ToolResult = {"content": content}
    if (name := _name(item)) is not None:
        out["name"] = name
    if call_id := _text(_pick(item, _ID_KEYS)):
        out["id"] = call_id
    args = _pick(item, _ARGS_KEYS)
    if args is not None:
        out["arguments"] = _arguments(args)
    return out


def _tool(item: JsonObject) -> ToolSchema | None:
    if (found := _function(item)) is None:
        return None
    source, name = found
    fn: ToolFunction = {"name": name}
    if isinstance(source.get("description"), str):
        fn["description"] = source["description"]
    params = _pick(source, ("parameters", "input_schema", "inputSchema"))
    if isinstance(params, dict):
        fn["parameters"] = params
    return {"type": "function", "function": fn}


def _tools_items(value: Any) -> list[JsonObject]:
    """Tool schemas also come as ``{name: schema}`` (the AI SDK's ``tools`` object)."""
    if isinstance(value, dict) and "function" not in value and _name(value) is None:
        return [{"name": k, **v} for k, v in value.items() if isinstance(v, dict)]
    return _items(value)


def _canonical(
    read: Callable[[JsonObject], ToolCall | ToolResult | ToolSchema | None],
    items: Callable[[Any], list[JsonObject]] = _items,
) -> Callable[[Any], str | None]:
    def convert(value: Any) -> str | None:
        out = [x for x in map(read, items(value)) if x is not None]
        return compact(out) if out else None

    return convert


#: Recorded value → canonical JSON text, or None when nothing usable is there. The
#: canonical text reads back to itself, so both parse paths can apply them in any order.
tool_calls = _canonical(_call)
tool_results = _canonical(_result)
tool_schemas = _canonical(_tool, _tools_items)
#: The frame's tool columns and the function that gives each its canonical text.
TOOL_COLUMNS = {"toolCalls": tool_calls, "toolResults": tool_results, "tools": tool_schemas}


def has_tool_turns() -> pl.Expr:
    """A frame row whose call made tool calls or was given results (the tool turns of
    its example; ``tools`` alone adds none)."""
    return pl.col("toolCalls").is_not_null() | pl.col("toolResults").is_not_null()


def decoded(text: str | None) -> list[JsonObject] | None:
    """A canonical column value back as objects (for the API's trajectory detail)."""
    return json.loads(text) if text else None


# -- chat messages --------------------------------------------------------------------------
def _hf_call(call: ToolCall | ToolResult) -> HfToolCall:
    fn = {"name": call["name"], "arguments": call.get("arguments", {})}
    out: HfToolCall = {"type": "function", "function": fn}
    if "id" in call:
        out["id"] = call["id"]
    return out


def chat_turns(response: str | None, calls: str | None, results: str | None) -> list[ChatMessage]:
    """The turns after the user prompt, as Hugging Face chat templates read them.

    Results the call was given come first: the assistant turn that asked for them
    (rebuilt from their names and arguments, when they carry names), then one ``tool``
    message each. Last, the call's own reply: its text and its tool calls.
    """
    turns: list[ChatMessage] = []
    given: list[ToolResult] = json.loads(results) if results else []
    asked = [r for r in given if "name" in r]
    if asked:
        calls_made = [_hf_call(r) for r in asked]
        turns.append({"role": "assistant", "content": "", "tool_calls": calls_made})
    for r in given:
        msg: ChatMessage = {"role": "tool", "content": r["content"]}
        if "name" in r:
            msg["name"] = r["name"]
        if "id" in r:
            msg["tool_call_id"] = r["id"]
        turns.append(msg)
    reply: ChatMessage = {"role": "assistant", "content": response or ""}
    if calls:
        reply["tool_calls"] = [_hf_call(c) for c in json.loads(calls)]
    turns.append(reply)
    return turns


# -- text leaves, for the privacy pass --------------------------------------------------------
#: Item fields that name things rather than carry what was said: never redacted.
_LABELS = frozenset({"name", "id", "type"})


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)


def _replaced(value: Any, new: Iterator[str]) -> Any:
    if isinstance(value, str):
        return next(new)
    if isinstance(value, dict):
        return {k: _replaced(v, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v, new) for v in value]
    return value


def text_leaves(items: list[JsonObject]) -> Iterator[str]:
    """Every string said in canonical items (arguments, contents), depth first; names
    and ids are labels and are left out."""
    for item in items:
        for key, value in item.items():
            if key not in _LABELS:
                yield from _leaves(value)


def with_text_leaves(items: list[JsonObject], new: Iterator[str]) -> list[JsonObject]:
    """``items`` with the strings of ``text_leaves`` replaced, in order, by ``new``'s."""
    return [
        {k: v if k in _LABELS else _replaced(v, new) for k, v in item.items()} for item in items
    ]
