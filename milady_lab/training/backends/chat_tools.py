"""Conversations with tool calls, in the form the base model's chat template understands.

Dataset lines carry tool use as Hugging Face chat templates read it: an assistant turn
with ``tool_calls``, ``tool`` messages with the results, the offered schemas as
``tools`` (``trajectories.tools``). A template that renders these (Qwen2.5, Llama 3.1,
Mistral, Hermes …) gets them as they are. One that does not (SmolLM2's plain ChatML
drops ``tool_calls`` and ``tools``) would silently train the model on replies with
their tool calls cut out, so for it each missing piece is written as text in the
Hermes convention those templates themselves use: ``<tool_call>{json}</tool_call>`` in
the assistant's content, ``<tool_response>`` turns, the schemas in ``<tools>`` in the
system prompt. What a template understands is found once per tokenizer by rendering a
probe conversation and looking for each piece in the output.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ...api.schema import JsonObject
from ...datasets.files import Message

_PROBE = "milady_probe_7f3a"
T = TypeVar("T")
#: What a chat template raises on a conversation it refuses (``raise_exception``).
TemplateError: type[Exception]
try:
    from jinja2 import TemplateError
except ImportError:  # pragma: no cover - transformers always brings jinja2
    TemplateError = Exception


@dataclass(frozen=True)
class Understands:
    """Which tool pieces a chat template renders."""

    calls: bool
    results: bool
    tool_role: bool  # a ``tool`` message renders at all (else results become user turns)
    schemas: bool


_CACHE: weakref.WeakKeyDictionary[Any, Understands] = weakref.WeakKeyDictionary()


def _renders(tokenizer: Any, messages: list[Message], needle: str, **kw: Any) -> bool:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **kw)
    except Exception:  # a template that rejects the shape does not understand it
        return False
    return isinstance(text, str) and needle in text


def understands(tokenizer: Any) -> Understands:
    """What ``tokenizer``'s template renders of tool use (probed once per tokenizer)."""
    found = _CACHE.get(tokenizer)
    if found is None:
        call = {"type": "function", "function": {"name": f"{_PROBE}_fn", "arguments": {}}}
        user = {"role": "user", "content": "hi"}
        asked = {"role": "assistant", "content": "", "tool_calls": [call]}
        result = {"role": "tool", "name": f"{_PROBE}_fn", "content": f"{_PROBE}_out"}
        schema = {"type": "function", "function": {"name": f"{_PROBE}_schema", "parameters": {}}}
        found = Understands(
            calls=_renders(tokenizer, [user, asked], f"{_PROBE}_fn"),
            results=_renders(tokenizer, [user, asked, result], f"{_PROBE}_out"),
            tool_role=_renders(tokenizer, [user, {"role": "tool", "content": _PROBE}], _PROBE),
            schemas=_renders(tokenizer, [user], f"{_PROBE}_schema", tools=[schema]),
        )
        _CACHE[tokenizer] = found
    return found


def _call_text(call: JsonObject) -> str:
    fn = call.get("function", call)
    body = {"name": fn.get("name"), "arguments": fn.get("arguments", {})}
    return f"<tool_call>\n{json.dumps(body, ensure_ascii=False)}\n</tool_call>"


def _folded_call(m: Message) -> Message:
    calls = "\n".join(_call_text(c) for c in m["tool_calls"])
    content = f"{m['content']}\n{calls}" if m.get("content") else calls
    return {"role": "assistant", "content": content}


def _folded_result(m: Message, as_user: bool) -> Message:
    if not as_user:
        return {"role": "tool", "content": m.get("content", "")}
    return {"role": "user", "content": f"<tool_response>\n{m.get('content', '')}\n</tool_response>"}


def _with_schemas(messages: list[Message], tools: list[Any]) -> list[Message]:
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    note = f"You may call these tools:\n<tools>\n{listed}\n</tools>"
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _uses_tools(messages: list[Message], tools: list[Any] | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def render_tool_use(
    tokenizer: Any,
    messages: list[Message],
    tools: list[Any] | None,
    render: Callable[[list[Message], list[Any] | None], T],
) -> T:
    """``render(messages, tools)`` with the tool use in the form ``tokenizer``'s template
    understands: as it is where the template renders a piece, written as text where it
    does not. A template may still refuse one conversation (Llama 3's takes one tool call
    per turn): that one is rendered with all its tool use as text. A template that
    refuses the text too raises its ``TemplateError``."""
    if not _uses_tools(messages, tools):
        return render(messages, None)
    can = understands(tokenizer)
    try:
        return render(*_adapted(messages, tools, can))
    except TemplateError:
        return render(*_adapted(messages, tools, Understands(False, False, can.tool_role, False)))


def _adapted(
    messages: list[Message], tools: list[Any] | None, can: Understands
) -> tuple[list[Message], list[Any] | None]:
    out = []
    for m in messages:
        if m.get("tool_calls") and not can.calls:
            out.append(_folded_call(m))
        elif m["role"] == "tool" and not can.results:
            out.append(_folded_result(m, as_user=not can.tool_role))
        else:
            out.append(m)
    if tools and not can.schemas:
        return _with_schemas(out, tools), None
    return out, tools or None
