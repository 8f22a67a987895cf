"""Attention for packed rows on CPU: each example of a row attends only to itself.

The torch backend packs a batch's examples into padding-free rows with restarting
``position_ids``. With transformers' ``sdpa`` that becomes one block-diagonal mask over
the whole row, and the CPU kernel computes every masked block: a row of two 256-token
examples pays for 512² scores instead of 2 × 256² (half of them masked again by
causality). Here the row is split at the example boundaries and each piece runs
``scaled_dot_product_attention`` with ``is_causal=True`` and no mask — the same result
(each token sees the earlier tokens of its own example), measured ~8 % faster per
training step on SmolLM2 with 512-token rows.

Registered with transformers' ``AttentionInterface`` under ``NAME``; a model loaded with
``attn_implementation=NAME`` builds no mask at all (the name has no mask function), and
the decoder is called with ``segment_lengths=`` the examples' lengths in row order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

NAME = "milady_segments"
_registered = False


def register() -> str:
    """Make ``NAME`` a valid ``attn_implementation`` (once per process); returns it."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, segment_attention)
        _registered = True
    return NAME


def segment_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each segment of a ``(1, heads, tokens, dim)`` row.

    ``segment_lengths`` (kwargs; default: the whole row is one example) sum to the row
    length. Returns ``(1, tokens, heads, dim)`` like transformers' own functions."""
    if query.shape[0] != 1:
        raise ValueError("segment attention takes one packed row at a time")
    lengths = kwargs.get("segment_lengths") or (query.shape[2],)
    gqa = query.shape[1] != key.shape[1]
    pieces = [
        F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa
        )
        for q, k, v in zip(
            query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True
        )
    ]
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, 2)
    return out.transpose(1, 2).contiguous(), None
