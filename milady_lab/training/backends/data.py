"""Chat examples → token ids with an assistant-only label mask, shared by every backend.

Every assistant turn of an example is trained, not only the last: the spans are found
by rendering the chat template for growing prefixes of the conversation and mapping
the character offsets onto the tokens of the full rendering, so a template that
tokenises differently at a prefix boundary cannot shift the mask. Tool calls and
results are rendered in the form the model's template understands (``chat_tools``),
and an assistant turn's tool calls train like its text.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ...api.schema import JsonObject
from ...datasets.files import Message, line_messages, read_lines
from ...errors import InputError
from .chat_tools import TemplateError, render_tool_use
from .prompt_turns import prompt_layout, without_turns

if TYPE_CHECKING:
    from ..callbacks import RunSummary, TrainingCallback
    from ..spec import TrainSpec


#: Tool schemas offered to the model (``"tools"`` of a dataset line), if any.
Tools = list[Any] | None


@dataclass(frozen=True)
class Example:
    """One tokenised conversation; ``mask[i]`` is True where token ``i`` is trained."""

    input_ids: list[int]
    mask: list[bool]
    #: A chat example (truncated from the left, keeping the reply); False: plain text.
    chat: bool = True

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        """Trained targets: token 0 is never a target (nothing predicts it)."""
        return sum(self.mask[1:])


def _render(tokenizer: Any, messages: list[Message], gen_prompt: bool, tools: Tools) -> str:
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=gen_prompt, **extra
    )


def assistant_char_spans(
    tokenizer: Any, messages: list[Message], tools: Tools = None
) -> tuple[str, list]:
    """The full rendering and the [start, end) character span of every assistant turn
    (its text and its tool calls)."""
    full = _render(tokenizer, messages, False, tools)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            head = _render(tokenizer, messages[:i], True, tools)
            upto = _render(tokenizer, messages[: i + 1], False, tools)
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


def _rendered(tokenizer: Any, messages: list[Message], tools: Any) -> tuple[str, list]:
    """``assistant_char_spans`` of a line, its tool use in the template's form
    (``chat_tools``); a line the template cannot render at all is an input error."""
    offered = tools if isinstance(tools, list) else None
    spans = functools.partial(assistant_char_spans, tokenizer)
    try:
        return render_tool_use(tokenizer, messages, offered, spans)
    except TemplateError as exc:
        why = f"the base model's chat template cannot render a dataset line: {exc}"
        raise InputError(why) from None


class _Encoded(NamedTuple):
    """A chat example with the rendering it was tokenised from and each token's
    [start, end) characters in it."""

    example: Example
    text: str
    offsets: list[tuple[int, int]]


def _encode_chat(tokenizer: Any, messages: list[Message], tools: Any) -> _Encoded:
    full, spans = _rendered(tokenizer, messages, tools)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    mask = [False] * len(ids)
    for start, end in spans:
        inside = [t for t, (a, b) in enumerate(offsets) if a >= start and a < end and b > a]
        # The template's separator after the end-of-turn token ("\n") is not the answer.
        while len(inside) > 1 and not tokenizer.decode([ids[inside[-1]]]).strip():
            inside.pop()
        for t in inside:
            mask[t] = True
    return _Encoded(Example(ids, mask), full, offsets)  # type: ignore[arg-type]


def reply_start(example: Example, replies: int = 1) -> int | None:
    """Where the last ``replies`` trained spans of ``example`` begin (its reply's first
    token; a pair side's tokens, which fitting never cuts); None when it has fewer."""
    t = len(example.mask)
    for _ in range(replies):
        while t > 0 and not example.mask[t - 1]:
            t -= 1
        if t == 0:
            return None
        while t > 0 and example.mask[t - 1]:
            t -= 1
    return t


def tokenize_row(tokenizer: Any, row: JsonObject) -> Example:
    """Tokenise one dataset row; only assistant tokens (and their end-of-turn) train."""
    messages = line_messages(row)
    if messages is None:
        if not isinstance(row.get("text"), str):
            raise InputError("a dataset line has none of 'messages', 'prompt'/'completion', 'text'")
        ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        return Example(list(ids), [True] * len(ids), chat=False)
    return _encode_chat(tokenizer, messages, row.get("tools")).example


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


def fit(
    example: Example, max_len: int, keep_from: int | None = None
) -> tuple[Example | None, bool]:
    """``example`` within ``max_len`` tokens, and whether it was cut; None when it cannot be.

    A chat example loses tokens from the left (the oldest prompt text), never from the
    reply (its last assistant turn, through the end of the rendering) nor from token
    ``keep_from`` on (the prompt's format instructions): one whose kept part, with one
    token of context before the reply, is longer than ``max_len`` is dropped. A
    plain-text row keeps its head (``truncate``).
    """
    if len(example) <= max_len:
        return example, False
    if not example.chat:
        return truncate(example, max_len), True
    last = len(example.mask) - 1
    while last >= 0 and not example.mask[last]:
        last -= 1
    start = last
    while start > 0 and example.mask[start - 1]:
        start -= 1
    cut = len(example) - max_len
    if last < 0 or cut > start - 1 or (keep_from is not None and cut > keep_from):
        return None, False
    return Example(example.input_ids[cut:], example.mask[cut:]), True


class Cuts(NamedTuple):
    """What fitting one example into ``maxSeqLength`` took out of it."""

    turns: int = 0  # the oldest conversation turns dropped from its prompt
    truncated: bool = False  # then tokens cut from the left (``fit``)


def _prompt_index(messages: list[Message]) -> int | None:
    """The prompt of the reply: the last user turn before the last assistant turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return next((i for i in range(last - 1, -1, -1) if messages[i]["role"] == "user"), None)


def _without_old_turns(
    tokenizer: Any, messages: list[Message], tools: Any, p: int, enc: _Encoded, max_len: int
) -> tuple[_Encoded, list[Message], int]:
    """``messages`` without the oldest conversation turns of prompt ``p`` that keep it
    over ``max_len`` (the newest turn always stays), its encoding and the number dropped.

    Each turn is tokenised once, alone: the fewest oldest turns whose tokens cover the
    excess go, the shortened example is tokenised again to check, and more go only when
    that estimate fell short (tokens merging across a line break)."""
    text = messages[p]["content"]
    turns = prompt_layout(text).turns
    if len(turns) < 2:
        return enc, messages, 0
    pieces = tokenizer([text[a:b] for a, b in turns], add_special_tokens=False)["input_ids"]
    saved = list(itertools.accumulate((len(ids) for ids in pieces), initial=0))
    k, shorter = 0, messages
    while len(enc.example) > max_len and k < len(turns) - 1:
        need = saved[k] + len(enc.example) - max_len
        k = min(len(turns) - 1, max(k + 1, bisect.bisect_left(saved, need)))
        prompt: Message = {**messages[p], "content": without_turns(text, turns, k)}
        shorter = [*messages[:p], prompt, *messages[p + 1 :]]
        enc = _encode_chat(tokenizer, shorter, tools)
    return enc, shorter, k


def _format_token(enc: _Encoded, prompt: str) -> int | None:
    """The first token of the prompt's format instructions in the rendering (the last
    place their text occurs before the reply); None when there are none to keep."""
    at = prompt_layout(prompt).format_start
    reply = reply_start(enc.example)
    if at is None or reply is None:
        return None
    tail = prompt[at:].rstrip()
    pos = enc.text.rfind(tail, 0, enc.offsets[reply][0])
    if pos < 0:  # the template rewrote the prompt: look for the first line alone
        pos = enc.text.rfind(tail.split("\n", 1)[0], 0, enc.offsets[reply][0])
    if pos < 0:
        return None
    return next((t for t, (_, b) in enumerate(enc.offsets) if b > pos), None)


def fit_row(tokenizer: Any, row: JsonObject, max_len: int) -> tuple[Example | None, Cuts]:
    """One dataset row tokenised within ``max_len`` tokens, and what that took out;
    None when it cannot fit.

    First the oldest conversation turns inside the reply's prompt go
    (``prompt_turns``: the newest turn stays); if that is not enough, tokens are cut
    from the left (``fit``), never the prompt's format instructions nor the reply. A row
    with no conversation in its prompt goes straight to the cut from the left."""
    messages = line_messages(row)
    if messages is None:
        ex, cut = fit(tokenize_row(tokenizer, row), max_len)
        return ex, Cuts(truncated=cut)
    tools = row.get("tools")
    enc = _encode_chat(tokenizer, messages, tools)
    p = _prompt_index(messages)
    if len(enc.example) <= max_len or p is None:
        ex, cut = fit(enc.example, max_len)
        return ex, Cuts(truncated=cut)
    newest = _newest_turn(messages[p]["content"])  # before the older ones go
    enc, messages, turns = _without_old_turns(tokenizer, messages, tools, p, enc, max_len)
    if len(enc.example) <= max_len:
        return enc.example, Cuts(turns=turns)
    keep_from = _format_token(enc, messages[p]["content"])
    ex = _around_newest_turn(enc, newest, max_len, keep_from)
    cut = ex is not None
    if ex is None:
        ex, cut = fit(enc.example, max_len, keep_from)
    return ex, Cuts(turns=turns if ex is not None else 0, truncated=cut)


def _newest_turn(prompt: str) -> str:
    """The text of the prompt's newest conversation turn ("" when it has none)."""
    turns = prompt_layout(prompt).turns
    return prompt[turns[-1][0] : turns[-1][1]].rstrip() if turns else ""


