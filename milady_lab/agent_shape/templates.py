# ruff: noqa: E501  (the template as published, one line per line)
"""The templates the agent-shaped data fills: the ones elizaOS's runtime sends.

``prompts`` is the published Python module of ``@elizaos/prompts@2.0.0-alpha.537``,
verbatim. In that release five of its templates lag the package's own sources
(``prompts/*.txt``, which its TypeScript build and ``@elizaos/core``'s runtime use):
``MESSAGE_HANDLER_TEMPLATE`` there still asks for XML (``<response><actions><action>…``)
while the runtime asks for TOON. The message handler's template below is the package's
``prompts/message_handler.txt`` (MIT License, Copyright (c) 2025 Shaw Walters and elizaOS
Contributors), so the replies follow the format a real 2.x agent is asked for;
``tests/agent_shape`` checks it against the package.
"""

from __future__ import annotations

from .prompts import (
    IMAGE_DESCRIPTION_TEMPLATE,
    MULTI_STEP_DECISION_TEMPLATE,
    POST_CREATION_TEMPLATE,
    REFLECTION_TEMPLATE,
    REPLY_TEMPLATE,
    SHOULD_RESPOND_TEMPLATE,
)

__all__ = [
    "IMAGE_DESCRIPTION_TEMPLATE",
    "MESSAGE_HANDLER_TEMPLATE",
    "MULTI_STEP_DECISION_TEMPLATE",
    "POST_CREATION_TEMPLATE",
    "REFLECTION_TEMPLATE",
    "REPLY_TEMPLATE",
    "SHOULD_RESPOND_TEMPLATE",
]

#: ``prompts/message_handler.txt`` of @elizaos/prompts@2.0.0-alpha.537 (what core sends).
MESSAGE_HANDLER_TEMPLATE = """task: Generate dialog and actions for {{agentName}}.

context:
{{providers}}

rules[12]:
- think briefly, then respond
- always include a thought field, even for direct replies
- actions execute in listed order
- if replying without another grounded state/action query, REPLY goes first
- use IGNORE or STOP only by themselves
- in group conversations, choose IGNORE if the latest message is addressed to someone else and not to {{agentName}}
- include providers only when needed
- use provider_hints from context when present instead of restating the same rules
- if an action needs inputs, include them inside that action's params block
- if a required param is unknown, ask for clarification in text
- for live status questions or remaining-work queries, do not answer from recent conversation alone; call the relevant action/provider to refresh state, and do not pair it with a speculative REPLY that guesses the result
- when an action will fetch the state and produce the final grounded answer, do not add REPLY just to say "checking", "let me look", or similar filler; use the action alone and leave text empty
- for LifeOps create requests with a clear defaultable habit or natural window, such as drinking water, stretch breaks during the day, weekday-after-lunch Invisalign checks, or brushing when waking up and before bed, call LIFE instead of asking for exact clock times unless the user explicitly asks for precise scheduling

control_actions:
- STOP means the task is done and the agent should end the run without executing more actions
- STOP is a terminal control action even if it is not listed in available actions

fields[5]{name,meaning}:
- thought | short plan
- actions | ordered list of action entries, each with a name and optional params
- providers | comma-separated provider names, or empty
- text | next message for {{agentName}}
- simple | true or false

formatting:
- wrap multi-line code in fenced code blocks
- use inline backticks for short code identifiers

output:
TOON only. Return exactly one TOON document with the keys above. No prose before or after it. No <think>. No XML, no JSON, no markdown fences.

Example:
thought: Reply briefly. No extra providers needed.
actions[1]:
  - name: REPLY
providers:
text: Your message here
simple: true"""
