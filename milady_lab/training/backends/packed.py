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

A detached prompt (``TrainSpec.prompt_gradient_tokens``, SFT): each example's prompt,
everything before the hidden state that predicts its first trained token, but its last
``keep`` tokens runs first in a row of its own without gradient, its keys and values
kept in a cache; then the rest runs with gradient, each example seeing its own prompt
from the cache and itself. The loss is the one the example has in one piece; the
gradient leaves out what flows back into the detached tokens' own hidden states, so
the backward pass (most of a step) covers the reply and the prompt's last ``keep``
tokens only: on agent-shaped data, of a ~2,000-token prompt and a ~60-token reply.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .data import Block, Example, RowLayout, detached_layout, row_layout


class Packed:
    """One padding-free row: ids, positions, its segments, and where the loss is taken.

    ``lengths`` are the row's segments in order (a prefix or an example's tokens) and
    ``parents[i]`` the segment that segment ``i`` also sees in full (its shared prefix),
    -1 for none. ``row_mask`` (cuda only, or when asked) is the same layout as one
    ``(1, 1, tokens, tokens)`` boolean mask for a single masked sdpa call. The layout
    itself is ``data.row_layout``'s, which the mlx backend's rows share.

    ``prompt`` (``detached``): the row of the examples' prompts, run first without
    gradient; this row's keys then follow that row's (``cached``: its segments'
    lengths) and ``parents`` name its segments. ``blocks`` may be a layout already."""

    def __init__(
        self,
        blocks: Sequence[Block] | RowLayout,
        device: torch.device,
        row_mask: bool | None = None,
        prompt: Packed | None = None,
    ) -> None:
        layout = blocks if isinstance(blocks, RowLayout) else row_layout(blocks)
        self.prompt = prompt
        self.cached = () if prompt is None else prompt.lengths
        #: Tokens of the examples, as if each were alone (what ``trainedTokens`` counts).
        self.n_tokens = layout.n_tokens
        #: Tokens the decoder runs over (fewer when a prefix is shared).
        self.n_processed = len(layout.ids) + (0 if prompt is None else prompt.n_processed)
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

    @classmethod
    def detached(
        cls,
        examples: Sequence[Example],
        device: torch.device,
        keep: int = 0,
        row_mask: bool | None = None,
    ) -> Packed:
        """The rest of each of ``examples`` as a row; their prompts but the last ``keep``
        tokens its ``prompt`` row."""
        prompts, replies = detached_layout(examples, keep)
        prompt = cls(prompts, device, row_mask) if prompts.ids else None
        return cls(replies, device, row_mask, prompt)

    def _mask(self, device: torch.device) -> torch.Tensor:
        """Token i sees key j when j is at or before i in i's segment, or anywhere in
        the segment i's segment shares a prefix with: the row's own, or a cached one
        (the keys then start with the ``cached`` segments, numbered first)."""

        def segments(lengths: Sequence[int], first: int = 0) -> torch.Tensor:
            ids = torch.arange(first, first + len(lengths), device=device)
            return torch.repeat_interleave(ids, torch.tensor(lengths, device=device))

        m = len(self.cached)
        own = segments(self.lengths, m)  # the row's segments are numbered after the cache's
        keys = torch.cat((segments(self.cached), own)) if m else own
        parent = torch.tensor(self.parents, device=device).index_select(0, own - m)
        idx = torch.arange(len(own), device=device)
        key_idx = torch.cat((torch.full((len(keys) - len(own),), -1, device=device), idx))
        sees = (own[:, None] == keys[None, :]) & (key_idx[None, :] <= idx[:, None])
        return (sees | (parent[:, None] == keys[None, :]))[None, None]

    def decoder_inputs(self, cache: Any = None) -> dict[str, Any]:
        """Keyword arguments of the decoder's forward for this row, with the cache the
        prompt row filled (or is to fill) when the prompt is detached."""
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "use_cache": cache is not None,
            **({} if cache is None else {"cache": cache}),
            # read by attention.NAME only
            "segment_lengths": self.lengths,
            "segment_parents": self.parents,
            "segment_cached": self.cached,
            "segment_mask": self.row_mask,
        }


def row_loss_sum(decoder: Any, lm_head: Any, row: Packed, autocast: Any) -> torch.Tensor:
    """Summed cross-entropy over the row's assistant targets, without full logits; a
    detached prompt row first, without gradient, into the cache the row reads."""
    with autocast():
        cache = None
        if row.prompt is not None:
            from transformers import DynamicCache

            cache = DynamicCache()
            with torch.no_grad():
                decoder(**_named(decoder, row.prompt.decoder_inputs(cache)))
        hidden = decoder(**_named(decoder, row.decoder_inputs(cache))).last_hidden_state[0]
        logits = lm_head(hidden.index_select(0, row.src))
    return F.cross_entropy(logits.float(), row.tgt, reduction="sum")


def _named(decoder: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """``inputs`` with the cache under the name this transformers takes (``cache``
    from 5.x on, ``past_key_values`` before)."""
    if "cache" in inputs and _cache_name(type(getattr(decoder, "module", decoder))) != "cache":
        inputs["past_key_values"] = inputs.pop("cache")
    return inputs


@functools.cache
def _cache_name(decoder_type: type) -> str:
    params = inspect.signature(decoder_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
