"""The benchmark on a tiny Llama: worker process, scores in [0, 1], determinism, storage."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError, InputError, MiladyLabError, NotFoundError
from milady_lab.models.evaluation import benchmark as bench
from milady_lab.models.evaluation.benchmark import run_benchmark
from milady_lab.state import StateStore

from .conftest import insert_model, one_thread


def _check_scores(block: dict[str, float]) -> None:
    assert set(block) == {
        "coherence",
        "consistency",
        "helpfulness",
        "formatValid",
        "actionAccuracy",
    }
    assert all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in block.values())


@pytest.mark.slow
def test_benchmark_end_to_end_and_deterministic(
    settings: Settings, store: StateStore, model: dict[str, Any]
) -> None:
    body = run_benchmark(settings, store, model, {"maxExamples": 6, "seed": 3})
    assert body["modelId"] == model["id"] and body["examples"] == 6
    _check_scores(body["scores"])
    _check_scores(body["baseline"])
    assert body["scores"] != body["baseline"]  # the adapter changes the model
    assert isinstance(body["completedAt"], int)
    rec = store.get_model(model["id"])
    assert rec is not None and rec["benchmark"] == body
    assert [e for e in store.events() if e["kind"] == "model_benchmarked"]

    again = run_benchmark(settings, store, model, {"maxExamples": 6, "seed": 3})
    assert (again["scores"], again["baseline"]) == (body["scores"], body["baseline"])
    assert list(settings.home.glob(".benchmark-*")) == []  # worker files cleaned up


def test_batched_equals_one_by_one(tiny_base: Path, tiny_adapter: Path, tiny_dataset: Path) -> None:
    """Left padding, the shared-prefix cache and rows leaving the batch change nothing."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base), tiny_adapter
    ).eval()
    chats = bench.load_examples(tiny_dataset / "valid.jsonl", 6, 0)
    examples = [bench.encode(tok, c, i) for i, c in enumerate(chats)]
    examples[0].max_new = 3  # one row stops early on its cap
    assert len({len(e.prompt_ids) for e in examples}) > 1  # padding is exercised
    stop = bench.stop_token_ids(tok, model)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop
    common = bench.shared_prefix(examples)
    assert len(common) >= bench.MIN_PREFIX_TOKENS  # the system prompt is shared
    with torch.inference_mode(), one_thread():
        prefix = bench.encode_prefix(model, common)
        nll, counts, gen = bench.run_batch(model, examples, tok.pad_token_id, stop, prefix)
        assert len(gen[0]) <= 3
        for i, e in enumerate(examples):
            n1, c1, g1 = bench.run_batch(model, [e], tok.pad_token_id, stop)
            assert nll[i] == pytest.approx(n1[0], rel=1e-4)
            assert counts[i] == c1[0] == len(e.reply_ids)
            assert gen[i] == g1[0]
            assert len(gen[i]) <= e.max_new
        # Teacher-forced NLL matches a plain forward over prompt + reply.
        e = examples[1]
        ids = torch.tensor([e.prompt_ids + e.reply_ids])
        logits = model(input_ids=ids).logits[0, len(e.prompt_ids) - 1 : -1]
        ref = torch.nn.functional.cross_entropy(logits, torch.tensor(e.reply_ids), reduction="sum")
        assert nll[1] == pytest.approx(float(ref), rel=1e-4)
        # Greedy tokens match transformers' own greedy generate().
        out = model.generate(
            input_ids=torch.tensor([e.prompt_ids]),
            max_new_tokens=e.max_new,
            do_sample=False,
            eos_token_id=sorted(stop),
            pad_token_id=tok.pad_token_id,
        )
        theirs = [t for t in out[0, len(e.prompt_ids) :].tolist() if t not in stop]
        assert gen[1] == theirs[: len(gen[1])] and len(theirs) == len(gen[1])


