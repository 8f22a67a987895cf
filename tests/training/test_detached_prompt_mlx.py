"""A detached prompt on the mlx backend (``TrainSpec.prompt_gradient_tokens``, issue 26):
the batch's shortest prompt but its last N tokens runs without gradient into a cache
the rest reads. The loss
is the plain batch's (fp32, 1e-5); the gradient is the plain one where the adapters
cannot reach the replies through the prompt, and leaves the prompt's part out where
they can; mlx-lm's compiled step takes the arrays as they are."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from milady_lab.training.backends.data import Example

from .test_shared_prefix_mlx import VOCAB, loss_and_grads, tiny_model

mx = pytest.importorskip("mlx.core")
mb = pytest.importorskip("milady_lab.training.backends.mlx")


def batch() -> list[Example]:
    """Prompts of 70-90 tokens (a trained turn inside one of them), replies of 6-25."""
    rng = random.Random(1)

    def ex(prompt: int, reply: int) -> Example:
        ids = [rng.randrange(3, VOCAB) for _ in range(prompt + reply)]
        return Example(ids, [False] * prompt + [True] * reply)

    multi = ex(75, 10)
    multi.mask[78:80] = [False, False]  # a user turn between two trained spans
    return [ex(90, 9), ex(70, 25), multi, ex(80, 6)]


def last_q_only() -> Any:
    """The tiny llama with LoRA on the last layer's ``q_proj`` only: nothing the adapter
    changes reaches a prompt's keys or values, so no gradient is left out."""
    from mlx.utils import tree_map
    from mlx_lm.models import llama
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx.random.seed(0)
    model = llama.Model(
        llama.ModelArgs(
            model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
        )
    )  # fmt: skip
    model.freeze()
    lora = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": ["self_attn.q_proj"]}
    linear_to_lora_layers(model, 1, lora)
    model.update(tree_map(lambda a: 0.1 * mx.random.normal(a.shape), model.trainable_parameters()))
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_detached_batch_keeps_the_loss_and_drops_only_the_prompts_gradient(kind: str) -> None:
    examples = batch()
    assert mb._detached_prompt(examples) == 64  # the shortest prompt, 70, down to PAD_TO
    assert mb._detached_prompt(examples, keep=20) == 32 and mb._detached_prompt(examples, 70) == 0
    plain, tokens = mb._to_batch(examples, 512, selective=True)
    detached, n = mb._to_batch(examples, 512, True, mb._detached_prompt(examples))
    assert n == tokens and detached[0].shape == (4, 64) and len(detached) == 5

    for model, exact in ((last_q_only(), True), (tiny_model(kind), False)):
        want, want_grads = loss_and_grads(model, plain)
        got, got_grads = loss_and_grads(model, detached)
        assert got == pytest.approx(want, rel=1e-5)
        assert got_grads.keys() == want_grads.keys()
        same = [np.allclose(g, want_grads[k], rtol=1e-5, atol=1e-6) for k, g in got_grads.items()]
        assert all(same) if exact else not all(same), (kind, exact)
        assert all(np.abs(g).max() > 1e-5 for g in got_grads.values())

    # mlx-lm compiles the step: the two id arrays go through ``mx.compile`` as they are.
    model = tiny_model(kind)
    want = loss_and_grads(model, plain)[0]
    step = mx.compile(lambda *a: mb.masked_loss(model, *a)[0])
    assert step(*detached).item() == pytest.approx(want, rel=1e-5)
    assert step(*detached, mx.array(0.5, mx.float32)).item() == pytest.approx(want / 2, rel=1e-5)


def test_batches_detach_only_when_asked() -> None:
    examples = batch()
    on = mb.Batches(0, 0, selective=True, keep=0)
    arrays, n, computed = on.arrays(examples, 512)
    assert len(arrays) == 5 and n == computed == sum(map(len, examples))
    off = mb.Batches(0, 0, selective=True)
    assert len(off.arrays(examples, 512)[0]) == 4
    # A batch with an example trained from its first token has no prompt to detach.
    first = Example([5, 6, 7, 8], [False, True, True, True])
    assert len(on.arrays([*examples, first], 512)[0]) == 4
