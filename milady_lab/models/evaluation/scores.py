"""The three benchmark scores, each in [0, 1], higher is better (definitions for the README).

* **coherence** = ``exp(-L)``, L the mean negative log-likelihood per token of the
  agent's real replies given their prompts, pooled over every reply token of every
  example (teacher forcing, the reply as the chat template renders the assistant
  turn, end-of-turn token included). 1 means the model predicts the replies exactly.
* **consistency** = the mean over examples of the Jaccard overlap ``|A ∩ B| / |A ∪ B|``
  between the *structural elements* of the model's greedy reply (A) and of the agent's
  reply (B); both empty counts 1. Structural elements are, as a set: ``tag:<name>`` for
  every XML-ish tag opened or closed (``<response>``, ``</thought>``; name lower-cased),
  ``key:<name>`` for every JSON object key (``"name":``), and ``action:<NAME>`` for each
  comma/space-separated name inside ``<actions>…</actions>`` (upper-cased).
* **helpfulness** = the mean over examples of ROUGE-L F1 (``rouge-score``) between the
  model's greedy reply and the agent's reply with markup tags removed (structure is
  consistency's job). Tokens: lower-cased runs of letters/digits in any script, and
  each CJK/kana/hangul character on its own (``rouge-score``'s default tokenizer drops
  all non-ASCII text). Both empty counts 1, one empty 0.

Agent-shaped scores (does the agent still do its job?):

* **formatValid** = the share of greedy replies the agent could act on, over the examples
  whose reference reply is structured. A reply is read as the agent reads it
  (``agent_parse``, a port of @elizaos/core's ``parseKeyValueXml``: TOON, then lenient
  XML, where a raw ``<`` or ``&`` in text is fine; a JSON object, JSON5 as the agent
  reads it, where the reference is JSON); it must fill every field the reference fills
  (for an unreadable ``<response>`` reference: ``thought``, ``actions``, ``text``) and
  repeat no template placeholder (``PLACEHOLDERS``, ``ACTION1``, unfilled ``{{…}}``).
  Plain-text references are left out; ``counts.formatValid`` says how many counted.
* **actionAccuracy** = the share of examples whose action set equals the reference's,
  actions read as the planner reads them (comma lists, TOON entries, nested
  ``<action><name>``; upper-cased), and, given the prompt, each one among the actions it
  offered (``offered_actions``) or a control action. Examples whose reference names no
  action are left out; ``counts.actionAccuracy`` says how many counted.

Per-purpose measures and their majority-class baselines: ``purposes``.

Each score gets a 95 % percentile bootstrap interval over examples (``interval``), and
the difference between two models scored on the same examples a paired one
(``paired_interval``): resampling the same examples for both, so a shared hard example
does not widen it. Coherence is resampled as the pooled ratio it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...api.schema import JsonObject
from . import agent_parse

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

_TAG = re.compile(r"<\s*/?\s*([A-Za-z_][A-Za-z0-9_.:-]{0,63})(?:\s[^<>]*)?/?\s*>")
_ACTIONS = re.compile(r"<\s*actions\s*>(.*?)<\s*/\s*actions\s*>", re.IGNORECASE | re.DOTALL)
_JSON_KEY = re.compile(r'"((?:[^"\\\n]|\\.){1,64})"\s*:')
_ACTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")


def structure(reply: str) -> set[str]:
    """The structural elements of a reply: tag names, JSON keys, action names."""
    out = {f"tag:{m.group(1).lower()}" for m in _TAG.finditer(reply)}
    out |= {f"key:{m.group(1)}" for m in _JSON_KEY.finditer(reply)}
    for block in _ACTIONS.finditer(reply):
        out |= {f"action:{name.upper()}" for name in _ACTION_NAME.findall(block.group(1))}
    return out


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def consistency(generated: str, reference: str) -> float:
    return jaccard(structure(generated), structure(reference))


def strip_tags(text: str) -> str:
    return _TAG.sub(" ", text)


def tokens(text: str) -> list[str]:
    """The ROUGE tokenizer: lower-cased word runs in any script, CJK one character each."""
    return _TOKEN.findall(text.lower())


class _Tokenizer:
    """Adapter for ``rouge_score.RougeScorer(tokenizer=...)``."""

    def tokenize(self, text: str) -> list[str]:
        return tokens(text)


_SCORER = None


def rouge_l(generated: str, reference: str) -> float:
    """ROUGE-L F1 on the text with markup tags removed."""
    global _SCORER
    a, b = tokens(strip_tags(generated)), tokens(strip_tags(reference))
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())
    return float(_SCORER.score(strip_tags(reference), strip_tags(generated))["rougeL"].fmeasure)


def coherence(nll_sum: float, token_count: int) -> float:
    """exp(-mean NLL per token); 0 when there is nothing to score."""
    if token_count <= 0:
        return 0.0
    return math.exp(-nll_sum / token_count)


def mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


# -- agent-shaped scores ------------------------------------------------------------------
# A reply is read as the agent reads it (``agent_parse``: its TOON/lenient-XML parser, then
# JSON5 as its structured-output fallback), never with a stricter parser.
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_THINK = re.compile(r"<think>[\s\S]*?</think>")
#: The child tags of an elizaOS reply when the reference itself does not parse.
ELIZA_TAGS = frozenset({"thought", "actions", "text"})
#: The example values elizaOS's templates show (``@elizaos/prompts``: message_handler,
#: reply, post_creation, multi_step_*, post_action_decision, summaries, image prompts; the
#: 1.x ``<actions>ACTION1,ACTION2</actions>``). A reply that repeats one is copying the
#: template, not answering.
PLACEHOLDERS = (
    "your thought here",
    "your message here",
    "your post text here",
    "your comprehensive summary here",
    "your updated and condensed summary here",
    "optional image prompt here",
    "option_name_or_null",
)
_PLACEHOLDER_NAME = re.compile(r"\b(?:ACTION|PROVIDER|EVALUATOR)\d\b")
_UNFILLED = re.compile(r"\{\{\{?\s*[#/]?[A-Za-z_][\w.]*\s*\}?\}\}")
#: What the planner accepts whether or not the prompt lists it (core's control actions).
CONTROL_ACTIONS = frozenset({"REPLY", "RESPOND", "IGNORE", "STOP", "NONE"})
_POSSIBLE = re.compile(r"Possible response actions:[ \t]*([^\n]*)")
_AVAILABLE = re.compile(r"^#+\s*Available Actions\s*$", re.MULTILINE | re.IGNORECASE)
_ACTION_LINE = re.compile(r"^-\s+([A-Za-z_][A-Za-z0-9_]*)\s*:", re.MULTILINE)


def _unfence(text: str) -> str:
    body = text.strip()
    m = _FENCE.match(body)
    return m.group(1).strip() if m else body


def parse_json_object(text: str) -> JsonObject | None:
    """A JSON object (JSON5, as the agent's ``parseJSONObjectFromText`` reads one)."""
    value = agent_parse.parse_json_object_from_text(_unfence(text))
    return value if isinstance(value, dict) else None


def reply_format(reference: str) -> str | None:
    """``"json"``, ``"structured"`` (TOON or XML) or None (plain text): what the agent
    expects back, judged from the reference reply."""
    body = _unfence(reference)
    if body.startswith("{") and parse_json_object(body) is not None:
        return "json"
    if read_reply(reference) is not None or re.search(r"<\s*response[\s>/]", body, re.I):
        return "structured"
    return None


def read_reply(text: str, *, json_first: bool = False) -> JsonObject | None:
    """The fields the agent reads from a reply (``<think>`` removed, as the runtime does):
    ``parseKeyValueXml`` (TOON, then lenient XML), then a JSON object; JSON first where
    the agent expects JSON. None: the agent finds nothing to act on."""
    clean = _THINK.sub("", text or "")
    readers = (parse_json_object, agent_parse.parse_key_value_xml)
    for reader in readers if json_first else readers[::-1]:
        fields = reader(clean)
        if fields:
            return fields
    return None


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


def placeholders(fields: Mapping[str, Any] | None, reference: str = "") -> list[str]:
    """The template placeholders a reply's fields repeat (``Your thought here``,
    ``ACTION1``, an unfilled ``{{agentName}}``…), less those the reference itself holds."""
    if not fields:
        return []
    ref = reference.lower()
    found: list[str] = []
    for text in _strings(dict(fields)):
        low = text.lower()
        hits = [p for p in PLACEHOLDERS if p in low]
        hits += _PLACEHOLDER_NAME.findall(text.upper()) + _UNFILLED.findall(text)
        found += [h for h in hits if h.lower() not in ref and h not in found]
    return found


def format_valid(reply: str, reference: str) -> bool | None:
    """Whether the agent could act on ``reply`` as it acts on ``reference``: it parses
    (agent's parser), fills every field the reference fills, and copies no template
    placeholder. None: the reference is plain text (any text parses)."""
    kind = reply_format(reference)
    if kind is None:
        return None
    ref = read_reply(reference, json_first=kind == "json")
    got = read_reply(reply, json_first=kind == "json")
    if got is None:
        return False
    if kind == "json":
        required = set(ref or {})
    elif ref is None:
        required = set(ELIZA_TAGS)
    else:
        required = {k for k, v in ref.items() if not agent_parse.is_empty(v)}
    return required <= set(got) and not placeholders(got, reference)


def action_names(fields: Mapping[str, Any] | None) -> list[str]:
    """The actions the planner reads (``extractPlannerActionNames``), upper-cased. A TOON
    entry ``- name: REPLY`` (the 2.x templates' form) counts by its name; the core build
    this is ported from turns such an entry into "[object Object]" and drops it."""
    if not fields:
        return []
    working = json.loads(json.dumps(dict(fields)))
    entries = working.get("actions")
    if isinstance(entries, list) and any(_named(e) for e in entries):
        # The decoded entries, less the loose line-by-line reading of the same lines
        # that parseKeyValueXml merges in after them ("- name: REPLY", {"params": …}).
        working["actions"] = [e["name"] for e in entries if _named(e)] + [
            e for e in entries if isinstance(e, str) and not e.lstrip().startswith("-")
        ]
    return [n.upper() for n in agent_parse.extract_planner_action_names(working)]


def _named(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("name"), str)


def action_params(fields: Mapping[str, Any] | None) -> dict[str, JsonObject]:
    """Each action's params (``parseActionParams``, nested ``<params>`` included), with
    those a TOON action entry carries under its ``params``."""
    if not fields:
        return {}
    working = json.loads(json.dumps(dict(fields)))
    # The planner fills an empty ``params`` from params nested in ``<action>``; the 2.x
    # schema asks for them there, so a reply without a ``<params>`` field gets them too.
    working.setdefault("params", "")
    agent_parse.extract_planner_action_names(working)
    out = agent_parse.parse_action_params(working.get("params"))
    for entry in working.get("actions") if isinstance(working.get("actions"), list) else []:
        if _named(entry):
            params = entry.get("params")
            if isinstance(params, dict) and params:
                out.setdefault(entry["name"].strip().upper(), params)
    return out


def action_set(reply: str) -> frozenset[str]:
    """The actions a reply names, read as the agent reads them."""
    return frozenset(action_names(read_reply(reply)))


def offered_actions(prompt: str | None) -> frozenset[str] | None:
    """The actions the prompt offered, as the runtime lists them (``Possible response
    actions: A, B`` and the ``# Available Actions`` lines ``- NAME: description``); None
    where the prompt lists none (nothing to check against)."""
    if not prompt:
        return None
    names: set[str] = set()
    for line in _POSSIBLE.findall(prompt):
        names |= {n.strip().upper() for n in line.split(",") if n.strip()}
    for header in _AVAILABLE.finditer(prompt):
        section = re.split(r"\n\s*#", prompt[header.end() :], maxsplit=1)[0]
        names |= {n.upper() for n in _ACTION_LINE.findall(section)}
    return frozenset(names) if names else None


def unoffered(reply: str, prompt: str | None) -> frozenset[str]:
    """The actions a reply takes that its prompt did not offer (control actions aside)."""
    offered = offered_actions(prompt)
    if offered is None:
        return frozenset()
    return frozenset(action_set(reply) - offered - CONTROL_ACTIONS)


def action_match(reply: str, reference: str, prompt: str | None = None) -> bool | None:
    """Whether the reply takes exactly the reference's actions, each one the prompt
    offered; None when the reference takes none."""
    expected = action_set(reference)
    if not expected:
        return None
    return action_set(reply) == expected and not unoffered(reply, prompt)


# -- per-example values, summaries and intervals ----------------------------------------------
SCORE_NAMES = ("coherence", "consistency", "helpfulness", "formatValid", "actionAccuracy")
#: Scores whose fall blocks an activation; ``preferenceAccuracy`` (``PREFERENCE``) only
#: where the model's dataset had pairs, so its benchmark scored held-out pairs (issue 27).
GATED = ("formatValid", "actionAccuracy", "preferenceAccuracy")
CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass
class PerExample:
    """One model variant's values on each example (same order for every variant)."""

    nll: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    consistency: list[float] = field(default_factory=list)
    helpfulness: list[float] = field(default_factory=list)
    format_valid: list[bool | None] = field(default_factory=list)
    action_match: list[bool | None] = field(default_factory=list)

    @classmethod
    def from_replies(
        cls,
        replies: Sequence[str],
        references: Sequence[str],
        nll: Sequence[float],
        tokens: Sequence[int],
        prompts: Sequence[str | None] | None = None,
    ) -> PerExample:
        """Each reply scored against its reference; with ``prompts``, an action the
        example's prompt did not offer fails ``actionAccuracy``."""
        out = cls(nll=[float(x) for x in nll], tokens=[int(t) for t in tokens])
        asked = [None] * len(replies) if prompts is None else prompts
        for reply, ref, prompt in zip(replies, references, asked, strict=True):
            out.consistency.append(consistency(reply, ref))
            out.helpfulness.append(rouge_l(reply, ref))
            out.format_valid.append(format_valid(reply, ref))
            out.action_match.append(action_match(reply, ref, prompt))
        return out

    def as_dict(self) -> dict[str, list[Any]]:
        return {
            "nll": self.nll,
            "tokens": self.tokens,
            "consistency": self.consistency,
            "helpfulness": self.helpfulness,
            "formatValid": self.format_valid,
            "actionMatch": self.action_match,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[Any]]) -> PerExample:
        return cls(
            list(d["nll"]),
            list(d["tokens"]),
            list(d["consistency"]),
            list(d["helpfulness"]),
            list(d["formatValid"]),
            list(d["actionMatch"]),
        )

    def subset(self, rows: Sequence[int]) -> PerExample:
        return PerExample(*([getattr(self, f)[i] for i in rows] for f in _FIELDS))


