"""A packed row on the device and its loss: what the torch loop (``torch.py``) trains on
and what ``parallel.py``'s sharded evaluation scores, so both take it from here.

A row holds several examples back to back without padding, with ``position_ids`` that
restart at each example; the loss is summed only over the hidden states that predict
assistant tokens, so ``lm_head`` never runs over the whole row.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .data import Example


class Packed:
    """One padding-free row: ids, restarting positions, and where the loss is taken."""

    def __init__(self, examples: list[Example], device: torch.device) -> None:
        ids: list[int] = []
        pos: list[int] = []
        src: list[int] = []
        tgt: list[int] = []
        seg: list[int] = []  # which of the row's examples each target belongs to
        for k, ex in enumerate(examples):
            base = len(ids)
            ids.extend(ex.input_ids)
            pos.extend(range(len(ex)))
            for t in range(1, len(ex)):
                if ex.mask[t]:
                    src.append(base + t - 1)  # hidden state t-1 predicts token t
                    tgt.append(ex.input_ids[t])
                    seg.append(k)
        self.n_tokens = len(ids)
        self.n_labels = len(tgt)
        self.lengths = tuple(len(ex) for ex in examples)  # for ``attention.NAME``
        self.input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        self.position_ids = torch.tensor([pos], dtype=torch.long, device=device)
        self.src = torch.tensor(src, dtype=torch.long, device=device)
        self.tgt = torch.tensor(tgt, dtype=torch.long, device=device)
        # Per-example sums (DPO/KTO score each completion apart: ``preference_torch``).
        self.seg = torch.tensor(seg, dtype=torch.long, device=device)


def row_loss_sum(decoder: Any, lm_head: Any, row: Packed, autocast: Any) -> torch.Tensor:
    """Summed cross-entropy over the row's assistant targets, without full logits."""
    with autocast():
        hidden = decoder(
            input_ids=row.input_ids,
            position_ids=row.position_ids,
            use_cache=False,
            segment_lengths=row.lengths,  # read by attention.NAME only
        ).last_hidden_state[0]
        logits = lm_head(hidden.index_select(0, row.src))
    return F.cross_entropy(logits.float(), row.tgt, reduction="sum")
