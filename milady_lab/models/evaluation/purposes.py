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
from dataclasses import dataclass
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
    """One reply scored against its reference, every measure that applies to it (the
    purpose picks which ones its summary shows); None where a measure does not apply."""

    purpose: str
    format_valid: bool | None
    placeholders: tuple[str, ...] = ()
    #: The reference's class: its decision (RESPOND / IGNORE / STOP) or its sorted action
    #: names joined by commas; what the majority baseline counts.
    expected: str | None = None
    decision_match: bool | None = None
    actions: tuple[str, ...] = ()
    action_match: bool | None = None
    params_match: bool | None = None
    unoffered: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return purpose_kind(self.purpose)


def score_example(reply: str, reference: str, prompt: str | None, purpose: str) -> ExampleScore:
    """Score one reply against its reference (pure: the same inputs, the same answer)."""
    got, ref = scores.read_reply(reply), scores.read_reply(reference)
    echoed = tuple(scores.placeholders(got, reference))
    valid = scores.format_valid(reply, reference)
    expected_decision = decision(ref)
    expected_actions = sorted(set(scores.action_names(ref)))
    if purpose_kind(purpose) == "decision" or (expected_decision and not expected_actions):
        matched = None if expected_decision is None else decision(got) == expected_decision
        return ExampleScore(
            purpose, valid, echoed, expected=expected_decision, decision_match=matched
        )
    return ExampleScore(
        purpose,
        valid,
        echoed,
        expected=",".join(expected_actions) or None,
        actions=tuple(sorted(set(scores.action_names(got)))),
        action_match=scores.action_match(reply, reference, prompt) if expected_actions else None,
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
        scored = [r for r in rows if r.decision_match is not None]
        majority, baseline = _baseline([r.expected for r in scored])
        out |= {
            "decisionAccuracy": _share([r.decision_match for r in scored]),
            "decisionBaseline": baseline,
            "majority": majority,
            "decisions": len(scored),
        }
    elif kind == "reply":
        scored = [r for r in rows if r.action_match is not None]
        majority, baseline = _baseline([r.expected for r in scored])
        minority = [r.action_match for r in scored if r.expected != majority]
        out |= {
            "actionAccuracy": _share([r.action_match for r in scored]),
            "actionBaseline": baseline,
            "majority": majority,
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


# -- stored beside a benchmark's per-example figures -----------------------------------------
_COLUMNS = (
    ("formatValid", "format_valid"),
    ("placeholders", "placeholders"),
    ("expected", "expected"),
    ("decisionMatch", "decision_match"),
    ("actions", "actions"),
    ("actionMatch", "action_match"),
    ("paramsMatch", "params_match"),
    ("unoffered", "unoffered"),
)


def columns(rows: Sequence[ExampleScore]) -> dict[str, list[Any]]:
    """Rows as JSON columns (a benchmark worker's answer; the purpose is added back by
    ``from_columns``, the worker does not know it)."""
    out: dict[str, list[Any]] = {}
    for key, attr in _COLUMNS:
        values = [getattr(r, attr) for r in rows]
        out[key] = [list(v) if isinstance(v, tuple) else v for v in values]
    return out


def from_columns(cols: Mapping[str, Sequence[Any]], purposes: Sequence[str]) -> list[ExampleScore]:
    """``columns`` read back, each row given its purpose."""
    out = []
    for i, purpose in enumerate(purposes):
        values = {attr: cols[key][i] for key, attr in _COLUMNS}
        for attr in ("placeholders", "actions", "unoffered"):
            values[attr] = tuple(values[attr])
        out.append(ExampleScore(purpose=purpose, **values))
    return out
