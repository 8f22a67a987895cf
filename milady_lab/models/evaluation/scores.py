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

* **formatValid** = the share of greedy replies the agent's parser would accept, over the
  examples whose reference reply is structured. An XML reference (elizaOS's
  ``<response><thought>…</thought><actions>…</actions><text>…</text></response>``)
  asks for one well-formed ``<response>`` element (bare ``&`` tolerated, as the
  agent's lenient parser does) holding every child tag the reference's own
  ``<response>`` has; a JSON reference asks for a JSON object holding every top-level
  key of the reference. A ```` ``` ```` fence around the reply is allowed. Plain-text
  references are left out (any text parses); ``counts.formatValid`` says how many counted.
* **actionAccuracy** = the share of examples whose predicted action set equals the
  reference's (``<actions>`` names, comma/space separated, upper-cased; for JSON an
  ``actions`` list or string). Examples whose reference names no action are left out;
  ``counts.actionAccuracy`` says how many counted.

Each score gets a 95 % percentile bootstrap interval over examples (``interval``), and
the difference between two models scored on the same examples a paired one
(``paired_interval``): resampling the same examples for both, so a shared hard example
does not widen it. Coherence is resampled as the pooled ratio it is.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...api.schema import JsonObject

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
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_BARE_AMP = re.compile(r"&(?!(?:[A-Za-z][A-Za-z0-9]{0,31}|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)")
#: The child tags of an elizaOS reply when the reference itself does not parse.
ELIZA_TAGS = frozenset({"thought", "actions", "text"})


def _unfence(text: str) -> str:
    body = text.strip()
    m = _FENCE.match(body)
    return m.group(1).strip() if m else body


def parse_xml_response(text: str) -> ET.Element | None:
    """The reply's one ``<response>`` root element, or None when a parser would refuse it."""
    body = _unfence(text)
    if not body.startswith("<"):
        return None
    try:
        root = ET.fromstring(_BARE_AMP.sub("&amp;", body))
    except ET.ParseError:
        return None
    return root if root.tag.lower() == "response" else None


def parse_json_object(text: str) -> JsonObject | None:
    try:
        value = json.loads(_unfence(text))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def reply_format(reference: str) -> str | None:
    """``"xml"``, ``"json"`` or None (plain text): what the agent expects back."""
    body = _unfence(reference)
    if body.startswith("{") and parse_json_object(body) is not None:
        return "json"
    if re.match(r"<\s*response[\s>]", body, re.IGNORECASE):
        return "xml"
    return None


def format_valid(reply: str, reference: str) -> bool | None:
    """Whether the agent could parse ``reply`` as it parses ``reference``; None: plain text."""
    kind = reply_format(reference)
    if kind is None:
        return None
    if kind == "json":
        ref, got = parse_json_object(reference), parse_json_object(reply)
        return got is not None and set(ref or {}) <= set(got)
    root = parse_xml_response(reply)
    if root is None:
        return False
    ref_root = parse_xml_response(reference)
    required = {c.tag.lower() for c in ref_root} if ref_root is not None else set(ELIZA_TAGS)
    return required <= {c.tag.lower() for c in root}


def action_set(reply: str) -> frozenset[str]:
    """The actions a reply names: ``<actions>`` blocks, or a JSON ``actions`` field."""
    obj = parse_json_object(reply)
    if obj is not None and "actions" in obj:
        raw = obj["actions"]
        items = raw if isinstance(raw, list) else [raw]
        text = " ".join(str(i) for i in items if isinstance(i, str | int))
        return frozenset(n.upper() for n in _ACTION_NAME.findall(text))
    names: set[str] = set()
    for block in _ACTIONS.finditer(reply):
        names |= {n.upper() for n in _ACTION_NAME.findall(block.group(1))}
    return frozenset(names)


def action_match(reply: str, reference: str) -> bool | None:
    """Whether the predicted action set equals the reference's; None when it names none."""
    expected = action_set(reference)
    if not expected:
        return None
    return action_set(reply) == expected


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
    ) -> PerExample:
        out = cls(nll=[float(x) for x in nll], tokens=[int(t) for t in tokens])
        for reply, ref in zip(replies, references, strict=True):
            out.consistency.append(consistency(reply, ref))
            out.helpfulness.append(rouge_l(reply, ref))
            out.format_valid.append(format_valid(reply, ref))
            out.action_match.append(action_match(reply, ref))
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
