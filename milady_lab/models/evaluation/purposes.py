"""Per-purpose scores, each beside the score a constant answer would get.

An agent's calls do different jobs, and one pooled figure hides what matters: a model that
answers REPLY to every call scores as well as the share of REPLY in the references, which
on real agent data is most of them. So each call purpose gets the measure that fits it:

* **decision** (``should_respond``): ``decisionAccuracy``, the share of replies whose
  ``action`` (RESPOND / IGNORE / STOP; REPLY counts as RESPOND, as core's classifier
  reads it) equals the reference's;
* **reply** (``response``, ``reply``, the message handler): ``formatValid``,
  ``actionAccuracy`` (the action names, each one the prompt offered) and
  ``paramsAccuracy`` (the params of each action the reference gives params to);
* **validity** (reflection, planning and the rest): ``formatValid``.

Beside each accuracy stands its majority-class baseline (``…Baseline``: always answering
the most common decision or action set of the references), and action accuracy on the
examples whose reference is not the majority one stands apart (``minorityActionAccuracy``),
so "always REPLY" shows as what it is. ``unofferedActions`` counts replies taking an action
the prompt did not offer, ``placeholderEchoes`` replies copying a template placeholder.
Every figure is over the examples where it applies; None where none does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import scores

DECISIONS = ("RESPOND", "IGNORE", "STOP")
_DECISION_ALIASES = {"REPLY": "RESPOND"}
DECISION_PURPOSES = frozenset({"should_respond", "should_respond_with_context"})
REPLY_PURPOSES = frozenset({"response", "reply", "message_handler", "post_action_decision"})


def purpose_kind(purpose: str) -> str:
    """``"decision"``, ``"reply"`` or ``"validity"``: which measure fits the purpose."""
    name = (purpose or "").strip().lower()
    if name in DECISION_PURPOSES:
        return "decision"
    if name in REPLY_PURPOSES:
        return "reply"
    return "validity"


def decision(fields: Mapping[str, Any] | None) -> str | None:
    """The should-respond decision a reply's fields carry; None where it has none."""
    raw = (fields or {}).get("action")
    if not isinstance(raw, str):
        return None
    value = raw.strip().upper()
    value = _DECISION_ALIASES.get(value, value)
    return value if value in DECISIONS else None


@dataclass(frozen=True)
class ExampleScore:
    """One reply scored against its reference, as its purpose asks."""

    purpose: str
    kind: str
    format_valid: bool | None
    placeholders: tuple[str, ...] = ()
    decision: str | None = None
    expected_decision: str | None = None
    actions: tuple[str, ...] = ()
    expected_actions: tuple[str, ...] = ()
    action_match: bool | None = None
    params_match: bool | None = None
    unoffered: tuple[str, ...] = field(default=())

    @property
    def decision_match(self) -> bool | None:
        if self.expected_decision is None:
            return None
        return self.decision == self.expected_decision


def score_example(reply: str, reference: str, prompt: str | None, purpose: str) -> ExampleScore:
    """Score one reply the way its purpose asks (pure: the same inputs, the same answer)."""
    kind = purpose_kind(purpose)
    got, ref = scores.read_reply(reply), scores.read_reply(reference)
    valid = scores.format_valid(reply, reference)
    echoed = tuple(scores.placeholders(got, reference))
    if kind == "decision":
        return ExampleScore(
            purpose, kind, valid, echoed, decision=decision(got), expected_decision=decision(ref)
        )
    if kind == "validity":
        return ExampleScore(purpose, kind, valid, echoed)
    expected = tuple(sorted(set(scores.action_names(ref))))
    return ExampleScore(
        purpose,
        kind,
        valid,
        echoed,
        actions=tuple(sorted(set(scores.action_names(got)))),
        expected_actions=expected,
        action_match=scores.action_match(reply, reference, prompt) if expected else None,
        params_match=params_match(got, ref),
        unoffered=tuple(sorted(scores.unoffered(reply, prompt))),
    )


def params_match(got: Mapping[str, Any] | None, ref: Mapping[str, Any] | None) -> bool | None:
    """Whether the reply gives each action the reference gives params to the same params;
    None where the reference gives none."""
    expected = scores.action_params(ref)
    if not expected:
        return None
    found = scores.action_params(got)
    return all(_same(found.get(name), params) for name, params in expected.items())


def _same(a: Any, b: Any) -> bool:
    """Equal params, a number and its text alike (TOON and XML type them differently)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return _text(a) == _text(b)


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _share(flags: Sequence[bool | None]) -> float | None:
    kept = [bool(f) for f in flags if f is not None]
    return round(sum(kept) / len(kept), 4) if kept else None


def _baseline(labels: Sequence[Any]) -> tuple[Any, float | None]:
    """The most common label and the accuracy of always answering it."""
    if not labels:
        return None, None
    label, count = Counter(labels).most_common(1)[0]
    return label, round(count / len(labels), 4)


def summarize_purpose(rows: Sequence[ExampleScore]) -> dict[str, Any]:
    """One purpose's figures, each beside its majority-class baseline."""
    kind = rows[0].kind if rows else "validity"
    out: dict[str, Any] = {
        "kind": kind,
        "examples": len(rows),
        "formatValid": _share([r.format_valid for r in rows]),
        "placeholderEchoes": sum(bool(r.placeholders) for r in rows),
    }
    if kind == "decision":
        scored = [r for r in rows if r.expected_decision is not None]
        majority, baseline = _baseline([r.expected_decision for r in scored])
        out |= {
            "decisionAccuracy": _share([r.decision_match for r in scored]),
            "decisionBaseline": baseline,
            "majority": majority,
            "decisions": len(scored),
        }
    elif kind == "reply":
        scored = [r for r in rows if r.action_match is not None]
        majority, baseline = _baseline([r.expected_actions for r in scored])
        minority = [r.action_match for r in scored if r.expected_actions != majority]
        out |= {
            "actionAccuracy": _share([r.action_match for r in scored]),
            "actionBaseline": baseline,
            "majority": ",".join(majority) if majority is not None else None,
            "minorityActionAccuracy": _share(minority),
            "minorityExamples": len(minority),
            "paramsAccuracy": _share([r.params_match for r in rows]),
            "unofferedActions": sum(bool(r.unoffered) for r in rows),
        }
    return out


def summarize_purposes(rows: Sequence[ExampleScore]) -> dict[str, dict[str, Any]]:
    """``summarize_purpose`` for each purpose present (purpose "" as ``unknown``)."""
    groups: dict[str, list[ExampleScore]] = {}
    for row in rows:
        groups.setdefault(row.purpose or "unknown", []).append(row)
    return {purpose: summarize_purpose(group) for purpose, group in sorted(groups.items())}


def score_examples(
    replies: Sequence[str],
    references: Sequence[str],
    prompts: Sequence[str | None],
    purposes: Sequence[str],
) -> list[ExampleScore]:
    """``score_example`` over aligned columns (a benchmark's greedy replies)."""
    return [score_example(*row) for row in zip(replies, references, prompts, purposes, strict=True)]
