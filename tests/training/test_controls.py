"""The training controls of issue 15, for real on cpu and mlx with a tiny Llama: the
length of a run (epochs or iterations), truncation that keeps the reply, gradient
accumulation, schedules, early stopping and the best checkpoint, and the label mask
of a multi-turn example on both backends."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.state import StateStore
from milady_lab.training.backends import available_backends, run_training
from milady_lab.training.backends.data import fit, tokenize_row, tokenized_examples
from milady_lab.training.callbacks import RecordingCallback
from milady_lab.training.defaults import SIZE_TABLE, size_defaults
from milady_lab.training.options import JobOptions
from milady_lab.training.schedule import FLOOR, lr_factor
from milady_lab.training.spec import DEFAULT_PROMPT_GRADIENT_TOKENS

from .conftest import MEMO_EXAMPLES, write_dataset
from .jobkit import *  # noqa: F403 - the shared job fixtures
from .jobkit import add_dataset
from .test_backends import make_spec

HAS_MLX = "mlx" in available_backends()
NEEDS_MLX = pytest.mark.skipif(not HAS_MLX, reason="mlx and mlx-lm are not installed")
BACKENDS = ["cpu", pytest.param("mlx", marks=NEEDS_MLX)]

#: Three user/assistant turns; the answers are the only text that trains.
THREE_TURNS = {
    "messages": [
        {"role": "system", "content": "Codes."},
        {"role": "user", "content": "Code for red?"},
        {"role": "assistant", "content": "red is alpha."},
        {"role": "user", "content": "And blue?"},
        {"role": "assistant", "content": "blue is bravo."},
        {"role": "user", "content": "And green?"},
        {"role": "assistant", "content": "green is charlie."},
    ]
}
ANSWERS = ["red is alpha.<|im_end|>", "blue is bravo.<|im_end|>", "green is charlie.<|im_end|>"]


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _spans(tok: Any, ids: list[int], keep: list[bool]) -> list[str]:
    """The decoded runs of consecutive kept positions."""
    out: list[str] = []
    run: list[int] = []
    for i, k in zip(ids, keep, strict=True):
        if k:
            run.append(i)
        elif run:
            out.append(tok.decode(run))
            run = []
    if run:
        out.append(tok.decode(run))
    return out


# -- options ----------------------------------------------------------------------------------
def test_schedules_warm_up_then_decay_to_the_floor() -> None:
    for kind in ("constant", "cosine", "linear"):
        assert [lr_factor(s, 20, 4, kind) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(19, 20, 4, "constant") == 1.0
    assert lr_factor(19, 20, 4, "cosine") == pytest.approx(FLOOR)
    assert lr_factor(19, 20, 4, "linear") == pytest.approx(FLOOR)
    # Half-way through the decay: linear is at the mean, cosine too (its inflexion).
    mid = 4 + (20 - 4 - 1) / 2
    assert lr_factor(int(mid), 20, 4, "linear") > lr_factor(int(mid) + 1, 20, 4, "linear")
    assert lr_factor(0, 10, 0, "cosine") == 1.0  # no warmup


def test_epochs_or_iterations_one_derived_from_the_other(
    settings: Settings, store: StateStore
) -> None:
    ds = add_dataset(settings, store)  # 20 training examples
    opts = JobOptions.from_body({"datasetId": ds, "epochs": 3, "batchSize": 1}, store)
    assert opts.iterations == 60 and opts.epochs == 3
    opts = JobOptions.from_body(
        {"datasetId": ds, "epochs": 2, "batchSize": 3, "gradientAccumulation": 2}, store
    )
    assert opts.iterations == math.ceil(2 * 20 / 6)
    opts = JobOptions.from_body({"datasetId": ds, "iterations": 10, "batchSize": 4}, store)
    assert opts.epochs == 2.0  # reported: 10 steps × 4 examples over 20
    rec = opts.to_record()
    assert rec["iterations"] == 10 and rec["epochs"] == 2.0
    assert "warmupSteps" not in rec  # left out: 5 % of whatever length the run has
    with pytest.raises(InputError, match="either epochs or iterations"):
        JobOptions.from_body({"datasetId": ds, "epochs": 1, "iterations": 5}, store)


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"maxSeqLength": 8}, "maxSeqLength must be at least 16"),
        ({"gradientAccumulation": 0}, "gradientAccumulation must be at least 1"),
        ({"lrSchedule": "step"}, "lrSchedule must be one of constant, cosine, linear"),
        ({"loraDropout": 1}, "loraDropout must be less than 1"),
        ({"loraAlpha": 0}, "loraAlpha must be greater than 0"),
        ({"epochs": 0}, "epochs must be greater than 0"),
        ({"targetModules": ["q_proj", "wq"]}, r"targetModules \['wq'\] are not linear modules"),
        ({"targetModules": 5}, "targetModules must be"),
        ({"targetModules": []}, "targetModules must be"),
        ({"warmupSteps": 10, "iterations": 10}, "warmupSteps .10. must be fewer than iterations"),
        ({"saveBest": "maybe"}, "saveBest must be true or false"),
        ({"promptGradientTokens": -1}, "promptGradientTokens must be at least 0, got -1; or 'all'"),
        ({"promptGradientTokens": "most"}, "promptGradientTokens must be an integer, got 'most'"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"earlyStoppingPatience": 0}, "earlyStoppingPatience must be at least 1"),
        ({"loraLayers": 0}, "loraLayers must be at least 1, got 0; or 'all' for every layer"),
        ({"loraLayers": "most"}, "loraLayers must be an integer, got 'most'; or 'all'"),
        ({"loraLayers": 2000}, "loraLayers must be at most 1024"),
    ],
)
def test_bad_controls_are_input_errors(
    settings: Settings, store: StateStore, request_body: dict[str, Any], message: str
) -> None:
    ds = add_dataset(settings, store)
    with pytest.raises(InputError, match=message):
        JobOptions.from_body({"datasetId": ds, **request_body}, store)


def test_early_stopping_needs_validation_examples(settings: Settings, store: StateStore) -> None:
    ds = add_dataset(settings, store)
    with store.transaction() as conn:
        conn.execute("UPDATE datasets SET valid_count = 0 WHERE id = ?", (ds,))
    with pytest.raises(InputError, match="earlyStoppingPatience needs validation examples"):
        JobOptions.from_body({"datasetId": ds, "earlyStoppingPatience": 2}, store)


def test_controls_are_recorded_and_cli_strings_accepted(
    settings: Settings, store: StateStore
) -> None:
    ds = add_dataset(settings, store)
    body = {
        "datasetId": ds,
        "maxSeqLength": "512",
        "gradientAccumulation": "2",
        "lrSchedule": "linear",
        "loraAlpha": "32",
        "loraDropout": "0.05",
        "targetModules": "q_proj,v_proj",
        "seed": "7",
        "earlyStoppingPatience": "3",
        "saveBest": "false",
        "warmupSteps": "0",
        "loraLayers": "4",
        "promptGradientTokens": "128",
    }
    rec = JobOptions.from_body(body, store).to_record()
    assert rec["maxSeqLength"] == 512 and rec["gradientAccumulation"] == 2
    assert rec["lrSchedule"] == "linear" and rec["loraAlpha"] == 32.0
    assert rec["loraDropout"] == 0.05 and rec["targetModules"] == ("q_proj", "v_proj")
    assert (rec["seed"], rec["earlyStoppingPatience"], rec["saveBest"]) == (7, 3, False)
    assert rec["warmupSteps"] == 0 and rec["loraLayers"] == 4
    assert rec["promptGradientTokens"] == 128
    new = JobOptions.from_body({"datasetId": ds}, store)
    assert new.prompt_gradient_tokens == DEFAULT_PROMPT_GRADIENT_TOKENS
    whole = {"datasetId": ds, "promptGradientTokens": " All "}
    assert JobOptions.from_body(whole, store).prompt_gradient_tokens == "all"
    assert (
        JobOptions.from_body({"datasetId": ds, "loraLayers": " ALL "}, store).lora_layers == "all"
    )
    assert JobOptions.from_body({"datasetId": ds, "targetModules": "all-linear"}, store)


def test_defaults_follow_the_model_size(settings: Settings, store: StateStore) -> None:
    add_dataset(settings, store)
    small, mid, large = SIZE_TABLE
    assert size_defaults("smollm2-135m-instruct") == small
    assert size_defaults("llama-3.2-3b") == mid == size_defaults("Qwen/Qwen2.5-1.5B-Instruct")
    assert size_defaults("llama-3.1-8b") == large
    opts = JobOptions.from_body({"model": "llama-3.1-8b"}, store)
    assert (opts.learning_rate, opts.lora_rank, opts.batch_size) == (
        large.learning_rate,
        large.lora_rank,
        large.batch_size,
    )
    assert opts.lora_alpha == 2.0 * large.lora_rank
    assert opts.lora_layers is None  # every layer, whatever the size
    # Given values win over the table.
    opts = JobOptions.from_body({"model": "llama-3.1-8b", "learningRate": 1e-3}, store)
    assert opts.learning_rate == 1e-3


# -- data: truncation and masks ---------------------------------------------------------------
def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_reply(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    tok = _tokenizer(tiny_llama_dir)
    long_prompt = " ".join(f"word{i}" for i in range(200))
    row = {"messages": [{"role": "user", "content": long_prompt}, MEMO_EXAMPLES[0]["messages"][2]]}
    full = tokenize_row(tok, row)
    cut, truncated = fit(full, 64)
    assert truncated and cut is not None and len(cut) == 64
    assert cut.input_ids == full.input_ids[-64:]  # the left is what goes
    assert _spans(tok, cut.input_ids, cut.mask) == ["red is alpha.<|im_end|>"]
    # A reply longer than the limit on its own: dropped, never cut.
    long_reply = {"messages": [{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": long_prompt}]}  # fmt: skip
    assert fit(tokenize_row(tok, long_reply), 64) == (None, False)
    # Counted per file, and reported on the job through the callback.
    data = write_dataset(tmp_path / "d", [row, long_reply, MEMO_EXAMPLES[1]], [MEMO_EXAMPLES[2]])
    kept, stats = tokenized_examples(data / "train.jsonl", tok, 64)
    assert (len(kept), stats.truncated, stats.too_long) == (2, 1, 1)
    from milady_lab.training.backends.data import train_and_val_examples

    cb = RecordingCallback()
    spec = make_spec(tiny_llama_dir, data, tmp_path, max_seq_length=64)
    train_and_val_examples(spec, tok, cb)
    assert cb.summary == {
        "shortenedExamples": 0, "droppedTurns": 0, "truncatedExamples": 1, "droppedExamples": 1,
    }  # fmt: skip


def test_three_turn_mask_on_both_backends(tiny_llama_dir: Path) -> None:
    """Every assistant turn with its end-of-turn token, and nothing else, is a target:
    in the shared tokenisation, in the torch rows and in the mlx batches."""
    tok = _tokenizer(tiny_llama_dir)
    ex = tokenize_row(tok, THREE_TURNS)
    assert _spans(tok, ex.input_ids, ex.mask) == ANSWERS
    assert ex.input_ids == list(tok.apply_chat_template(THREE_TURNS["messages"], return_dict=False))
    assert_backends_train_the_mask(ex)
    assert "".join(tok.decode([ex.input_ids[t] for t in range(len(ex)) if ex.mask[t]])) == "".join(
        ANSWERS
    )


def assert_backends_train_the_mask(ex: Any) -> None:
    """The torch rows and the mlx batches (where installed) target exactly the masked
    tokens of ``ex``: hidden state t-1 predicts token t."""
    expected = [ex.input_ids[t] for t in range(1, len(ex)) if ex.mask[t]]

    import torch

    from milady_lab.training.backends.packed import Packed

    row = Packed([ex], torch.device("cpu"))
    assert row.tgt.tolist() == expected
    assert [row.input_ids[0, s + 1].item() for s in row.src.tolist()] == expected
    if not HAS_MLX:
        return
    import numpy as np

    from milady_lab.training.backends.mlx import _to_batch

    (ids, src, tgt, weight), _ = _to_batch([ex], 2048, selective=True)
    n = int(np.array(weight).sum())
    assert np.array(tgt)[:n].tolist() == expected
    width = np.array(ids).shape[1]
    flat = np.array(ids).reshape(-1)
    assert [int(flat[s + 1 + s // (width - 1)]) for s in np.array(src)[:n]] == expected
    (ids2, mask), _ = _to_batch([ex], 2048, selective=False)
    targets = np.array(ids2)[0, 1:][np.array(mask)[0, 1:] > 0]
    assert targets.tolist() == expected


# -- training ---------------------------------------------------------------------------------
def _adapter(folder: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_accumulation_gives_the_larger_batch_update(
    backend: str, tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    import numpy as np

    runs = {}
    for name, batch, accum in (("big", 4, 1), ("accumulated", 2, 2), ("small", 2, 1)):
        cb = RecordingCallback()
        spec = make_spec(
            tiny_llama_dir, memo_dataset, tmp_path / name, backend, iterations=4,
            batch_size=batch, gradient_accumulation=accum, learning_rate=5e-3,
            eval_every=100, save_best=False, cpu_bf16=False,
        )  # fmt: skip
        run_training(spec, cb)
        assert [m["iteration"] for m in cb.metrics] == [1, 2, 3, 4]
        runs[name] = (_adapter(spec.output_dir), [m["loss"] for m in cb.metrics])
    big, acc, small = runs["big"], runs["accumulated"], runs["small"]
    assert big[1] == pytest.approx(acc[1], rel=1e-4)  # the same loss per step
    moved = max(float(np.abs(w).max()) for k, w in big[0].items() if "lora_B" in k)
    assert moved > 1e-3  # the adapters really trained
    for key, weight in big[0].items():
        assert np.allclose(weight, acc[0][key], atol=1e-5 + 1e-3 * moved), key
    # ... and it is not what the smaller batch alone gives.
    assert max(float(np.abs(w - small[0][k]).max()) for k, w in big[0].items()) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "kind"),
    [
        ("cpu", "cosine"),
        ("cpu", "linear"),
        ("cpu", "constant"),
        pytest.param("mlx", "cosine", marks=NEEDS_MLX),
    ],
)
def test_schedule_learning_rates_are_recorded(
    backend: str, kind: str, tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    """The learning rate of every step is in the metrics, as ``schedule.lr_factor`` says
    (on mlx the schedule is rebuilt in mx ops: one schedule checks that formula)."""
    cb = RecordingCallback()
    spec = make_spec(
        tiny_llama_dir, memo_dataset, tmp_path, backend, iterations=6, warmup_steps=2,
        lr_schedule=kind, learning_rate=1e-3, eval_every=100,
    )  # fmt: skip
    run_training(spec, cb)
    recorded = [m["learningRate"] for m in cb.metrics]
    assert recorded == pytest.approx([1e-3 * lr_factor(s, 6, 2, kind) for s in range(6)], rel=1e-5)


def _overfitting_dataset(folder: Path) -> Path:
    """Training answers that the validation set contradicts: once the model learns the
    shape of an answer, every step that memorises the training codes raises valLoss."""
    valid = [
        {"messages": [*e["messages"][:-1], {"role": "assistant", "content": text}]}
        for e, text in zip(
            MEMO_EXAMPLES[:3], ["red is zulu.", "blue is yankee.", "green is xray."], strict=True
        )
    ]
    return write_dataset(folder, MEMO_EXAMPLES[:3] * 4, valid)


def _val_loss_of(adapter: Path, base: Path, data: Path) -> float:
    """valLoss of a saved adapter, loaded with peft and scored like the torch backend."""
    from contextlib import nullcontext

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from milady_lab.training.backends.data import Packing
    from milady_lab.training.backends.torch import evaluate

    tok = _tokenizer(base)
    val, _ = tokenized_examples(data / "valid.jsonl", tok, 2048)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter))
    causal = model.get_base_model()
    loss = evaluate(
        causal.base_model, causal.get_output_embeddings(), val, 4, Packing(512),
        torch.device("cpu"), nullcontext,
    )  # fmt: skip
    assert loss is not None
    return loss


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_early_stopping_keeps_the_best_adapter(
    backend: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = _overfitting_dataset(tmp_path / "data")
    cb = RecordingCallback()
    spec = make_spec(
        tiny_llama_dir, data, tmp_path, backend, iterations=80, batch_size=3,
        learning_rate=2e-2, eval_every=2, early_stopping_patience=3,
        last_dir=tmp_path / "last", lr_schedule="constant",
        cpu_bf16=False,  # scored back in fp32 below: no bf16 noise between the two
    )  # fmt: skip
    result = run_training(spec, cb)
    vals = [(m["iteration"], m["valLoss"]) for m in cb.metrics if "valLoss" in m]
    assert (
        result.stopped_early
        and result.stop_reason
        and "earlyStoppingPatience=3" in result.stop_reason
    )
    assert result.iterations_done == cb.metrics[-1]["iteration"] < 80
    best_it, best_val = min(vals, key=lambda p: p[1])
    assert (result.best_iteration, result.best_val_loss) == (best_it, best_val)
    assert [it for it, _ in vals][-3:] == [best_it + 2, best_it + 4, best_it + 6]  # patience 3
    assert cb.summary["bestIteration"] == best_it
    # The registered folder holds the best adapter, the job folder the last one: loaded
    # back and scored, each gives its own valLoss.
    assert result.adapter_dir == spec.output_dir and result.last_adapter_dir == tmp_path / "last"
    best_loaded = _val_loss_of(spec.output_dir, tiny_llama_dir, data)
    last_loaded = _val_loss_of(tmp_path / "last", tiny_llama_dir, data)
    assert best_loaded == pytest.approx(best_val, rel=2e-3)
    assert last_loaded == pytest.approx(vals[-1][1], rel=2e-3)
    assert best_loaded < last_loaded


@pytest.mark.slow
def test_a_job_trains_for_its_epochs_and_registers_the_best_adapter(
    manager: Any, settings: Settings, store: StateStore, job_model_dir: Path
) -> None:
    from .jobkit import wait_status, worker_log

    ds = add_dataset(settings, store)  # 20 training examples, 4 for validation
    job = manager.start(
        {"datasetId": ds, "model": str(job_model_dir), "backend": "cpu", "epochs": 2,
         "batchSize": 4, "evalEvery": 2, "learningRate": 1e-2}
    )  # fmt: skip
    assert job["totalIterations"] == 10 and job["options"]["epochs"] == 2
    done = wait_status(manager, job["id"], ("completed", "failed", "cancelled"), 180)
    assert done["status"] == "completed", done["error"] or worker_log(settings, job["id"])
    metrics = store.metrics(job["id"])
    assert [m["iteration"] for m in metrics] == list(range(1, 11))
    assert all(m["learningRate"] > 0 for m in metrics)
    vals = [(m["iteration"], m["valLoss"]) for m in metrics if m.get("valLoss") is not None]
    best_it, best_val = min(vals, key=lambda p: p[1])
    (model,) = [m for m in store.list_models() if m["jobId"] == job["id"]]
    assert (done["bestIteration"], model["bestIteration"]) == (best_it, best_it)
    assert model["bestValLoss"] == pytest.approx(best_val) == done["bestValLoss"]
    assert done["stoppedEarly"] is False and done["truncatedExamples"] == 0
    assert (done["shortenedExamples"], done["droppedTurns"]) == (0, 0)  # recorded, none cut
    last = Path(done["lastAdapterPath"])
    assert last.parent == settings.jobs_dir / job["id"] and (last / "adapter_config.json").is_file()
    registered = _val_loss_of(
        Path(model["adapterPath"]), job_model_dir, Path(store.get_dataset(ds)["path"])
    )
    assert registered == pytest.approx(best_val, rel=2e-3)


def test_cli_flags_carry_the_controls(
    settings: Settings, store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """``jobs start`` has a kebab-case flag per control; a bad one exits 2 with the
    service's message and starts nothing."""
    from milady_lab.cli import main

    ds = add_dataset(settings, store)
    home = ["--home", str(settings.home), "--trajectories", str(settings.trajectories)]
    start = [*home, "--cache", str(settings.cache), "jobs", "start", "--dataset-id", ds]
    code = main([*start, "--epochs", "1", "--iterations", "3"])
    assert code == 2 and "either epochs or iterations" in capsys.readouterr().err
    code = main([*start, "--lr-schedule", "step", "--gradient-accumulation", "2"])
    assert code == 2 and "--lr-schedule must be one of" in capsys.readouterr().err
    assert store.list_jobs() == []
    from milady_lab.cli import build_parser

    args = build_parser().parse_args(
        [*start, "--max-seq-length", "512", "--target-modules", "q_proj,v_proj", "--save-best",
         "false", "--early-stopping-patience", "2", "--warmup-steps", "0", "--seed", "3",
         "--lora-alpha", "8", "--lora-dropout", "0.1"]
    )  # fmt: skip
    from milady_lab.api.schema import StartJobRequest
    from milady_lab.cli._flags import body_from

    body = body_from(args, StartJobRequest)
    rec = JobOptions.from_body(body, store).to_record()
    assert (rec["maxSeqLength"], rec["targetModules"], rec["saveBest"]) == (
        512,
        ("q_proj", "v_proj"),
        False,
    )
    assert (rec["earlyStoppingPatience"], rec["warmupSteps"], rec["seed"]) == (2, 0, 3)
    assert (rec["loraAlpha"], rec["loraDropout"]) == (8.0, 0.1)