_FIELDS = ("nll", "tokens", "consistency", "helpfulness", "format_valid", "action_match")


def _columns(pe: PerExample) -> dict[str, NDArray[np.float64]]:
    """numpy columns; None (left out) as NaN in the 0/1 ones."""
    import numpy as np

    def flags(values: Sequence[bool | None]) -> Any:
        return np.array([np.nan if x is None else float(x) for x in values], dtype=float)

    return {
        "nll": np.asarray(pe.nll, dtype=float),
        "tokens": np.asarray(pe.tokens, dtype=float),
        "consistency": np.asarray(pe.consistency, dtype=float),
        "helpfulness": np.asarray(pe.helpfulness, dtype=float),
        "formatValid": flags(pe.format_valid),
        "actionAccuracy": flags(pe.action_match),
    }


def _stat(cols: Mapping[str, Any], name: str, idx: Any) -> Any:
    """The score over resampled rows ``idx`` (shape ``(B, n)`` or ``(n,)``); NaN if none count."""
    import numpy as np

    if name == "coherence":
        tok = cols["tokens"][idx].sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tok > 0, np.exp(-cols["nll"][idx].sum(-1) / tok), 0.0)
    values = cols[name][idx]
    if name in ("consistency", "helpfulness"):
        return values.mean(-1)
    with np.errstate(invalid="ignore"):
        return np.nanmean(values, -1) if values.ndim else values


