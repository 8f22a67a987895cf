"""Shared-prefix packing (issue 26): examples that share a prompt prefix carry it once per
packed row, and every example's loss and LoRA gradient equal those it has alone, on the
per-example attention of CPU rows and on the one-mask path of CUDA rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from milady_lab.training.backends import attention
from milady_lab.training.backends.data import (
    MIN_SHARED_PREFIX,
    Example,
    Packing,
    Shared,
    shared_blocks,
    tokenize_row,
)
from milady_lab.training.backends.packed import Packed

from .jobkit import ranks_said
from .test_speed_losses import lora_grads, lora_model

#: A system prompt long enough to share (well over ``MIN_SHARED_PREFIX`` tokens).
SYSTEM = "You are Eliza, a calm assistant for a small bakery. " + " ".join(
    f"Rule {i}: answer in one short sentence about bread number {i}." for i in range(9)
)


def chat(*turns: str) -> dict[str, Any]:
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": "system", "content": SYSTEM}]
    messages += [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]
    return {"messages": messages}


ROWS = [
    chat("What is rye?", "A dark bread."),
    chat("What is a bagel?", "A boiled ring of dough, then baked."),
    chat("Sourdough?", "Bread raised by wild yeast " + "and patience " * 6 + "."),
    # Two that share a trained turn inside their common prefix: it counts for both.
    chat("Hello.", "Hi, how can I help?", "Open on Sunday?", "Yes, until noon."),
    chat("Hello.", "Hi, how can I help?", "Gluten free?", "Two loaves are."),
    # One that shares nothing long with the others.
    {
        "messages": [
            {"role": "user", "content": "Say la la la."},
            {"role": "assistant", "content": "la la la"},
        ]
    },
]


def per_example_alone(model: Any, examples: list[Example]) -> torch.Tensor:
    """Each example's summed cross-entropy over its trained tokens: a plain PEFT forward
    of that example alone, full logits."""
    sums = []
    for ex in examples:
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1]
        masked = zip(ex.input_ids, ex.mask, strict=True)
        labels = torch.tensor([t if m else -100 for t, m in masked])
        sums.append(F.cross_entropy(logits, labels[1:], ignore_index=-100, reduction="sum"))
    return torch.stack(sums)


def per_example_packed(
    model: Any, examples: list[Example], packing: Packing, row_mask: bool
) -> tuple[torch.Tensor, list[Packed]]:
    """The same sums from shared-prefix packed rows, in ``examples`` order."""
    causal_lm = model.get_base_model()
    sums: dict[int, torch.Tensor] = {}
    rows = []
    for blocks in packing.rows(examples):
        row = Packed(blocks, torch.device("cpu"), row_mask=row_mask)
        hidden = causal_lm.base_model(**row.decoder_inputs()).last_hidden_state[0]
        token = F.cross_entropy(
            causal_lm.lm_head(hidden.index_select(0, row.src)), row.tgt, reduction="none"
        )
        order = [ex for b in blocks for ex in (b.examples if isinstance(b, Shared) else (b,))]
        part = torch.zeros(len(order)).index_add(0, row.seg, token)
        for k, ex in enumerate(order):
            sums[id(ex)] = part[k]
        rows.append(row)
    return torch.stack([sums[id(ex)] for ex in examples]), rows


@pytest.mark.parametrize("row_mask", [False, True], ids=["cpu-split", "cuda-mask"])
def test_shared_prefix_losses_and_gradients_equal_each_example_alone(
    tiny_llama_dir: Path, row_mask: bool
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    examples = [tokenize_row(tok, row) for row in ROWS]
    plain = lora_model(tiny_llama_dir, "sdpa")
    alone = per_example_alone(plain, examples)
    want = lora_grads(plain, alone.sum() / sum(ex.n_labels for ex in examples))

    model = lora_model(tiny_llama_dir, attention.register())
    packing = Packing(budget=256, min_prefix=MIN_SHARED_PREFIX, limit=512)
    got, rows = per_example_packed(model, examples, packing, row_mask)
    # It shared for real: fewer tokens computed than the examples hold, in one row.
    assert sum(r.n_tokens for r in rows) == sum(len(ex) for ex in examples)
    assert sum(r.n_processed for r in rows) < sum(len(ex) for ex in examples) - 3 * 64
    assert any(p >= 0 for r in rows for p in r.parents)
    assert sum(r.n_labels for r in rows) == sum(ex.n_labels for ex in examples)
    torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-5)
    grads = lora_grads(model, got.sum() / sum(ex.n_labels for ex in examples))
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def ex(ids: list[int]) -> Example:
    return Example(ids, [False] * (len(ids) - 1) + [True])


def test_examples_group_by_their_longest_shared_prefix() -> None:
    head = list(range(100, 200))  # 100 shared tokens
    a, b, c = ex([*head, 1, 2]), ex([*head, 3]), ex([*head[:70], 5, 6, 7])
    other = ex(list(range(500, 540)))
    blocks = shared_blocks([other, c, a, b], min_prefix=64, limit=1000)
    shared = [blk for blk in blocks if isinstance(blk, Shared)]
    # a and b share 100 tokens, all three 70: three sharing 70 save 140 tokens, more than
    # the 100 of a and b alone, so the three share.
    assert len(shared) == 1 and shared[0].prefix == 70 and len(shared[0].examples) == 3
    assert other in blocks
    # Below the minimum nothing is shared; every continuation keeps a token.
    assert all(not isinstance(b, Shared) for b in shared_blocks([a, b], 101, 1000))
    twins = shared_blocks([a, ex(list(a.input_ids))], 64, 1000)
    assert len(twins) == 1 and twins[0].prefix == len(a) - 1  # type: ignore[union-attr]


def test_a_shared_block_never_exceeds_the_limit() -> None:
    head = list(range(1000, 1100))
    members = [ex(head + list(range(k * 50, k * 50 + 40))) for k in range(6)]
    blocks = shared_blocks(members, 64, limit=200)
    assert all(len(b) <= 200 for b in blocks)
    assert sorted(id(e) for b in blocks for e in b.examples) == sorted(map(id, members))  # type: ignore[union-attr]
    rows = Packing(budget=150, min_prefix=64, limit=200).rows(members)
    assert all(sum(map(len, r)) <= 200 for r in rows)
    unshared = Packing(budget=150).rows(members)  # off: one example per row here
    assert sum(map(len, [b for r in rows for b in r])) < sum(len(m) for m in members)
    assert len(unshared) == 6


@pytest.mark.slow
def test_a_run_with_shared_prefixes_has_the_losses_of_one_without(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Same seed, same batches, ``share_prefix`` on and off: the same training and
    validation losses step by step, and the shared run says it computed fewer tokens."""
    from milady_lab.training.backends import run_training

    from .conftest import write_dataset
    from .test_speed_losses import Recorder, spec_for

    data = write_dataset(tmp_path / "data", ROWS * 2, ROWS[:3])
    runs = []
    for share in (True, False):
        rec = Recorder()
        out = tmp_path / str(share)
        spec = spec_for(
            tiny_llama_dir,
            data,
            out,
            iterations=4,
            eval_every=2,
            share_prefix=share,
            prompt_gradient_tokens=None,  # which sharing gives way to
            cpu_bf16=False,
        )
        run_training(spec, rec)
        runs.append(rec)
    shared, plain = runs
    assert shared.losses() == pytest.approx(plain.losses(), rel=1e-5)
    vals = [[m["valLoss"] for m in r.metrics if "valLoss" in m] for r in runs]
    assert len(vals[0]) == 2 and vals[0] == pytest.approx(vals[1], rel=1e-5)
    # trainedTokens counts the examples' tokens either way; the log tells the difference.
    assert [m["trainedTokens"] for m in shared.metrics] == [
        m["trainedTokens"] for m in plain.metrics
    ]
    assert any("shared prompt prefixes carried once" in line for line in shared.logs)
    assert not any("shared prompt prefixes" in line for line in plain.logs)


