"""A packed row on the device and its loss: what the torch loop (``torch.py``) trains on
and what ``parallel.py``'s sharded evaluation scores, so both take it from here.

A row holds several examples back to back without padding, with ``position_ids`` that
restart at each example; the loss is summed only over the hidden states that predict
assistant tokens, so ``lm_head`` never runs over the whole row.

Examples that share a prompt prefix (``data.Shared``, issue 26) carry it once: the
prefix, then each example's continuation at the positions it has alone (from the
prefix's length on), seeing the prefix and itself only (``attention.py``). A target
predicted from inside the prefix reads the prefix's hidden state, once per example that
trains it, so every example's loss and gradient are those it has alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .data import Block, Shared


class Packed:
    """One padding-free row: ids, positions, its segments, and where the loss is taken.

    ``lengths`` are the row's segments in order (a prefix or an example's tokens) and
    ``parents[i]`` the segment that segment ``i`` also sees in full (its shared prefix),
    -1 for none. ``row_mask`` (cuda only, or when asked) is the same layout as one
    ``(1, 1, tokens, tokens)`` boolean mask for a single masked sdpa call."""

    def __init__(
        self, blocks: Sequence[Block], device: torch.device, row_mask: bool | None = None
    ) -> None:
        ids: list[int] = []
        pos: list[int] = []
        src: list[int] = []
        tgt: list[int] = []
        seg: list[int] = []  # which of the row's examples each target belongs to
        lengths: list[int] = []
        parents: list[int] = []
        k = 0
        for block in blocks:
            shared = block if isinstance(block, Shared) else Shared((block,), 0)
            p, start, parent = shared.prefix, len(ids), -1
            if p:
                ids.extend(shared.examples[0].input_ids[:p])
                pos.extend(range(p))
                parent = len(lengths)
                lengths.append(p)
                parents.append(-1)
            for ex in shared.examples:
                base = len(ids) - p  # row index of the example's token t (t >= p) is base + t
                ids.extend(ex.input_ids[p:])
                pos.extend(range(p, len(ex)))
                lengths.append(len(ex) - p)
                parents.append(parent)
                for t in range(1, len(ex)):
                    if ex.mask[t]:  # hidden state t-1 predicts token t
                        src.append(start + t - 1 if t - 1 < p else base + t - 1)
                        tgt.append(ex.input_ids[t])
                        seg.append(k)
                k += 1
        #: Tokens of the examples, as if each were alone (what ``trainedTokens`` counts).
        self.n_tokens = sum(len(ex) for b in blocks for ex in _examples(b))
        #: Tokens the decoder runs over (fewer when a prefix is shared).
        self.n_processed = len(ids)
        self.n_labels = len(tgt)
        self.lengths = tuple(lengths)  # for ``attention.NAME``
        self.parents = tuple(parents)
        self.input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        self.position_ids = torch.tensor([pos], dtype=torch.long, device=device)
        self.src = torch.tensor(src, dtype=torch.long, device=device)
        self.tgt = torch.tensor(tgt, dtype=torch.long, device=device)
        # Per-example sums (DPO/KTO score each completion apart: ``preference_torch``).
        self.seg = torch.tensor(seg, dtype=torch.long, device=device)
        wants_mask = device.type == "cuda" if row_mask is None else row_mask
        self.row_mask = self._mask(device) if wants_mask else None

    def _mask(self, device: torch.device) -> torch.Tensor:
        """Token i sees token j when j is at or before i in i's segment, or anywhere in
        the segment i's segment shares a prefix with."""
        lengths = torch.tensor(self.lengths, device=device)
        segment = torch.repeat_interleave(torch.arange(len(self.lengths), device=device), lengths)
        parent = torch.tensor(self.parents, device=device).index_select(0, segment)
        idx = torch.arange(len(segment), device=device)
        own = (segment[:, None] == segment[None, :]) & (idx[None, :] <= idx[:, None])
        return (own | (parent[:, None] == segment[None, :]))[None, None]

    def decoder_inputs(self) -> dict[str, Any]:
        """Keyword arguments of the decoder's forward for this row."""
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "use_cache": False,
            # read by attention.NAME only
            "segment_lengths": self.lengths,
            "segment_parents": self.parents,
            "segment_mask": self.row_mask,
        }


def _examples(block: Block) -> tuple[Any, ...]:
    return block.examples if isinstance(block, Shared) else (block,)


def row_loss_sum(decoder: Any, lm_head: Any, row: Packed, autocast: Any) -> torch.Tensor:
    """Summed cross-entropy over the row's assistant targets, without full logits."""
    with autocast():
        hidden = decoder(**row.decoder_inputs()).last_hidden_state[0]
        logits = lm_head(hidden.index_select(0, row.src))
    return F.cross_entropy(logits.float(), row.tgt, reduction="sum")