def _around_newest_turn(
    enc: _Encoded, text: str, max_len: int, keep_from: int | None
) -> Example | None:
    """``enc`` within ``max_len`` keeping its prompt's newest conversation turn (``text``,
    found before the older turns were dropped, which leave a lone turn unrecognisable as
    a conversation) and its format instructions (from token ``keep_from``): what comes
    before that turn goes first (system prompt, character, older context), then what lies
    between it and the format instructions, from the instructions' side (the sections
    right after the turn, such as the actions offered, stay longest). None when the turn
    cannot be placed or kept (``fit``'s cut from the left then applies).

    Why: an agent prompt's newest turn is the request the reply answers. A cut from the
    left alone keeps the prompt's tail, and elizaOS's rules and action descriptions after
    the conversation are long: at 512 tokens every agent prompt lost its request, and a
    model trained so learnt the reply format but could not learn which action to take."""
    if not text or keep_from is None:
        return None
    at = enc.text.rfind(text, 0, enc.offsets[keep_from][0])
    if at < 0:
        return None
    first = next(t for t, (_, b) in enumerate(enc.offsets) if b > at)
    end = next((t for t, (a, _) in enumerate(enc.offsets) if a >= at + len(text)), keep_from)
    need = len(enc.example) - max_len
    head = min(need, first)
    rest = need - head
    if end > keep_from or rest > keep_from - end:
        return None
    ids, mask = enc.example.input_ids, enc.example.mask
    keep = [*range(head, keep_from - rest), *range(keep_from, len(ids))]
    return Example([ids[i] for i in keep], [mask[i] for i in keep])


