"""The benchmark's replies from llama.cpp (``llama_gen``): on an f32 GGUF they are torch's
own greedy replies, so every score agrees; a benchmark with engine llama.cpp runs end to
end on the GGUF import-ollama sends (f16) and records what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from milady_lab.api.schema import BenchmarkAnswer
from milady_lab.config import Settings
from milady_lab.errors import InputError
from milady_lab.models.evaluation import benchmark as bench
from milady_lab.models.evaluation import llama_gen
from milady_lab.state import StateStore

from .conftest import insert_model, one_thread


def _source(path: Path, base: Path, adapter: Path | None) -> llama_gen.GgufSource:
    return {
        "path": str(path),
        "basePath": str(base),
        "adapterPath": None if adapter is None else str(adapter),
        "tokenizerGguf": None,
        "name": "tiny",
    }


def test_f32_llama_cpp_replies_equal_torch_and_so_do_the_scores(
    tiny_base: Path, tiny_adapter: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    base = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tiny_adapter).eval()
    model.merge_adapter()
    chats = bench.load_examples(tiny_dataset / "valid.jsonl", 5, 0)
    examples = [bench.encode(tok, c, i) for i, c in enumerate(chats)]
    examples[2].max_new = 4  # one reply ends on its cap, in both engines
    stop = bench.stop_token_ids(tok, base)
    path = tmp_path / "tuned-f32.gguf"
    assert llama_gen.ensure_gguf(_source(path, tiny_base, tiny_adapter), "f32")
    assert not llama_gen.ensure_gguf(_source(path, tiny_base, tiny_adapter), "f32")  # kept

    ticks: list[int] = []

    def generate(exs: Any, stops: set[int], each: Any) -> dict[int, list[int]]:
        return llama_gen.generate(path, exs, stops, threads=1, quantization="f32", on_example=each)

    with one_thread():
        theirs = bench.score_variant(model, tok, examples, 8, stop)
        clock = bench.Clock()
        ours = bench.score_variant(
            model, tok, examples, 8, stop, ticks.append, clock=clock, generate=generate
        )
    assert ticks == [1] * len(examples)  # progress per generated example
    assert clock.seconds["generation"] > 0 and clock.seconds["scoring"] > 0
    assert any(len(r) > 20 for r in theirs["replies"])  # real replies, not empty ones
    assert ours["cut"][2] and not all(ours["cut"])
    assert ours["replies"] == theirs["replies"]
    assert ours == theirs  # so every score computed from them agrees exactly


@pytest.mark.slow
def test_benchmark_with_llama_cpp_records_its_engine_and_cost(
    settings: Settings, store: StateStore, model: dict[str, Any]
) -> None:
    seen: list[tuple[int, int]] = []
    body = bench.run_benchmark(
        settings,
        store,
        model,
        {"maxExamples": 4, "seed": 3, "engine": "llama.cpp"},
        lambda done, total: seen.append((done, total)),
    )
    assert body["engine"] == "llama.cpp"
    cost = body["cost"]
    assert cost["quantization"] == "f16"  # import-ollama's default
    assert set(cost["gguf"]) == {"scores", "baseline"}
    for path in cost["gguf"].values():
        assert Path(path).is_file() and Path(path).parent == settings.home / "gguf"
    assert cost["generationSeconds"] > 0 and cost["scoringSeconds"] > 0
    assert cost["conversionSeconds"] > 0
    assert body["scores"] != body["baseline"]
    assert seen[0] == (0, 8) and seen[-1] == (8, 8)  # per example: test above
    stored = msgspec.convert(store.get_model(model["id"])["benchmark"], BenchmarkAnswer)
    assert stored.engine == "llama.cpp" and stored.cost is not None

    asked = {"maxExamples": 4, "seed": 3, "engine": "llama.cpp"}
    again = bench.run_benchmark(settings, store, model, asked)
    assert again["engine"] == "llama.cpp"
    assert again["cost"]["conversionSeconds"] < cost["conversionSeconds"]  # files kept
    assert (again["scores"], again["baseline"]) == (body["scores"], body["baseline"])


def test_engine_choice(settings: Settings, store: StateStore, model: dict[str, Any]) -> None:
    torch_spec = bench.prepare_benchmark(settings, store, model, {"engine": "torch"}).spec
    assert "engine" not in torch_spec and "ggufs" not in torch_spec
    default = bench.prepare_benchmark(settings, store, model, {}).spec
    assert "engine" not in default  # torch, unless asked (see benchmark._engine)
    spec = bench.prepare_benchmark(settings, store, model, {"engine": "llama.cpp"}).spec
    assert spec["engine"] == "llama.cpp" and spec["quantization"] == "f16"
    assert spec["ggufs"]["baseline"]["adapterPath"] is None
    with pytest.raises(InputError, match="engine"):
        bench.prepare_benchmark(settings, store, model, {"engine": "vllm"})
    on_gpu = insert_model(
        store, Path(model["adapterPath"]), Path(model["baseModelPath"]), None, backend="cuda"
    )
    body = {"datasetId": model["datasetId"]}
    assert "engine" not in bench.prepare_benchmark(settings, store, on_gpu, body).spec


def test_llama_cpp_refused_for_an_architecture_gguf_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    assert not llama_gen.writable(tmp_path)
    with pytest.raises(InputError, match="use engine torch"):
        llama_gen.require(tmp_path)