def test_encode_splits_at_the_assistant_turn(tiny_base: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<response>yo</response>"},
    ]
    e = bench.encode(tok, chat, 0)
    assert tok.decode(e.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(e.reply_ids) == "<response>yo</response><|im_end|>"
    # the cap follows the reference: 1.5x its tokens plus room for the format's tags
    assert e.max_new == -(-3 * len(e.reply_ids) // 2) + bench.NEW_TOKENS_SLACK


def test_load_examples_sample_is_seeded(tmp_path: Path) -> None:
    path = tmp_path / "valid.jsonl"
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(20)
    ]
    lines += [
        {"prompt": "p", "completion": "c"},
        {"text": "no reply"},
        "junk",
        {"messages": [{"role": "user", "content": "x"}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    assert len(bench.load_examples(path, 1000, 0)) == 21
    a, b = bench.load_examples(path, 5, 1), bench.load_examples(path, 5, 1)
    assert a == b and len(a) == 5
    assert bench.load_examples(path, 5, 2) != a


@pytest.mark.parametrize(
    "body",
    [
        {"maxExamples": 0},
        {"maxExamples": 1001},
        {"seed": -1},
        {"maxExamples": "x"},
        {"other": 1},
        [1],
    ],
)
def test_bad_body_is_400(
    settings: Settings, store: StateStore, model: dict[str, Any], body: Any
) -> None:
    with pytest.raises(InputError):
        run_benchmark(settings, store, model, body)


def test_dataset_errors(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, tmp_path: Path
) -> None:
    no_ds = insert_model(store, tiny_adapter, tiny_base)
    with pytest.raises(InputError, match="datasetId"):
        run_benchmark(settings, store, no_ds, None)
    with pytest.raises(NotFoundError):
        run_benchmark(settings, store, no_ds, {"datasetId": "nope"})
    with pytest.raises(NotFoundError):
        run_benchmark(settings, store, no_ds, {"datasetId": "../etc"})
    empty = tmp_path / "empty-ds"
    empty.mkdir()
    (empty / "valid.jsonl").write_text("")
    m = insert_model(store, tiny_adapter, tiny_base, empty)
    with pytest.raises(ConflictError, match="held-out"):
        run_benchmark(settings, store, m, None)


def test_no_usable_example_is_409_without_a_worker(
    settings: Settings, store: StateStore, tiny_adapter: Path, tiny_base: Path, tmp_path: Path
) -> None:
    no_replies = tmp_path / "no-replies"
    no_replies.mkdir()
    (no_replies / "valid.jsonl").write_text(json.dumps({"text": "just text"}) + "\n")
    m = insert_model(store, tiny_adapter, tiny_base, no_replies)
    with pytest.raises(ConflictError, match="assistant reply"):
        run_benchmark(settings, store, m, None)


@pytest.mark.slow
def test_worker_crash_is_an_error_and_nothing_stored(
    settings: Settings,
    store: StateStore,
    tiny_adapter: Path,
    tiny_base: Path,
    tiny_dataset: Path,
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken-adapter"
    shutil.copytree(tiny_adapter, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    m = insert_model(store, broken, tiny_base, tiny_dataset)
    with pytest.raises(MiladyLabError, match="benchmark worker failed") as info:
        run_benchmark(settings, store, m, None)
    assert info.value.status == 503  # the worker's failure, not a bug: the message says why
    assert store.get_model(m["id"])["benchmark"] is None
    assert list(settings.home.glob(".benchmark-*")) == []


def test_the_held_out_sample_is_stratified_by_purpose() -> None:
    purposes = ["response"] * 90 + ["should_respond"] * 30 + ["reflection"] * 3 + ["plan"] * 7
    keep = bench.stratified(purposes, 32, seed=5)
    assert len(keep) == 32 == len(set(keep)) and keep == sorted(keep)
    got = Counter(purposes[i] for i in keep)
    # every purpose its minimum (reflection has only 3), the rest by share
    assert got["reflection"] == 3 and got["plan"] >= bench.MIN_PER_PURPOSE
    assert got["response"] > got["should_respond"] >= bench.MIN_PER_PURPOSE
    assert bench.stratified(purposes, 32, seed=5) == keep  # seeded
    assert sorted(bench.stratified(purposes, 130, seed=1)) == list(range(130))


def test_stored_samples_show_each_purpose_redacted() -> None:
    secret = "sk-ant-api03-" + "a1B2" * 20
    chats = [
        [{"role": "user", "content": f"q{i} {secret if i == 0 else ''}"},
         {"role": "assistant", "content": f"ref{i}"}]
        for i in range(5)
    ]  # fmt: skip
    per = {
        "scores": {"replies": [f"tuned{i}" for i in range(5)]},
        "baseline": {"replies": [f"base{i}" for i in range(5)]},
    }
    purposes = ["response", "response", "response", "reflection", ""]
    samples = bench.reply_samples(per, chats, purposes)
    assert list(samples) == ["reflection", "response", "unknown"]
    assert len(samples["response"]) == bench.SAMPLES_PER_PURPOSE
    first = samples["response"][0]
    assert (first["reference"], first["scores"], first["baseline"]) == ("ref0", "tuned0", "base0")
    assert secret not in first["promptEnd"] and first["promptEnd"].startswith("q0 ")
    assert samples["reflection"][0]["scores"] == "tuned3"


def test_a_long_prompt_is_shortened_as_training_shortened_it(tiny_base: Path) -> None:
    """With the job's maxSeqLength the benchmark asks what the model learned to answer:
    the oldest conversation turns go, the newest turn and the format instructions stay
    (without it, the prompt's last 1536 tokens)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    history = "\n".join(
        f"10:{i:02d} ({60 - i} minutes ago) [{i:08x}-4bd1-8e3f-{i:012x}] alice: turn{i} "
        f"talks about the colour of thing {i}"
        for i in range(60)
    )
    fmt = "output:\nTOON only. Return exactly one TOON document.\n\nExample:\ntext: Your message"
    prompt = f"task: Reply.\n\n# Conversation Messages\n{history}\n\n{fmt}"
    chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": "text: red"}]
    whole = bench.encode(tok, chat, 0)
    short = bench.encode(tok, chat, 0, max_len=256)
    assert len(short.prompt_ids) + len(short.reply_ids) <= 256 < len(whole.prompt_ids)
    text = tok.decode(short.prompt_ids)
    assert "turn59" in text and "turn0 " not in text and fmt in text
    assert text.endswith("<|im_start|>assistant\n") and short.reply_ids == whole.reply_ids