@dataclass
class DataStats:
    """What tokenising a file kept and left out (reported on the job)."""

    examples: int = 0
    shortened: int = 0  # lost their oldest conversation turns to fit ``max_seq_length``
    dropped_turns: int = 0  # those turns, over all the kept examples
    truncated: int = 0  # cut from the left to ``max_seq_length``
    too_long: int = 0  # dropped: the reply and format instructions exceed ``max_seq_length``
    no_labels: int = 0  # dropped: nothing to train on

    def summary(self) -> RunSummary:
        """The counts the job record keeps."""
        return {
            "shortenedExamples": self.shortened,
            "droppedTurns": self.dropped_turns,
            "truncatedExamples": self.truncated,
            "droppedExamples": self.too_long,
        }

    def described(self) -> str:
        """The counts as the run's log line words them (empty when all fit as they were)."""
        parts = []
        if self.shortened:
            parts.append(
                f", {self.shortened} shortened ({self.dropped_turns} oldest conversation "
                "turns dropped)"
            )
        if self.truncated:
            parts.append(f", {self.truncated} truncated from the left")
        if self.too_long:
            parts.append(
                f", {self.too_long} dropped (reply and format instructions longer than "
                "maxSeqLength)"
            )
        if self.no_labels:
            parts.append(f" ({self.no_labels} without assistant tokens skipped)")
        return "".join(parts)

    def kept(self, examples: Sequence[Example] | None, cuts: Cuts) -> bool:
        """Count one row fitted into ``max_seq_length`` (``examples`` None: it could
        not be); True when it trains: it fit and each of its examples has a trained
        token. ``examples`` counts only once it is kept."""
        if examples is None:
            self.too_long += 1
            return False
        if not all(ex.n_labels for ex in examples):
            self.no_labels += 1
            return False
        self.shortened += cuts.turns > 0
        self.dropped_turns += cuts.turns
        self.truncated += cuts.truncated
        self.examples += 1
        return True


