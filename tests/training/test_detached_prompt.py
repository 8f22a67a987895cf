"""A detached prompt (``TrainSpec.prompt_gradient_tokens``, issue 26): each example's
prompt but its last N tokens runs first without gradient into a cache, then the rest
with gradient. Every example's loss is the one it has in one piece, and the LoRA
gradient is exactly the one where the detached tokens' keys and values are constants:
nothing flows back into those tokens."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch

from milady_lab.training.backends import attention
from milady_lab.training.backends.data import (
    Example,
    detached_layout,
    prompt_length,
    tokenize_row,
)
from milady_lab.training.backends.packed import Packed, row_loss_sum

from .test_shared_prefix import ROWS, per_example_alone
from .test_speed_losses import lora_grads, lora_model


def examples_of(model_dir: Path) -> list[Example]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [tokenize_row(tok, row) for row in ROWS]


def prompt_kv_constant(model: Any, examples: list[Example], keep: int) -> torch.Tensor:
    """The reference: each example alone in one piece, the outputs of every ``k_proj``
    and ``v_proj`` at its prompt's positions but the last ``keep`` detached; summed
    losses per example."""
    prompt = {"p": 0}

    def detach_prompt_rows(_module: Any, _args: Any, out: torch.Tensor) -> torch.Tensor:
        p = prompt["p"]
        return torch.cat((out[:, :p].detach(), out[:, p:]), 1)

    names = ("k_proj", "v_proj")
    hooks = [
        m.register_forward_hook(detach_prompt_rows)
        for n, m in model.named_modules()
        if n.rsplit(".", 1)[-1] in names
    ]
    try:
        sums = []
        for ex in examples:
            prompt["p"] = max(0, prompt_length(ex) - keep)
            sums.append(per_example_alone(model, [ex])[0])
        return torch.stack(sums)
    finally:
        for h in hooks:
            h.remove()


def detached_sums(model: Any, examples: list[Example], keep: int, row_mask: bool) -> torch.Tensor:
    """The summed loss of each detached row of two examples, as training computes it."""
    causal_lm = model.get_base_model()
    sums = []
    for i in range(0, len(examples), 2):
        pair = examples[i : i + 2]
        row = Packed.detached(pair, torch.device("cpu"), keep, row_mask=row_mask)
        assert row.prompt is not None and row.n_processed == row.n_tokens
        sums.append(row_loss_sum(causal_lm.base_model, causal_lm.lm_head, row, nullcontext))
    return torch.stack(sums)


@pytest.mark.parametrize(
    ("row_mask", "keep"), [(False, 0), (True, 0), (False, 12)], ids=["cpu", "cuda-mask", "keep-12"]
)
def test_detached_prompt_keeps_each_loss_and_drops_only_the_prompts_gradient(
    tiny_llama_dir: Path, row_mask: bool, keep: int
) -> None:
    examples = examples_of(tiny_llama_dir)
    n_labels = sum(ex.n_labels for ex in examples)
    plain = lora_model(tiny_llama_dir, "sdpa")
    alone = per_example_alone(plain, examples)
    full = lora_grads(plain, alone.sum() / n_labels)
    reference = prompt_kv_constant(plain, examples, keep)
    torch.testing.assert_close(reference, alone, rtol=1e-5, atol=1e-5)  # forward: the same
    want = lora_grads(plain, reference.sum() / n_labels)

    model = lora_model(tiny_llama_dir, attention.register())
    got = detached_sums(model, examples, keep, row_mask)
    torch.testing.assert_close(got, alone.view(-1, 2).sum(1), rtol=1e-5, atol=1e-5)
    grads = lora_grads(model, got.sum() / n_labels)
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    # ... which is not the full gradient: the prompt's part is what it leaves out.
    assert any(
        not torch.allclose(g, f, rtol=1e-3, atol=1e-5) for g, f in zip(grads, full, strict=True)
    )


def test_a_detached_layout_splits_before_the_first_trained_token() -> None:
    # a prompt of 5 tokens, a reply (trained), a user turn, a second reply (trained)
    multi = Example([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [False] * 6 + [True, False, True, True])
    first = Example([7, 8, 9], [False, True, True])  # the first target is token 1: no prompt
    prompts, replies = detached_layout([multi, first])
    assert prompt_length(multi) == 5 and prompt_length(first) == 0
    assert prompts.ids == [1, 2, 3, 4, 5] and prompts.lengths == [5]
    # Everything from the hidden state that predicts the first target on, at its positions.
    assert replies.ids == [6, 7, 8, 9, 10, 7, 8, 9]
    assert replies.positions == [5, 6, 7, 8, 9, 0, 1, 2]
    assert replies.lengths == [5, 3] and replies.parents == [0, -1]
    assert replies.tgt == [7, 9, 10, 8, 9] and replies.seg == [0, 0, 0, 1, 1]
    assert [replies.ids[s + 1] for s in replies.src] == replies.tgt
    assert replies.n_tokens == 13
    # The prompt's last 2 tokens kept with the reply: the gradient flows through them.
    prompts, replies = detached_layout([multi, first], keep=2)
    assert prompts.ids == [1, 2, 3] and replies.ids[:3] == [4, 5, 6]
    assert replies.positions[:3] == [3, 4, 5] and replies.lengths == [7, 3]
    assert [replies.ids[s + 1] for s in replies.src] == replies.tgt == [7, 9, 10, 8, 9]
