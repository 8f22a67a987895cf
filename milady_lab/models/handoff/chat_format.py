"""The model's chat format, as Ollama needs it: a Go template and the stop strings.

Ollama renders prompts with Go's ``text/template`` over ``.Messages``; the model was
trained on prompts from its tokenizer's Jinja chat template. The two must produce the
same text, or the agent talks to the model in a format it never saw.

The format is recognised by its markers (ChatML as SmolLM2 and Qwen use it, Llama 3's
header format, Gemma's turns), then its variable parts are read off the Jinja template
by rendering probe conversations: a default system prompt (SmolLM2's "You are a
helpful AI assistant named SmolLM…", Qwen 2.5's "You are Qwen…"), a fixed lead inside
the system turn (Llama 3.1's "Cutting Knowledge Date…"), whether a system turn exists at
all (Gemma 2 has none: Ollama sends it as a user turn). Finally every probe is
rendered both ways and compared; any difference refuses the translation with a clear
message rather than import a model the agent would prompt wrongly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import InputError

Message = dict[str, str]

_S, _U, _A, _U2 = "⟪system probe⟫", "⟪user probe⟫", "⟪assistant probe⟫", "⟪second user⟫"
#: Conversations each derived format must render exactly like the Jinja template.
PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": _U},),
    ({"role": "system", "content": _S}, {"role": "user", "content": _U}),
    (
        {"role": "user", "content": _U},
        {"role": "assistant", "content": _A},
        {"role": "user", "content": _U2},
    ),
    (
        {"role": "system", "content": _S},
        {"role": "user", "content": _U},
        {"role": "assistant", "content": _A},
        {"role": "user", "content": _U2},
    ),
)


@dataclass(frozen=True)
class _Family:
    name: str
    marker: str
    opens: dict[str, str]
    close: str
    generation: str
    stop: tuple[str, ...]


_FAMILIES = (
    _Family(
        "chatml",
        "<|im_start|>",
        {r: f"<|im_start|>{r}\n" for r in ("system", "user", "assistant")},
        "<|im_end|>\n",
        "<|im_start|>assistant\n",
        ("<|im_start|>", "<|im_end|>"),
    ),
    _Family(
        "llama3",
        "<|start_header_id|>",
        {
            r: f"<|start_header_id|>{r}<|end_header_id|>\n\n"
            for r in ("system", "user", "assistant")
        },
        "<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    _Family(
        "gemma",
        "<start_of_turn>",
        {"system": "<start_of_turn>user\n", "user": "<start_of_turn>user\n"}
        | {"assistant": "<start_of_turn>model\n"},
        "<end_of_turn>\n",
        "<start_of_turn>model\n",
        ("<end_of_turn>",),
    ),
)


@dataclass(frozen=True)
class ChatFormat:
    """One chat format: how each turn opens and closes, and what the model adds itself."""

    family: str
    opens: dict[str, str]
    close: str
    generation: str
    stop: tuple[str, ...]
    default_system: str | None = None  # system turn content when the caller gives none
    system_lead: str = ""  # fixed text before the caller's system content

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text (without BOS) that Ollama's template gives for ``messages``."""
        out: list[str] = []
        if messages and messages[0]["role"] != "system" and self.default_system is not None:
            out.append(self.opens["system"] + self.default_system + self.close)
        for i, m in enumerate(messages):
            last = i == len(messages) - 1
            role = m["role"]
            if role not in self.opens:
                continue
            lead = self.system_lead if role == "system" else ""
            out.append(self.opens[role] + lead + m["content"])
            if not (last and role == "assistant"):
                out.append(self.close)
            if last and role != "assistant":
                out.append(self.generation)
        return "".join(out)

    def go_template(self) -> str:
        """The same rendering as an Ollama (Go ``text/template``) template."""
        parts = []
        if self.default_system is not None:
            parts.append(
                '{{- if and .Messages (ne (index .Messages 0).Role "system") }}'
                + _go(self.opens["system"] + self.default_system + self.close)
                + "{{ end }}"
            )
        parts.append("{{- range $i, $_ := .Messages }}")
        parts.append("{{- $last := eq (len (slice $.Messages $i)) 1 }}")
        branches = []
        for role in ("system", "user", "assistant"):
            lead = self.system_lead if role == "system" else ""
            close = (
                "{{ if not $last }}" + _go(self.close) + "{{ end }}"
                if role == "assistant"
                else _go(self.close)
            )
            branches.append(
                f'if eq .Role "{role}" }}}}'
                + _go(self.opens[role] + lead)
                + "{{ .Content }}"
                + close
            )
        parts.append("{{- " + "{{- else ".join(branches) + "{{- end }}")
        parts.append(
            '{{- if and $last (ne .Role "assistant") }}' + _go(self.generation) + "{{ end }}"
        )
        parts.append("{{- end }}")
        return "".join(parts)

    def ollama_parameters(self) -> dict[str, list[str]]:
        return {"stop": list(self.stop)}


def _go(text: str) -> str:
    """A literal as a Go template action: no text is ever taken for markup or trimmed."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def chat_format(tokenizer: Any) -> ChatFormat:
    """The tokenizer's chat format, or a 400 saying why it cannot be translated."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template.strip():
        raise InputError("the base model's tokenizer has no chat template; Ollama needs one")
    family = next((f for f in _FAMILIES if f.marker in template), None)
    if family is None:
        raise InputError(
            "cannot translate this model's chat template for Ollama: it is not ChatML, "
            "Llama 3 or Gemma (use models export --format gguf and write the template yourself)"
        )
    render = _jinja(tokenizer)
    alone = render([{"role": "user", "content": _U}], False)
    with_system = render(
        [{"role": "system", "content": _S}, {"role": "user", "content": _U}], False
    )
    default = _system_content(alone, family)
    lead = ""
    if with_system is not None:
        given = _system_content(with_system, family)
        if given is None or _S not in given:
            raise _untranslatable("it places the system prompt outside a system turn")
        lead = given[: given.index(_S)]
        if not given.endswith(_S):
            raise _untranslatable("it adds text after the system prompt")
    fmt = ChatFormat(
        family=family.name,
        opens=family.opens,
        close=family.close,
        generation=family.generation,
        stop=family.stop,
        default_system=default,
        system_lead=lead,
    )
    for probe in PROBES:
        expected = render(list(probe), True)
        if expected is None:
            continue  # the template refuses this shape (Gemma 2 and system): Ollama's way stands
        if fmt.render(probe) != expected:
            raise _untranslatable(
                f"a {len(probe)}-message conversation renders differently "
                f"({expected[:120]!r} vs {fmt.render(probe)[:120]!r})"
            )
    return fmt


def _untranslatable(why: str) -> InputError:
    return InputError(f"cannot translate this model's chat template for Ollama: {why}")


def _jinja(tokenizer: Any) -> Any:
    bos = getattr(tokenizer, "bos_token", None)
    strip_bos = isinstance(bos, str) and bos and "bos_token" in tokenizer.chat_template

    def render(messages: list[Message], generation: bool) -> str | None:
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation
            )
        except Exception:  # the template's own raise_exception (e.g. no system role)
            return None
        if strip_bos and text.startswith(bos):
            text = text[len(bos) :]  # llama.cpp adds BOS itself when tokenizing
        return text

    return render


def _system_content(text: str | None, family: _Family) -> str | None:
    """The content of a leading system turn in ``text``, or None when it has none."""
    if text is None or family.name == "gemma":
        return None
    opening = family.opens["system"]
    if not text.startswith(opening):
        return None
    end = text.find(family.close, len(opening))
    return None if end < 0 else text[len(opening) : end]