def tokenized_examples(
    path: Path, tokenizer: Any, max_seq_length: int, limit: int | None = None
) -> tuple[list[Example], DataStats]:
    """Tokenised examples that fit ``max_seq_length`` (``fit_row``) with at least one
    trained token, and the counts of those cut and left out."""
    stats = DataStats()
    if not path.is_file():
        return [], stats
    rows = list(read_lines(path))
    if limit is not None:
        rows = rows[:limit]
    out: list[Example] = []
    for row in rows:
        ex, cuts = fit_row(tokenizer, row, max(2, max_seq_length))
        if stats.kept(None if ex is None else (ex,), cuts):
            out.append(ex)  # type: ignore[arg-type]
    return out, stats


def train_and_val_examples(
    spec: TrainSpec, tokenizer: Any, callback: TrainingCallback
) -> tuple[list[Example], list[Example]]:
    """The run's tokenised training and validation examples (the first
    ``max_val_examples`` of ``valid.jsonl``); an input error when none train. The
    training file's counts go on the job (``DataStats.summary``) and in its log."""
    train_set, stats = tokenized_examples(
        spec.dataset_dir / "train.jsonl", tokenizer, spec.max_seq_length
    )
    if not train_set:
        why = (
            f"; {stats.too_long} replies with their format instructions are longer than "
            f"maxSeqLength={spec.max_seq_length}"
            if stats.too_long
            else ""
        )
        raise InputError(f"dataset {spec.dataset_dir} has no assistant turns to train on{why}")
    val_set, _ = tokenized_examples(
        spec.dataset_dir / "valid.jsonl", tokenizer, spec.max_seq_length,
        limit=spec.max_val_examples,
    )  # fmt: skip
    callback.on_log(
        f"{len(train_set)} training and {len(val_set)} validation examples" + stats.described()
    )
    callback.on_summary(stats.summary())
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


def pack_rows(examples: Sequence[Block], token_budget: int) -> Iterator[list[Block]]:
    """Group a batch into rows of at most ``token_budget`` tokens (longest first), so a
    row is one padding-free packed sequence and attention cost stays bounded. A block
    longer than the budget gets a row of its own."""
    rows: list[list[Block]] = []
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


# -- shared-prefix packing (issue 26) ---------------------------------------------------------
#: Shortest prompt prefix worth carrying once: below it, the extra attention pieces of a
#: shared block cost about what the saved tokens would.
MIN_SHARED_PREFIX = 64


@dataclass(frozen=True)
class Shared:
    """Examples whose first ``prefix`` tokens are the same: one block of a packed row,
    the prefix once, then each example's rest (its *continuation*), which sees the
    prefix and itself only (``attention.py``), at the positions it has alone."""

    examples: tuple[Example, ...]
    prefix: int

    def __len__(self) -> int:
        return self.prefix + sum(len(ex) - self.prefix for ex in self.examples)


