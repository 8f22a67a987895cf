"""The training backends train for real: tiny Llama (SmolLM2 tokenizer) on a memorisable
dataset with cpu and mlx, plus a few SmolLM2 steps; masks, checkpoints, resume, cancel."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from milady_lab.errors import InputError
from milady_lab.training import backends
from milady_lab.training.backends import (
    TrainingCancelled,
    available_backends,
    best_backend,
    check_backend,
    latest_checkpoint,
    run_training,
)
from milady_lab.training.backends.data import (
    Example,
    batch_indices,
    grouped_batch_indices,
    pack_rows,
    tokenize_row,
    truncate,
)
from milady_lab.training.callbacks import RecordingCallback
from milady_lab.training.spec import TrainSpec

from .conftest import MEMO_EXAMPLES

HAS_MLX = "mlx" in available_backends()
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="mlx and mlx-lm are not installed")


class Recorder(RecordingCallback):
    """Records events; asks to stop once ``stop_after`` metrics were seen."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.started: tuple[int, int] | None = None

    def on_train_start(self, total_iterations: int, start_iteration: int = 0) -> None:
        self.started = (total_iterations, start_iteration)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.metrics) >= self.stop_after

    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics]


def make_spec(model: Path, data: Path, out: Path, backend: str = "cpu", **kw: Any) -> TrainSpec:
    fields: dict[str, Any] = {
        "job_id": "test",
        "backend": backend,
        "model": str(model),
        "dataset_dir": data,
        "output_dir": out / "adapter",
        "checkpoint_dir": out / "checkpoints",
        "iterations": 30,
        "batch_size": 4,
        "learning_rate": 1e-2,
        "eval_every": 10,
        "checkpoint_every": 0,
        "base_model_path": model,
    }
    fields.update(kw)
    return TrainSpec(**fields)


# -- backend choice ---------------------------------------------------------------------------
def test_backend_probe_is_cheap_and_cached() -> None:
    code = (
        "import sys; from milady_lab.training.backends import available_backends, best_backend;"
        "a = available_backends(); assert a is available_backends() and 'cpu' in a;"
        "assert best_backend() in a; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import torch

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        assert out.stdout.strip() == "False"  # a CPU build of torch is never imported


def test_best_backend_prefers_mlx_on_apple_then_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "available_backends", lambda: ["mlx", "cuda", "cpu"])
    monkeypatch.setattr(backends, "_is_apple_silicon", lambda: True)
    assert best_backend() == "mlx"
    monkeypatch.setattr(backends, "_is_apple_silicon", lambda: False)
    assert best_backend() == "cuda"
    monkeypatch.setattr(backends, "available_backends", lambda: ["mlx", "cpu"])
    assert best_backend() == "cpu"


def test_check_backend_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    check_backend("cpu")
    with pytest.raises(InputError, match="must be one of"):
        check_backend("tpu")
    monkeypatch.setattr(backends, "available_backends", lambda: ["cpu"])
    with pytest.raises(InputError, match=r"pip install 'milady-lab\[mlx\]'"):
        check_backend("mlx")
    with pytest.raises(InputError, match="cuda"):
        check_backend("cuda")
    with pytest.raises(InputError):
        run_training(make_spec(Path("x"), Path("y"), Path("z"), backend="mlx"), Recorder())


# -- data -------------------------------------------------------------------------------------
def _trained_spans(tok: Any, ex: Example) -> list[str]:
    spans = []
    for keep, group in itertools.groupby(range(len(ex)), key=lambda i: ex.mask[i]):
        if keep:
            spans.append(tok.decode([ex.input_ids[i] for i in group]))
    return spans


def test_every_assistant_turn_and_only_those_is_trained(tiny_llama_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    ex = tokenize_row(tok, MEMO_EXAMPLES[3])
    assert _trained_spans(tok, ex) == ["gold is delta.<|im_end|>", "silver is echo.<|im_end|>"]
    rendered = tok.apply_chat_template(MEMO_EXAMPLES[3]["messages"], return_dict=False)
    assert ex.input_ids == list(rendered)  # the same tokens the template gives
    # No system turn: SmolLM2's template inserts its default one; still only the answer.
    row = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello you"},
        ]
    }
    assert _trained_spans(tok, tokenize_row(tok, row)) == ["hello you<|im_end|>"]
    pc = tokenize_row(tok, {"prompt": "2+2?", "completion": "4"})
    assert _trained_spans(tok, pc) == ["4<|im_end|>"]


def test_truncation_keeps_an_example_trainable() -> None:
    ex = Example(list(range(10)), [False] * 7 + [True] * 3)
    cut = truncate(ex, 5)
    assert len(cut) == 5 and cut.n_labels >= 1 and cut.input_ids[-1] == 9
    head = truncate(Example(list(range(10)), [False, True] + [False] * 8), 4)
    assert head.input_ids == [0, 1, 2, 3]


