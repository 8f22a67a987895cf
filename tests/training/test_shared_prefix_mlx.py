"""Shared-prefix packing on the mlx backend (issue 26): a batch whose examples share a
prompt prefix carries it once per row, and its loss and LoRA gradients equal those of
the same batch unshared (fp32, 1e-5), on llama (plain, llama3 rope, a sliding-window
layer) and qwen3; a real mlx run with ``share_prefix`` has the losses of one without."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from milady_lab.training.backends.data import MIN_SHARED_PREFIX, Example

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")
mb = pytest.importorskip("milady_lab.training.backends.mlx")

VOCAB = 300


def tiny_model(kind: str) -> Any:
    """A 2-layer random model of mlx-lm (GQA, fp32) with LoRA on q and v, its
    ``lora_b`` random too so every LoRA weight has a gradient."""
    from mlx.utils import tree_map
    from mlx_lm.models import llama, qwen3
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx.random.seed(0)
    shape = {
        "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "vocab_size": VOCAB,
    }  # fmt: skip
    if kind == "qwen3":
        model = qwen3.Model(
            qwen3.ModelArgs(
                model_type="qwen3", head_dim=16, max_position_embeddings=512,
                rope_theta=10_000, tie_word_embeddings=False, **shape,
            )
        )  # fmt: skip
    else:
        extra: dict[str, Any] = {
            "llama3-rope": {
                "rope_scaling": {
                    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
                },
            },
            # The window (48) is shorter than the shared prefix: it counts positions.
            "sliding": {"layer_types": ["sliding_attention", "full_attention"],
                        "sliding_window": 48},
        }.get(kind, {})  # fmt: skip
        model = llama.Model(llama.ModelArgs(model_type="llama", **shape, **extra))
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj"]
    lora = {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": keys}
    linear_to_lora_layers(model, 2, lora)
    model.update(tree_map(lambda a: 0.1 * mx.random.normal(a.shape), model.trainable_parameters()))
    return model


def batch() -> list[Example]:
    """Three examples sharing an 80-token head, one sharing 70 of it and training
    tokens inside it (they count for it), one sharing nothing."""
    rng = random.Random(0)
    head = [rng.randrange(3, VOCAB) for _ in range(80)]

    def ex(ids: list[int], train_from: int) -> Example:
        return Example(ids, [False] * train_from + [True] * (len(ids) - train_from))

    out = [ex(head + [rng.randrange(3, VOCAB) for _ in range(n)], 80 + n // 2) for n in (9, 25, 6)]
    out.append(ex([*head[:70], 5, 6, 7, 8], 60))
    out.append(ex([rng.randrange(3, VOCAB) for _ in range(40)], 20))
    return out


def loss_and_grads(model: Any, arrays: tuple) -> tuple[float, dict[str, np.ndarray]]:
    from mlx.utils import tree_flatten

    (loss, _), grads = nn.value_and_grad(model, mb.masked_loss)(model, *arrays)
    return loss.item(), {k: np.array(g) for k, g in tree_flatten(grads)}


@pytest.mark.parametrize("kind", ["llama", "llama3-rope", "sliding", "qwen3"])
def test_shared_batch_has_the_loss_and_gradients_of_the_unshared_one(kind: str) -> None:
    examples = batch()
    model = tiny_model(kind)
    plain, tokens = mb._to_batch(examples, 512, selective=True)
    want, want_grads = loss_and_grads(model, plain)

    built = mb._to_shared_batch(examples, 512, MIN_SHARED_PREFIX)
    assert built is not None
    shared, n, computed = built
    # It shared for real: the examples' tokens counted, fewer computed.
    assert n == tokens == sum(map(len, examples))
    assert computed == 70 + (10 + 9) + (10 + 25) + (10 + 6) + 4 + 40
    got, got_grads = loss_and_grads(mb.positioned(model), shared)
    assert got == pytest.approx(want, rel=1e-5)
    assert got_grads.keys() == want_grads.keys() and len(got_grads) == 8
    for key, g in got_grads.items():
        np.testing.assert_allclose(g, want_grads[key], rtol=1e-5, atol=1e-6, err_msg=key)
        assert np.abs(g).max() > 1e-4, key

    # mlx-lm compiles the step: the shared rows go through ``mx.compile`` as they are.
    step = mx.compile(lambda *a: mb.masked_loss(model, *a)[0])
    assert step(*shared).item() == pytest.approx(want, rel=1e-5)
    # The scale that gradient accumulation appends still scales the loss.
    half = step(*shared, mx.array(0.5, mx.float32)).item()
    assert half == pytest.approx(want / 2, rel=1e-5)


def test_batches_share_only_when_asked_and_when_a_prefix_is_long_enough() -> None:
    examples = batch()
    on = mb.Batches(0, 0, selective=True, min_prefix=MIN_SHARED_PREFIX)
    arrays, n, computed = on.arrays(examples, 512)
    assert len(arrays) == 5 and computed < n
    off = mb.Batches(0, 0, selective=True)
    arrays, n, computed = off.arrays(examples, 512)
    assert len(arrays) == 4 and computed == n
    # Nothing shares 64 tokens: the plain padded rows, no mask to build.
    unrelated = [examples[0], examples[-1]]
    assert mb._to_shared_batch(unrelated, 512, MIN_SHARED_PREFIX) is None
    arrays, n, computed = on.arrays(unrelated, 512)
    assert len(arrays) == 4 and computed == n


@pytest.mark.slow
def test_an_mlx_run_with_shared_prefixes_has_the_losses_of_one_without(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Same seed, same batches, ``share_prefix`` on and off through mlx-lm's compiled
    trainer: the same training and validation losses step by step, the loss falls, and
    the shared run says it computed fewer tokens."""
    from milady_lab.training.backends import run_training

    from .conftest import write_dataset
    from .test_backends import Recorder, make_spec
    from .test_shared_prefix import ROWS

    data = write_dataset(tmp_path / "data", ROWS * 2, ROWS[:3])
    runs = []
    for share in (True, False):
        rec = Recorder()
        spec = make_spec(
            tiny_llama_dir, data, tmp_path / str(share), "mlx",
            iterations=8, eval_every=4, share_prefix=share, prompt_gradient_tokens=None,
        )  # fmt: skip
        run_training(spec, rec)
        runs.append(rec)
    shared, plain = runs
    assert shared.losses() == pytest.approx(plain.losses(), rel=1e-4)
    assert shared.losses()[-1] < 0.9 * shared.losses()[0], shared.losses()
    vals = [[m["valLoss"] for m in r.metrics if "valLoss" in m] for r in runs]
    assert len(vals[0]) == 2 and vals[0] == pytest.approx(vals[1], rel=1e-4)
    assert [m["trainedTokens"] for m in shared.metrics] == [
        m["trainedTokens"] for m in plain.metrics
    ]
    assert any("shared prompt prefixes carried once" in line for line in shared.logs)
    assert not any("shared prompt prefixes" in line for line in plain.logs)
