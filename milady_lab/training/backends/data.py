"""Chat examples → token ids with an assistant-only label mask, shared by every backend.

Every assistant turn of an example is trained, not only the last: the spans are found
by rendering the chat template for growing prefixes of the conversation and mapping
the character offsets onto the tokens of the full rendering, so a template that
tokenises differently at a prefix boundary cannot shift the mask.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...dataset_files import line_messages, read_lines
from ...errors import InputError

if TYPE_CHECKING:
    from ..callbacks import TrainingCallback
    from ..spec import TrainSpec


@dataclass(frozen=True)
class Example:
    """One tokenised conversation; ``mask[i]`` is True where token ``i`` is trained."""

    input_ids: list[int]
    mask: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        """Trained targets: token 0 is never a target (nothing predicts it)."""
        return sum(self.mask[1:])


def _render(tokenizer: Any, messages: list[dict[str, str]], gen_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)


def assistant_char_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list]:
    """The full rendering and the [start, end) character span of every assistant turn."""
    full = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            head = _render(tokenizer, messages[:i], True)
            upto = _render(tokenizer, messages[: i + 1], False)
        except Exception:  # some templates reject a prefix (e.g. one without a user turn)
            head = upto = ""
        if full.startswith(head) and full.startswith(upto) and len(upto) > len(head) >= cursor:
            start, end = len(head), len(upto)
        else:  # a template that rewrites earlier turns: find the content itself
            start = full.find(m["content"], cursor)
            if start < 0 or not m["content"]:
                continue
            end = start + len(m["content"])
            eos = getattr(tokenizer, "eos_token", None)
            if eos and full.startswith(eos, end):  # train the end-of-turn token too
                end += len(eos)
        spans.append((start, end))
        cursor = end
    return full, spans


def tokenize_row(tokenizer: Any, row: dict[str, Any]) -> Example:
    """Tokenise one dataset row; only assistant tokens (and their end-of-turn) train."""
    messages = line_messages(row)
    if messages is None:
        if not isinstance(row.get("text"), str):
            raise InputError("a dataset line has none of 'messages', 'prompt'/'completion', 'text'")
        ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        return Example(list(ids), [True] * len(ids))

    full, spans = assistant_char_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    mask = [False] * len(ids)
    for start, end in spans:
        inside = [t for t, (a, b) in enumerate(offsets) if a >= start and a < end and b > a]
        # The template's separator after the end-of-turn token ("\n") is not the answer.
        while len(inside) > 1 and not tokenizer.decode([ids[inside[-1]]]).strip():
            inside.pop()
        for t in inside:
            mask[t] = True
    return Example(ids, mask)


def truncate(example: Example, max_len: int) -> Example:
    """Cut to ``max_len`` tokens, keeping at least one trained span when the head has none."""
    if len(example) <= max_len:
        return example
    head = Example(example.input_ids[:max_len], example.mask[:max_len])
    if head.n_labels:
        return head
    first = example.mask.index(True) if True in example.mask else 0
    end = first
    while end < len(example) and example.mask[end]:
        end += 1
    end = max(end, min(len(example), max_len))
    start = max(0, end - max_len)
    return Example(example.input_ids[start:end], example.mask[start:end])


def tokenized_examples(
    path: Path, tokenizer: Any, max_seq_length: int, limit: int | None = None
) -> tuple[list[Example], int]:
    """Tokenised, truncated examples with at least one trained token, and how many were
    dropped for having none."""
    if not path.is_file():
        return [], 0
    rows = list(read_lines(path))
    if limit is not None:
        rows = rows[:limit]
    out: list[Example] = []
    dropped = 0
    for row in rows:
        ex = truncate(tokenize_row(tokenizer, row), max(2, max_seq_length))
        if ex.n_labels:
            out.append(ex)
        else:
            dropped += 1
    return out, dropped


def train_and_val_examples(
    spec: TrainSpec, tokenizer: Any, callback: TrainingCallback
) -> tuple[list[Example], list[Example]]:
    """The run's tokenised training and validation examples (the first
    ``max_val_examples`` of ``valid.jsonl``); an input error when none train."""
    train_set, dropped = tokenized_examples(
        spec.dataset_dir / "train.jsonl", tokenizer, spec.max_seq_length
    )
    if not train_set:
        raise InputError(f"dataset {spec.dataset_dir} has no assistant turns to train on")
    val_set, _ = tokenized_examples(
        spec.dataset_dir / "valid.jsonl", tokenizer, spec.max_seq_length,
        limit=spec.max_val_examples,
    )  # fmt: skip
    callback.on_log(
        f"{len(train_set)} training and {len(val_set)} validation examples"
        + (f" ({dropped} without assistant tokens skipped)" if dropped else "")
    )
    return train_set, val_set


def batch_indices(n: int, batch_size: int, iteration: int, seed: int) -> list[int]:
    """Example indices of the batch for ``iteration`` (0-based).

    Stateless: epoch ``e`` is a permutation seeded by (seed, e), so a resumed run sees
    exactly the batches the interrupted one would have.
    """
    out: list[int] = []
    for k in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, pos = divmod(k, n)
        perm = _permutation(n, seed, epoch)
        out.append(perm[pos])
    return out


_PERM_CACHE: dict[tuple[int, int, int], list[int]] = {}


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    key = (n, seed, epoch)
    perm = _PERM_CACHE.get(key)
    if perm is None:
        perm = list(range(n))
        random.Random(f"{seed}:{epoch}").shuffle(perm)
        if len(_PERM_CACHE) > 8:
            _PERM_CACHE.clear()
        _PERM_CACHE[key] = perm
    return perm


def pack_rows(examples: Sequence[Example], token_budget: int) -> Iterator[list[Example]]:
    """Group a batch into rows of at most ``token_budget`` tokens (longest first), so a
    row is one padding-free packed sequence and attention cost stays bounded."""
    rows: list[list[Example]] = []
    sizes: list[int] = []
    for ex in sorted(examples, key=len, reverse=True):
        for i, size in enumerate(sizes):
            if size + len(ex) <= token_budget:
                rows[i].append(ex)
                sizes[i] += len(ex)
                break
        else:
            rows.append([ex])
            sizes.append(len(ex))
    yield from rows


def grouped_batch_indices(
    lengths: Sequence[int], batch_size: int, iteration: int, seed: int
) -> list[int]:
    """Like ``batch_indices`` but a batch holds examples of similar length (for backends
    that pad): fixed batches of neighbours in length order, visited in a seeded order."""
    n = len(lengths)
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    n_batches = max(1, math.ceil(n / batch_size))
    epoch, pos = divmod(iteration, n_batches)
    b = _permutation(n_batches, seed, epoch)[pos]
    return [order[(b * batch_size + j) % n] for j in range(batch_size)]