def test_batches_are_stateless_and_rows_bounded() -> None:
    assert batch_indices(10, 4, 7, seed=3) == batch_indices(10, 4, 7, seed=3)
    epoch = [i for it in range(5) for i in batch_indices(10, 2, it, seed=1)]
    assert sorted(epoch) == list(range(10))  # each example once per epoch
    assert sorted(
        grouped_batch_indices([5, 1, 9, 3], 2, 0, 0) + grouped_batch_indices([5, 1, 9, 3], 2, 1, 0)
    ) == [0, 1, 2, 3]
    exs = [Example([1] * n, [True] * n) for n in (5, 4, 3, 8)]
    rows = list(pack_rows(exs, 9))
    assert all(sum(map(len, r)) <= 9 for r in rows) and sum(len(r) for r in rows) == 4
    assert len(list(pack_rows(exs, 100))) == 1


# -- cpu --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cpu_loss_falls_and_adapter_loads_in_peft(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cb = Recorder()
    spec = make_spec(tiny_llama_dir, memo_dataset, tmp_path)
    result = run_training(spec, cb)

    assert cb.started == (30, 0)
    assert [m["iteration"] for m in cb.metrics] == list(range(1, 31))
    for m in cb.metrics:
        assert {"loss", "learningRate", "tokensPerSecond", "trainedTokens", "peakMemory"} <= set(m)
        assert math.isfinite(m["loss"]) and m["tokensPerSecond"] > 0 and m["peakMemory"] > 0
    assert [m["iteration"] for m in cb.metrics if "valLoss" in m] == [10, 20, 30]
    losses = cb.losses()
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0], losses
    assert result.final_val_loss is not None and result.final_val_loss < losses[0]
    assert result.trained_tokens == cb.metrics[-1]["trainedTokens"] > 0

    cfg = json.loads((spec.output_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (spec.output_dir / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(spec.output_dir)).eval()
        after = tuned(ids).logits
    assert (after - before).abs().max() > 1e-2


@pytest.mark.slow
def test_cpu_cancel_checkpoint_and_resume_continue_exactly(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    kw = {"iterations": 8, "checkpoint_every": 4, "eval_every": 100}
    full = Recorder()
    run_training(make_spec(tiny_llama_dir, memo_dataset, tmp_path / "a", **kw), full)

    # Cancel before the first step: nothing trained.
    early = Recorder(stop_after=0)
    with pytest.raises(TrainingCancelled) as stopped:
        run_training(make_spec(tiny_llama_dir, memo_dataset, tmp_path / "b0", **kw), early)
    assert stopped.value.iteration == 0 and early.metrics == []

    # Cancel after 5 steps: it stops before the 6th, after the checkpoint at 4 and one
    # more at 5 that keeps the work done since.
    cut = Recorder(stop_after=5)
    spec = make_spec(tiny_llama_dir, memo_dataset, tmp_path / "b", **kw)
    with pytest.raises(TrainingCancelled) as stopped:
        run_training(spec, cut)
    assert stopped.value.iteration == 5 and len(cut.metrics) == 5
    assert [i for i, _ in cut.checkpoints] == [4, 5]
    assert sorted(p.name for p in spec.checkpoint_dir.iterdir()) == ["4", "5"]  # no temp dirs
    ckpt = latest_checkpoint(spec.checkpoint_dir)
    assert ckpt == spec.checkpoint_dir / "5"
    assert json.loads((ckpt / "checkpoint.json").read_text())["iteration"] == 5

    # Resume from the periodic checkpoint: same optimizer, scheduler, RNG and batches,
    # so the same losses as the run without a break.
    for at in (4, 5):
        resumed = Recorder()
        spec2 = make_spec(
            tiny_llama_dir,
            memo_dataset,
            tmp_path / f"c{at}",
            resume_from=spec.checkpoint_dir / str(at),
            **kw,
        )
        result = run_training(spec2, resumed)
        assert resumed.started == (8, at)
        assert [m["iteration"] for m in resumed.metrics] == list(range(at + 1, 9))
        assert resumed.losses() == pytest.approx(full.losses()[at:], rel=1e-4)
    assert resumed.metrics[-1]["learningRate"] == pytest.approx(full.metrics[-1]["learningRate"])
    assert result.trained_tokens == full.metrics[-1]["trainedTokens"]


class MidStepStop(Recorder):
    """Asks to stop at its ``nth`` poll once ``after`` steps are done: inside the next
    step (the top-of-step check is poll 1, then the decoder layers' stop points)."""

    def __init__(self, after: int, nth: int) -> None:
        super().__init__()
        self.after, self.nth, self.polls = after, nth, 0

    def should_stop(self) -> bool:
        if len(self.metrics) < self.after:
            return False
        self.polls += 1
        return self.polls >= self.nth


@pytest.mark.parametrize("nth", [3, 4], ids=["in-forward", "in-backward"])
def test_cpu_cancel_inside_a_step_keeps_the_steps_done_and_resumes_exactly(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path, nth: int
) -> None:
    """A cancel that arrives mid-step ends the run at the next decoder layer, forward or
    backward, without applying the half-done step: the checkpoint it leaves resumes to
    the same losses as a run never cancelled."""
    kw = {"iterations": 8, "checkpoint_every": 4, "eval_every": 100, "lora_dropout": 0.1}
    full = Recorder()
    run_training(make_spec(tiny_llama_dir, memo_dataset, tmp_path / "a", **kw), full)

    cut = MidStepStop(after=5, nth=nth)
    spec = make_spec(tiny_llama_dir, memo_dataset, tmp_path / "b", **kw)
    with pytest.raises(TrainingCancelled) as stopped:
        run_training(spec, cut)
    assert cut.polls == nth  # it stopped at the first stop point that saw the flag
    assert stopped.value.iteration == 5 and len(cut.metrics) == 5
    assert [i for i, _ in cut.checkpoints] == [4, 5]
    assert not spec.output_dir.exists() or not any(spec.output_dir.iterdir())  # no adapter

    resumed = Recorder()
    spec2 = make_spec(
        tiny_llama_dir, memo_dataset, tmp_path / "c", resume_from=spec.checkpoint_dir / "5", **kw
    )
    run_training(spec2, resumed)
    assert [m["iteration"] for m in resumed.metrics] == [6, 7, 8]
    assert resumed.losses() == pytest.approx(full.losses()[5:], rel=1e-4)


@pytest.mark.slow
def test_smollm2_fine_tunes_a_few_steps(
    smollm2_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    cb = Recorder()
    spec = make_spec(
        smollm2_dir,
        memo_dataset,
        tmp_path,
        iterations=4,
        batch_size=2,
        learning_rate=2e-3,
        eval_every=1,
    )
    spec = dataclasses.replace(spec, model="smollm2-135m-instruct")
    result = run_training(spec, cb)
    assert len(cb.metrics) == 4 and all(math.isfinite(x) for x in cb.losses())
    vals = [m["valLoss"] for m in cb.metrics]
    assert vals[-1] < vals[0], vals
    assert result.final_val_loss == vals[-1]
    assert cb.metrics[-1]["peakMemory"] < 3 * 2**30
    assert (spec.output_dir / "adapter_model.safetensors").is_file()


# -- mlx --------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_mlx
def test_mlx_loss_falls_and_peft_form_matches_mlx(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    import mlx.core as mx
    import numpy as np
    import torch
    from mlx_lm import load
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cb = Recorder()
    spec = make_spec(tiny_llama_dir, memo_dataset, tmp_path, "mlx", iterations=16, eval_every=8)
    result = run_training(spec, cb)
    assert [m["iteration"] for m in cb.metrics] == list(range(1, 17))
    assert [m["iteration"] for m in cb.metrics if "valLoss" in m] == [8, 16]
    losses = cb.losses()
    assert sum(losses[-4:]) / 4 < 0.8 * losses[0], losses
    assert result.tokens_per_second > 0 and cb.metrics[-1]["peakMemory"] > 0

    out = spec.output_dir
    assert (out / "mlx" / "adapters.safetensors").is_file()
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16.0
    assert json.loads((out / "mlx" / "adapter_config.json").read_text())["lora_parameters"][
        "scale"
    ] == pytest.approx(2.0)

    ids = [[1, 504, 3060, 314, 253, 1345, 30, 2]]
    model, _ = load(str(tiny_llama_dir), adapter_path=str(out / "mlx"))
    mlx_logits = np.array(model(mx.array(ids)).astype(mx.float32))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    with torch.no_grad():
        base_logits = base(torch.tensor(ids)).logits.numpy()
        peft_logits = PeftModel.from_pretrained(base, str(out)).eval()(torch.tensor(ids))
    assert np.abs(peft_logits.logits.numpy() - mlx_logits).max() < 1e-3
    assert np.abs(base_logits - mlx_logits).max() > 1e-2


@pytest.mark.slow
@needs_mlx
def test_mlx_cancel_and_resume_with_optimizer_state(
    tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    kw = {"iterations": 6, "checkpoint_every": 3, "eval_every": 100}
    full = Recorder()
    run_training(make_spec(tiny_llama_dir, memo_dataset, tmp_path / "a", "mlx", **kw), full)

    cut = Recorder(stop_after=3)
    spec = make_spec(tiny_llama_dir, memo_dataset, tmp_path / "b", "mlx", **kw)
    with pytest.raises(TrainingCancelled) as stopped:
        run_training(spec, cut)
    assert stopped.value.iteration == 3 and len(cut.metrics) == 3
    ckpt = latest_checkpoint(spec.checkpoint_dir)
    assert ckpt is not None and ckpt.name == "3"

    resumed = Recorder()
    run_training(
        make_spec(tiny_llama_dir, memo_dataset, tmp_path / "c", "mlx", resume_from=ckpt, **kw),
        resumed,
    )
    assert resumed.started == (6, 3)
    assert [m["iteration"] for m in resumed.metrics] == [4, 5, 6]
    assert resumed.losses() == pytest.approx(full.losses()[3:], rel=1e-3)
    with pytest.raises(InputError, match="mlx backend"):
        run_training(
            make_spec(tiny_llama_dir, memo_dataset, tmp_path / "d", resume_from=ckpt, **kw),
            Recorder(),
        )