def _resample(n: int, seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))


def _bounds(samples: Any) -> list[float] | None:
    import numpy as np

    kept = samples[~np.isnan(samples)]
    if kept.size == 0:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def _nanmean_rows(values: Any) -> Any:
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, -1)


def summarize(pe: PerExample) -> dict[str, float | None]:
    """The five scores of one variant; None where no example counts."""
    import numpy as np

    cols = _columns(pe)
    out: dict[str, float | None] = {}
    everything = np.arange(len(pe.nll))
    for name in SCORE_NAMES:
        if name in ("formatValid", "actionAccuracy"):
            kept = cols[name][~np.isnan(cols[name])]
            out[name] = round(float(kept.mean()), 4) if kept.size else None
        else:
            out[name] = round(float(_stat(cols, name, everything)), 4) if len(everything) else 0.0
    return out


def counts(pe: PerExample) -> dict[str, int]:
    """How many examples each left-out-capable score counted."""
    return {
        "formatValid": sum(x is not None for x in pe.format_valid),
        "actionAccuracy": sum(x is not None for x in pe.action_match),
    }


def _boot(cols: Mapping[str, Any], name: str, idx: Any) -> Any:
    if name in ("formatValid", "actionAccuracy"):
        return _nanmean_rows(cols[name][idx])
    return _stat(cols, name, idx)