def test_target_modules_resolve_alike_on_both_backends(tiny_llama_dir: Path) -> None:
    """``attention``, ``all-linear`` and a list pick the same layers in peft and mlx-lm;
    a listed name the model lacks is an input error naming it."""
    from transformers import AutoModelForCausalLM

    from milady_lab.training.backends.torch import _existing_targets
    from milady_lab.training.controls import ATTENTION_MODULES, LINEAR_MODULES

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    assert _existing_targets(base, ATTENTION_MODULES) == list(ATTENTION_MODULES)
    assert _existing_targets(base, ("all-linear",)) == "all-linear"
    assert _existing_targets(base, ("q_proj", "down_proj")) == ["q_proj", "down_proj"]
    with pytest.raises(InputError, match=r"\['wq'\] do not exist"):
        _existing_targets(base, ("q_proj", "wq"))
    if not HAS_MLX:
        return
    from mlx_lm import load

    from milady_lab.training.backends.mlx import _lora_keys

    model, _ = load(str(tiny_llama_dir))
    leaves = {k.rsplit(".", 1)[-1] for k in _lora_keys(model, ("all-linear",))}
    assert leaves == set(LINEAR_MODULES["llama"])
    assert {k.rsplit(".", 1)[-1] for k in _lora_keys(model, ATTENTION_MODULES)} == set(
        ATTENTION_MODULES
    )
    assert _lora_keys(model, ("q_proj", "down_proj")) == ["mlp.down_proj", "self_attn.q_proj"]
    with pytest.raises(InputError, match=r"\['wq'\] do not exist"):
        _lora_keys(model, ("q_proj", "wq"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_lora_shape_seed_and_sequence_length_are_honoured(
    backend: str, tiny_llama_dir: Path, memo_dataset: Path, tmp_path: Path
) -> None:
    """loraAlpha, loraDropout, targetModules, loraLayers, seed and maxSeqLength in a real
    run: the
    adapter has that shape, a seed repeats its run exactly and another seed does not,
    and the examples are cut to the length (their replies kept)."""
    import json

    import numpy as np

    def run(name: str, seed: int) -> tuple[dict[str, Any], RecordingCallback, Path]:
        cb = RecordingCallback()
        spec = make_spec(
            tiny_llama_dir, memo_dataset, tmp_path / name, backend, iterations=3,
            lora_rank=4, lora_alpha=12.0, lora_dropout=0.1, target_modules=("all-linear",),
            seed=seed, max_seq_length=24, eval_every=100, save_best=False, cpu_bf16=False,
            lora_layers=1,
        )  # fmt: skip
        run_training(spec, cb)
        return _adapter(spec.output_dir), cb, spec.output_dir

    first, cb, out = run("a", 5)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == (4, 12.0, 0.1)
    targets = {name.rsplit(".", 1)[-1] for name in cfg["target_modules"]}  # peft may save paths
    assert {"q_proj", "v_proj", "gate_proj", "down_proj"} <= targets
    assert any("mlp.down_proj" in k for k in first)
    # loraLayers 1: adapters on the last layer only, and the saved config says which.
    last = json.loads((tiny_llama_dir / "config.json").read_text())["num_hidden_layers"] - 1
    assert last > 0 and {k.split(".layers.")[1].split(".")[0] for k in first} == {str(last)}
    assert cfg["layers_to_transform"] == [last]
    assert cb.summary["truncatedExamples"] > 0 and cb.summary["droppedExamples"] == 0
    again, _, _ = run("b", 5)
    other, _, _ = run("c", 6)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.allclose(first[k], other[k]) for k in first)