#: What a packed row holds: examples alone, and blocks sharing a prefix.
Block = Example | Shared


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_blocks(examples: Sequence[Example], min_prefix: int, limit: int) -> list[Block]:
    """A batch as blocks: examples that share a prefix of at least ``min_prefix`` tokens
    grouped (``Shared``, at most ``limit`` tokens each), the others alone.

    The examples are sorted by their token ids, so those sharing a prefix are
    neighbours; a run of neighbours grows while the tokens it saves (every member but
    one skips the run's common prefix) do not fall. Each continuation keeps at least
    one token, so an example that is another's prefix still has its own last position.
    """
    order = sorted(examples, key=lambda ex: ex.input_ids)
    runs: list[tuple[list[Example], int]] = []
    for ex in order:
        if runs:
            members, prefix = runs[-1]
            lcp = min(common_prefix(members[-1].input_ids, ex.input_ids), len(ex) - 1)
            grown = min(prefix, lcp) if len(members) > 1 else lcp
            saved = (len(members) - 1) * prefix if len(members) > 1 else 0
            if grown >= min_prefix and len(members) * grown >= saved:
                runs[-1] = ([*members, ex], grown)
                continue
        runs.append(([ex], len(ex) - 1))
    blocks: list[Block] = []
    for members, prefix in runs:
        prefix = min([prefix] + [len(ex) - 1 for ex in members])
        blocks.extend(_split(members, prefix, limit) if len(members) > 1 else members)
    return blocks


def _split(members: list[Example], prefix: int, limit: int) -> list[Block]:
    """``members`` sharing ``prefix`` in blocks of at most ``limit`` tokens (longest
    continuations first); a block of one is that example alone."""
    chunks: list[list[Example]] = []
    sizes: list[int] = []
    for ex in sorted(members, key=len, reverse=True):
        rest = len(ex) - prefix
        for i, size in enumerate(sizes):
            if size + rest <= limit:
                chunks[i].append(ex)
                sizes[i] += rest
                break
        else:
            chunks.append([ex])
            sizes.append(prefix + rest)
    return [Shared(tuple(c), prefix) if len(c) > 1 else c[0] for c in chunks]


@dataclass(frozen=True)
class Packing:
    """How a batch becomes packed rows: rows of ``budget`` tokens (``pack_rows``) and,
    with ``min_prefix`` > 0, shared prompt prefixes carried once per row
    (``shared_blocks``). A shared block may exceed ``budget`` up to ``limit`` (the
    run's longest example may make a row that long anyway)."""

    budget: int
    min_prefix: int = 0
    limit: int = 0

    def rows(self, examples: Sequence[Example]) -> list[list[Block]]:
        """The rows of one batch (or micro-batch)."""
        if self.min_prefix <= 0 or len(examples) < 2:
            return list(pack_rows(examples, self.budget))
        limit = max(self.budget, self.limit)
        return list(pack_rows(shared_blocks(examples, self.min_prefix, limit), self.budget))


class RowLayout(NamedTuple):
    """One packed row as plain lists (``row_layout``), for any backend to put on its
    device: the ids the decoder runs over, each token's position, and the loss's
    gather."""

    ids: list[int]
    positions: list[int]
    src: list[int]  # the row index of the hidden state that predicts each target
    tgt: list[int]  # the target token
    seg: list[int]  # which of the row's examples each target belongs to
    lengths: list[int]  # the row's segments in order: a prefix, or an example's tokens
    parents: list[int]  # the segment each segment also sees in full (its prefix); -1: none
    n_tokens: int  # the examples' tokens, as if each were alone


def row_layout(blocks: Sequence[Block]) -> RowLayout:
    """The layout of one packed row of ``blocks``: a block alone is its tokens; a
    ``Shared`` block is its prefix once, then each example's continuation at the
    positions it has alone (from the prefix's length on). A target predicted from
    inside the prefix reads the prefix's hidden state, once per example that trains it,
    so every example's loss is the one it has alone."""
    out = RowLayout([], [], [], [], [], [], [], 0)
    ids, k = out.ids, 0
    for block in blocks:
        shared = block if isinstance(block, Shared) else Shared((block,), 0)
        p, start, parent = shared.prefix, len(ids), -1
        if p:
            ids.extend(shared.examples[0].input_ids[:p])
            out.positions.extend(range(p))
            parent = len(out.lengths)
            out.lengths.append(p)
            out.parents.append(-1)
        for ex in shared.examples:
            base = len(ids) - p  # row index of the example's token t (t >= p) is base + t
            ids.extend(ex.input_ids[p:])
            out.positions.extend(range(p, len(ex)))
            out.lengths.append(len(ex) - p)
            out.parents.append(parent)
            for t in range(1, len(ex)):
                if ex.mask[t]:  # hidden state t-1 predicts token t
                    out.src.append(start + t - 1 if t - 1 < p else base + t - 1)
                    out.tgt.append(ex.input_ids[t])
                    out.seg.append(k)
            k += 1
    return out._replace(n_tokens=sum(len(ex) for b in blocks for ex in block_examples(b)))