def interval(pe: PerExample, seed: int = 0) -> dict[str, list[float] | None]:
    """95 % percentile bootstrap interval of each score (None where no example counts)."""
    n = len(pe.nll)
    if n == 0:
        return dict.fromkeys(SCORE_NAMES)
    cols, idx = _columns(pe), _resample(n, seed)
    return {name: _bounds(_boot(cols, name, idx)) for name in SCORE_NAMES}


def paired_interval(
    candidate: PerExample, reference: PerExample, seed: int = 0
) -> dict[str, dict[str, float] | None]:
    """``candidate − reference`` per score with a paired 95 % bootstrap interval."""
    n = len(candidate.nll)
    if n == 0 or len(reference.nll) != n:
        return dict.fromkeys(SCORE_NAMES)
    a, b, idx = _columns(candidate), _columns(reference), _resample(n, seed)
    sa, sb = summarize(candidate), summarize(reference)
    out: dict[str, dict[str, float] | None] = {}
    for name in SCORE_NAMES:
        va, vb = sa[name], sb[name]
        bounds = _bounds(_boot(a, name, idx) - _boot(b, name, idx))
        if va is None or vb is None or bounds is None:
            out[name] = None
            continue
        out[name] = {"delta": round(va - vb, 4), "low": bounds[0], "high": bounds[1]}
    return out


