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

from .data import Block, row_layout


class Packed:
    """One padding-free row: ids, positions, its segments, and where the loss is taken.

    ``lengths`` are the row's segments in order (a prefix or an example's tokens) and
    ``parents[i]`` the segment that segment ``i`` also sees in full (its shared prefix),
    -1 for none. ``row_mask`` (cuda only, or when asked) is the same layout as one
    ``(1, 1, tokens, tokens)`` boolean mask for a single masked sdpa call. The layout
    itself is ``data.row_layout``'s, which the mlx backend's rows share."""

    def __init__(
        self, blocks: Sequence[Block], device: torch.device, row_mask: bool | None = None
    ) -> None:
        layout = row_layout(blocks)
        #: Tokens of the examples, as if each were alone (what ``trainedTokens`` counts).
        self.n_tokens = layout.n_tokens
        #: Tokens the decoder runs over (fewer when a prefix is shared).
        self.n_processed = len(layout.ids)
        self.n_labels = len(layout.tgt)
        self.lengths = tuple(layout.lengths)  # for ``attention.NAME``
        self.parents = tuple(layout.parents)
        self.input_ids = torch.tensor([layout.ids], dtype=torch.long, device=device)
        self.position_ids = torch.tensor([layout.positions], dtype=torch.long, device=device)
        self.src = torch.tensor(layout.src, dtype=torch.long, device=device)
        self.tgt = torch.tensor(layout.tgt, dtype=torch.long, device=device)
        # Per-example sums (DPO/KTO score each completion apart: ``preference_torch``).
        self.seg = torch.tensor(layout.seg, dtype=torch.long, device=device)
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


def row_loss_sum(decoder: Any, lm_head: Any, row: Packed, autocast: Any) -> torch.Tensor:
    """Summed cross-entropy over the row's assistant targets, without full logits."""
    with autocast():
        hidden = decoder(**row.decoder_inputs()).last_hidden_state[0]
        logits = lm_head(hidden.index_select(0, row.src))
    return F.cross_entropy(logits.float(), row.tgt, reduction="sum")