def prompt_length(example: Example) -> int:
    """Tokens before the hidden state that predicts the example's first trained token:
    its prompt, of which all but the last ``TrainSpec.prompt_gradient_tokens`` run
    without gradient."""
    first = example.mask.index(True, 1) if True in example.mask[1:] else len(example)
    return first - 1


class DetachedLayout(NamedTuple):
    """A row of examples split for a detached prompt (``detached_layout``)."""

    #: Each example's prompt, causal on its own, no targets: run without gradient.
    prompts: RowLayout
    #: Each example's rest at the positions it has alone, seeing its prompt (the
    #: ``prompts`` segment its ``parents`` entry names, from a cache) and itself.
    replies: RowLayout


def detached_layout(examples: Sequence[Example], keep: int = 0) -> DetachedLayout:
    """The two rows of a detached prompt: the examples' prompts but their last ``keep``
    tokens (``prompt_length``; a shorter prompt has none to detach), then the rest of
    each example, whose targets are all predicted from there."""
    prompts = RowLayout([], [], [], [], [], [], [], 0)
    replies = RowLayout([], [], [], [], [], [], [], 0)
    for k, ex in enumerate(examples):
        p, start = max(0, prompt_length(ex) - keep), len(replies.ids)
        if p:
            prompts.ids.extend(ex.input_ids[:p])
            prompts.positions.extend(range(p))
            prompts.lengths.append(p)
            prompts.parents.append(-1)
        replies.ids.extend(ex.input_ids[p:])
        replies.positions.extend(range(p, len(ex)))
        replies.lengths.append(len(ex) - p)
        replies.parents.append(len(prompts.lengths) - 1 if p else -1)
        for t in range(p + 1, len(ex)):
            if ex.mask[t]:  # hidden state t-1 predicts token t
                replies.src.append(start + t - 1 - p)
                replies.tgt.append(ex.input_ids[t])
                replies.seg.append(k)
    n_tokens = sum(len(ex) for ex in examples)
    return DetachedLayout(prompts._replace(n_tokens=0), replies._replace(n_tokens=n_tokens))


def block_examples(block: Block) -> tuple[Example, ...]:
    """The examples of a block of a packed row."""
    return block.examples if isinstance(block, Shared) else (block,)


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


# -- preference objectives (issue 27) -------------------------------------------------------
@dataclass(frozen=True)
class PreferenceItem:
    """A DPO pair (``examples`` = chosen, rejected) or a KTO example (one, ``label``);
    each tokenised and masked exactly as an SFT example with that reply."""

    examples: tuple[Example, ...]
    label: bool | None = None

    def __len__(self) -> int:
        return sum(len(ex) for ex in self.examples)


def fit_pair(
    tokenizer: Any, prompt: list[Message], sides: Sequence[list[Message]], max_len: int
) -> tuple[tuple[Example, ...] | None, Cuts]:
    """A DPO pair's sides (``prompt`` + each side's messages) within ``max_len`` tokens,
    both with the same prompt tokens, and what fitting took out; None when it cannot be.

    DPO compares two replies to one prompt, so the prompt is shortened once: the side
    with the longer reply is fitted like an SFT row (``fit_row``: oldest conversation
    turns, then around the newest turn, then from the left), and the other side's reply
    follows that same shortened prompt (the prompt is the longer side's tokens even when
    nothing is cut). Its reply being no longer, it fits as well. A side's own tokens (the
    trained spans of its assistant messages, through the end) are never cut: a pair
    whose longer reply cannot fit is dropped, as is one whose side has no trained reply."""
    encoded = [tokenize_row(tokenizer, {"messages": prompt + side}) for side in sides]
    replies = [sum(m.get("role") == "assistant" for m in side) for side in sides]
    starts = [reply_start(ex, n) for ex, n in zip(encoded, replies, strict=True)]
    if None in starts:
        return None, Cuts()
    tails = [
        Example(ex.input_ids[s:], ex.mask[s:])  # type: ignore[misc]
        for ex, s in zip(encoded, starts, strict=True)
    ]
    longest = max(range(len(sides)), key=lambda i: len(tails[i]))
    fitted, cuts = encoded[longest], Cuts()
    if len(fitted) > max_len:
        ex, cuts = fit_row(tokenizer, {"messages": prompt + sides[longest]}, max_len)
        at = None if ex is None else reply_start(ex, replies[longest])
        if ex is None or at is None or ex.input_ids[at:] != tails[longest].input_ids:
            return None, Cuts()
        fitted = ex
    head = len(fitted) - len(tails[longest])
    ids, mask = fitted.input_ids[:head], fitted.mask[:head]
    return tuple(Example(ids + t.input_ids, mask + t.mask) for t in tails), cuts