# -- preference accuracy (issue 27) ---------------------------------------------------------
PREFERENCE = "preferenceAccuracy"


def preference_accuracy(wins: Sequence[bool]) -> float | None:
    """The share of held-out pairs where the model gives the chosen reply the higher
    summed log-probability than the rejected one (a tie is not a win); None: no pairs."""
    return round(sum(bool(x) for x in wins) / len(wins), 4) if wins else None


def preference_interval(wins: Sequence[bool], seed: int = 0) -> list[float] | None:
    """Its 95 % percentile bootstrap interval, resampled like ``interval``'s scores."""
    import numpy as np

    if not wins:
        return None
    values = np.asarray([float(bool(x)) for x in wins])
    return _bounds(values[_resample(len(values), seed)].mean(-1))


def paired_preference(
    candidate: Sequence[bool], reference: Sequence[bool], seed: int = 0
) -> dict[str, float] | None:
    """``candidate − reference`` preference accuracy with a paired 95 % bootstrap interval."""
    import numpy as np

    if not candidate or len(candidate) != len(reference):
        return None
    a = np.asarray([float(bool(x)) for x in candidate])
    b = np.asarray([float(bool(x)) for x in reference])
    idx = _resample(len(a), seed)
    bounds = _bounds(a[idx].mean(-1) - b[idx].mean(-1))
    if bounds is None:
        return None
    return {"delta": round(float(a.mean() - b.mean()), 4), "low": bounds[0], "high": bounds[1]}
