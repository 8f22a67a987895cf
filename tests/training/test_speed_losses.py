"""The torch backend's speed-ups change no loss: per-example attention inside packed rows
(``backends/attention.py``) against a plain PEFT forward of each example alone, and whole
runs with it against the masked-``sdpa`` path it replaced, on a fixed seed. Also: what
``tokensPerSecond`` counts (the warm-up step left out)."""

from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from milady_lab.training.backends import attention, run_training
from milady_lab.training.backends import torch as tb
from milady_lab.training.backends.data import pack_rows, tokenize_row
from milady_lab.training.backends.packed import Packed, row_loss_sum
from milady_lab.training.callbacks import RecordingCallback
from milady_lab.training.spec import TrainSpec

from .conftest import MEMO_EXAMPLES

#: Examples of different lengths (so rows hold several, and tie at boundaries).
EXAMPLES = MEMO_EXAMPLES + [
    {
        "messages": [
            {"role": "user", "content": "Say " + " ".join(["la"] * n) + "."},
            {"role": "assistant", "content": " ".join(["ok"] * (n + 3))},
        ]
    }
    for n in (1, 7, 20, 33)
]


def lora_model(model_dir: Path, attn: str) -> Any:
    """Tiny Llama + LoRA on q/k/v/o with random (non-zero) B, fp32, the same every call."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation=attn
    )
    model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def reference_loss(model: Any, examples: list[Any]) -> torch.Tensor:
    """Mean cross-entropy per assistant target: each example alone, full logits, -100
    labels, as a Trainer computes it (summed over the batch before dividing)."""
    total = torch.zeros(())
    count = 0
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        masked = zip(ex.input_ids, ex.mask, strict=True)
        labels = torch.tensor([[t if m else -100 for t, m in masked]])
        logits = model(input_ids=ids).logits[0, :-1]
        total = total + F.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")
        count += int((labels[0, 1:] != -100).sum())
    return total / count


def packed_loss(model: Any, examples: list[Any], budget: int) -> torch.Tensor:
    """The backend's loss: packed rows, lm_head on assistant positions only."""
    causal_lm = model.get_base_model()
    rows = [Packed(r, torch.device("cpu")) for r in pack_rows(examples, budget)]
    assert any(len(r.lengths) > 1 for r in rows)  # the test packs for real
    n = sum(r.n_labels for r in rows)
    parts = [row_loss_sum(causal_lm.base_model, causal_lm.lm_head, r, nullcontext) for r in rows]
    return sum(parts) / n


def lora_grads(model: Any, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("budget", [80, 200])
def test_packed_segment_attention_equals_each_example_alone(
    tiny_llama_dir: Path, budget: int
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    examples = [tokenize_row(tok, row) for row in EXAMPLES]
    plain = lora_model(tiny_llama_dir, "sdpa")
    ref = reference_loss(plain, examples)
    ref_grads = lora_grads(plain, ref)
    for attn in (attention.register(), "sdpa"):  # this change, and the masked path before it
        model = lora_model(tiny_llama_dir, attn)
        loss = packed_loss(model, examples, budget)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5), attn
        for got, want in zip(lora_grads(model, loss), ref_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


class Recorder(RecordingCallback):
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics]


def spec_for(model: Path, data: Path, out: Path, **kw: Any) -> TrainSpec:
    fields: dict[str, Any] = dict(
        job_id="speed", backend="cpu", model=str(model), dataset_dir=data,
        output_dir=out / "adapter", checkpoint_dir=out / "ckpt", iterations=6, batch_size=4,
        learning_rate=1e-2, eval_every=3, checkpoint_every=0, base_model_path=model,
        pack_tokens=96, threads=1,
    )  # fmt: skip
    fields.update(kw)
    return TrainSpec(**fields)


@pytest.mark.slow
@pytest.mark.parametrize("bf16", [False, True])
def test_run_losses_unchanged_by_segment_attention(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path, bf16: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Same seed, same batches: the losses (and validation losses) of a run with the
    per-example attention equal those of the masked-sdpa path, step by step (through
    whole examples: transformers' sdpa knows no detached prompt's segments)."""
    now = Recorder()
    whole = {"cpu_bf16": bf16, "prompt_gradient_tokens": None}
    run_training(spec_for(tiny_llama_dir, memo_dataset, tmp_path / "a", **whole), now)
    monkeypatch.setattr(tb._Run, "_attention", lambda self: "sdpa")
    before = Recorder()
    run_training(spec_for(tiny_llama_dir, memo_dataset, tmp_path / "b", **whole), before)
    tol = 2e-2 if bf16 else 1e-5
    assert now.losses() == pytest.approx(before.losses(), rel=tol)
    vals = [[m["valLoss"] for m in r.metrics if "valLoss" in m] for r in (now, before)]
    assert len(vals[0]) == 2 and vals[0] == pytest.approx(vals[1], rel=tol)
    assert now.losses()[-1] < now.losses()[0]  # it still learns


@pytest.mark.slow
def test_bf16_run_is_the_same_without_peft_upcasting_lora_inputs(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    """Under bf16 autocast, LoRA inputs left bf16 (``lean_lora_casts``) train exactly as
    peft's fp32 upcast (cast straight back by autocast) did: the same losses, bit for bit."""
    runs = []
    for lean in (True, False):
        rec = Recorder()
        spec = spec_for(
            tiny_llama_dir, memo_dataset, tmp_path / str(lean), iterations=3, eval_every=3,
            cpu_bf16=True, lean_lora_casts=lean,
        )  # fmt: skip
        run_training(spec, rec)
        runs.append(rec.losses())
    assert runs[0] == runs[1]
    assert all(math.isfinite(x) for x in runs[0])


def test_tokens_per_second_leaves_the_warm_up_step_out(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 1 takes 10 s on a fake clock, the others 1 s each: the rate is over those."""
    ticks = itertools.count()
    durations = {0: 10.0}
    clock = {"t": 0.0}

    def perf_counter() -> float:
        n = next(ticks)  # two reads per step: its start, its end
        if n % 2:
            clock["t"] += durations.get(n // 2, 1.0)
        return clock["t"]

    monkeypatch.setattr(tb, "time", SimpleNamespace(perf_counter=perf_counter))
    rec = Recorder()
    run_training(spec_for(tiny_llama_dir, memo_dataset, tmp_path, iterations=4), rec)
    tokens = [m["trainedTokens"] for m in rec.metrics]
    rates = [m["tokensPerSecond"] for m in rec.metrics]
    assert rates[0] == pytest.approx(tokens[0] / 10.0)  # nothing else to go by yet
    for i in (1, 2, 3):
        assert rates[i] == pytest.approx((tokens[i] - tokens[0]) / i)
    assert any("warm-up step" in line for line in rec.logs)
