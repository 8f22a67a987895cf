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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

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