def preference_item(
    tokenizer: Any, row: JsonObject, objective: str, max_len: int
) -> tuple[PreferenceItem | None, Cuts]:
    """The item of one dataset line for ``objective`` (``dpo``: a ``pairs`` line,
    ``kto``: a ``labelled`` one), each example fitted into ``max_len`` tokens as an SFT
    row is (``fit_row``; a pair's two sides keep one prompt: ``fit_pair``), and what
    fitting took out; None when it cannot fit."""
    max_len = max(2, max_len)
    if objective == "dpo":
        if not all(isinstance(row.get(k), list) for k in ("prompt", "chosen", "rejected")):
            raise InputError("objective dpo needs pairs lines: prompt, chosen and rejected lists")
        pair, cuts = fit_pair(tokenizer, row["prompt"], [row["chosen"], row["rejected"]], max_len)
        return (None if pair is None else PreferenceItem(pair)), cuts
    if not isinstance(row.get("label"), bool) or not isinstance(row.get("messages"), list):
        raise InputError("objective kto needs labelled lines: messages and a true/false label")
    tools = row.get("tools")
    line: JsonObject = {"messages": row["messages"], **({"tools": tools} if tools else {})}
    ex, cuts = fit_row(tokenizer, line, max_len)
    return (None if ex is None else PreferenceItem((ex,), row["label"])), cuts


def preference_items(
    spec: TrainSpec, tokenizer: Any, callback: TrainingCallback
) -> tuple[list[PreferenceItem], list[PreferenceItem]]:
    """The run's training and validation items (``train_and_val_examples`` for DPO/KTO):
    the training file's counts (``DataStats``) go on the job and in its log."""
    out: list[list[PreferenceItem]] = []
    stats = DataStats()
    for name, limit in (("train.jsonl", None), ("valid.jsonl", spec.max_val_examples)):
        path = spec.dataset_dir / name
        rows = list(read_lines(path)) if path.is_file() else []
        counts = stats if limit is None else DataStats()
        kept: list[PreferenceItem] = []
        for row in rows:
            item, cuts = preference_item(tokenizer, row, spec.objective, spec.max_seq_length)
            if counts.kept(None if item is None else item.examples, cuts):
                kept.append(item)  # type: ignore[arg-type]
        out.append(kept if limit is None else kept[:limit])
    if not out[0]:
        raise InputError(
            f"dataset {spec.dataset_dir} has no {spec.objective} items that fit "
            f"maxSeqLength={spec.max_seq_length}"
        )
    callback.on_log(
        f"{len(out[0])} training and {len(out[1])} validation {spec.objective} items"
        + stats.described()
    )
    callback.on_summary(stats.summary())
    return out[0], out[1]


def splice(prompt_of: Example, completion_of: Example) -> Example:
    """``prompt_of``'s prompt (the tokens before its first trained one) with
    ``completion_of``'s completion: KTO's mismatched pair for its KL estimate."""
    p = prompt_of.mask.index(True) if True in prompt_of.mask else len(prompt_of)
    c = completion_of.mask.index(True) if True in completion_of.mask else len(completion_of)
    return Example(
        prompt_of.input_ids[:p] + completion_of.input_ids[c:],
        [False] * p + completion_of.mask[c:],
    )