@pytest.mark.slow
def test_two_ddp_ranks_sharing_prefixes_are_one_process(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """Under torchrun each rank packs its share of the global batch with the same code:
    2 ranks × batch 2 (each sharing within its 2) give the losses of one process with
    batch 4 (sharing within 4), fp32, to 1e-5."""
    import json
    import os
    import subprocess
    import sys

    from milady_lab.training.backends.torch import train_torch

    from .conftest import write_dataset
    from .test_speed_losses import Recorder, spec_for

    data = write_dataset(tmp_path / "data", ROWS * 2, ROWS[:2])
    script = Path(__file__).with_name("fp32_ranks.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
    out = tmp_path / "ranks.json"
    args = [str(tiny_llama_dir), str(data), str(out), "2", "ddp", "4", "sft", "1000", "0", "all"]
    done = subprocess.run(
        [*torchrun, str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, ranks_said(done.stderr)
    alone = Recorder()
    spec = spec_for(
        tiny_llama_dir, data, tmp_path / "alone", iterations=4, eval_every=1000,
        cpu_bf16=False, pack_tokens=None, prompt_gradient_tokens=None,
    )  # fmt: skip
    train_torch(spec, alone)
    assert any("shared prompt prefixes carried once" in line for line in alone.logs)
    assert json.loads(out.read_text())["loss"] == pytest.approx(alone.losses(), rel=1e-5)
