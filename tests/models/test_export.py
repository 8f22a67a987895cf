"""Export: a standalone HF folder equal to base+adapter, and a GGUF llama readers accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.errors import ConflictError, InputError
from milady_lab.models.handoff.export import export_model
from milady_lab.models.handoff.gguf import bpe_pre, write_model
from milady_lab.state import StateStore

from .conftest import insert_model, one_thread

PROBE = [[5, 17, 42, 99, 3, 250, 7, 1], [9, 8, 7, 6, 5, 4, 3, 2]]


def _reference_logits(tiny_base: Path, tiny_adapter: Path) -> Any:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base), tiny_adapter
    ).eval()
    with torch.inference_mode():
        return model(input_ids=torch.tensor(PROBE)).logits


def test_hf_export_matches_base_plus_adapter(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    tiny_base: Path,
    tiny_adapter: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with one_thread():
        body = export_model(settings, store, model, {"format": "hf"})
        out = Path(body["export"]["path"])
        assert out == settings.home / "exports" / f"{model['id']}-hf"
        assert (out / "config.json").is_file() and not list(out.glob("adapter_*"))
        exported = AutoModelForCausalLM.from_pretrained(out).eval()
        with torch.inference_mode():
            got = exported(input_ids=torch.tensor(PROBE)).logits
        torch.testing.assert_close(
            got, _reference_logits(tiny_base, tiny_adapter), atol=1e-4, rtol=1e-4
        )
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert body["export"]["bytes"] > 0
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp left behind
    with pytest.raises(ConflictError, match="already exists"):
        export_model(settings, store, model, {"format": "hf"})


def test_an_adapter_on_the_last_layers_exports_whole_and_as_a_gguf_lora(
    tiny_base: Path, tmp_path: Path
) -> None:
    """``loraLayers`` (the default adapts the last layers only): the fused export
    equals base + adapter, and the GGUF LoRA carries the adapted layer's tensors only."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from milady_lab.models.handoff.gguf import write_lora

    from .conftest import train_tiny_adapter

    adapter = train_tiny_adapter(tiny_base, tmp_path / "adapter", layers=[1])
    settings = Settings.from_env(home=tmp_path / "home")
    store = StateStore(settings.state_db)
    model = insert_model(store, adapter, tiny_base)
    with one_thread():
        out = Path(export_model(settings, store, model, {"format": "hf"})["export"]["path"])
        with torch.inference_mode():
            got = AutoModelForCausalLM.from_pretrained(out).eval()(torch.tensor(PROBE)).logits
        want = _reference_logits(tiny_base, adapter)
        base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
        with torch.inference_mode():
            plain = base(input_ids=torch.tensor(PROBE)).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(want, plain, atol=1e-3)  # the adapter does change the model
    write_lora(adapter, AutoConfig.from_pretrained(tiny_base), tmp_path / "lora.gguf")
    names = {t.name for t in gguf.GGUFReader(str(tmp_path / "lora.gguf")).tensors}
    assert names and all(n.startswith("blk.1.") for n in names)


def _expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    h, ff, v = config.hidden_size, config.intermediate_size, config.vocab_size
    hd = h // config.num_attention_heads
    kv = config.num_key_value_heads * hd
    shapes = {"token_embd.weight": (h, v), "output_norm.weight": (h,)}
    for i in range(config.num_hidden_layers):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (h,),
            f"blk.{i}.ffn_norm.weight": (h,),
            f"blk.{i}.attn_q.weight": (h, h),
            f"blk.{i}.attn_k.weight": (h, kv),
            f"blk.{i}.attn_v.weight": (h, kv),
            f"blk.{i}.attn_output.weight": (h, h),
            f"blk.{i}.ffn_gate.weight": (h, ff),
            f"blk.{i}.ffn_up.weight": (h, ff),
            f"blk.{i}.ffn_down.weight": (ff, h),
        }
    return shapes  # GGUF lists dimensions fastest-first


@pytest.mark.parametrize("outtype", ["f16", "f32"])
def test_gguf_export_tensors_and_metadata(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    tiny_base: Path,
    outtype: str,
    tmp_path: Path,
) -> None:
    import gguf
    from transformers import AutoConfig

    target = tmp_path / "out" / "tiny.gguf"
    with one_thread():
        body = export_model(
            settings, store, model, {"format": "gguf", "out": str(target), "outtype": outtype}
        )
    assert body["export"]["path"] == str(target)
    config = AutoConfig.from_pretrained(tiny_base)
    reader = gguf.GGUFReader(str(target))
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    assert shapes == _expected_shapes(config)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_norm.weight"] == "F32"
    assert kinds["blk.0.attn_q.weight"] == outtype.upper()
    f = reader.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.block_count"].contents() == config.num_hidden_layers
    assert f["llama.attention.head_count_kv"].contents() == config.num_key_value_heads
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert len(f["tokenizer.ggml.tokens"].contents()) == config.vocab_size
    assert f["tokenizer.ggml.merges"].contents()
    assert f["tokenizer.ggml.eos_token_id"].contents() == config.eos_token_id
    assert "<|im_start|>" in f["tokenizer.chat_template"].contents()


@pytest.mark.slow
def test_gguf_export_loads_back_with_the_same_logits(
    settings: Settings,
    store: StateStore,
    model: dict[str, Any],
    tiny_base: Path,
    tiny_adapter: Path,
    tmp_path: Path,
) -> None:
    """transformers' own GGUF reader undoes the Q/K re-ordering: logits must match."""
    import torch
    from transformers import AutoModelForCausalLM

    target = tmp_path / "tiny-f32.gguf"
    with one_thread():
        export_model(
            settings, store, model, {"format": "gguf", "out": str(target), "outtype": "f32"}
        )
        loaded = AutoModelForCausalLM.from_pretrained(
            tmp_path, gguf_file=target.name, dtype=torch.float32
        ).eval()
        with torch.inference_mode():
            got = loaded(input_ids=torch.tensor(PROBE)).logits
        torch.testing.assert_close(
            got, _reference_logits(tiny_base, tiny_adapter), atol=1e-4, rtol=1e-4
        )


def test_gguf_rejects_other_architectures(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(InputError, match="supports the llama, qwen2, qwen3 architectures"):
        write_model(gpt2, None, tmp_path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize(
    ("pre", "expected"),
    [
        ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": True},
                    {"type": "ByteLevel"},
                ],
            },
            "smollm",
        ),
        (
            {
                "type": "Sequence",
                "pretokenizers": [
                    {
                        "type": "Split",
                        "pattern": {"Regex": "(?i:'s|'t)|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"},
                    },
                    {"type": "ByteLevel", "use_regex": False},
                ],
            },
            "llama-bpe",
        ),
        ({"type": "Metaspace"}, "default"),
    ],
)
def test_pre_tokenizer_recognised(tmp_path: Path, pre: dict[str, Any], expected: str) -> None:
    import json

    (tmp_path / "tokenizer.json").write_text(json.dumps({"pre_tokenizer": pre}))
    assert bpe_pre(tmp_path) == expected


@pytest.mark.parametrize(
    "body", [{"format": "onnx"}, {"outtype": "q4"}, {"out": ""}, {"x": 1}, {"outtype": "Q8_0"}]
)
def test_bad_body_is_400(
    settings: Settings, store: StateStore, model: dict[str, Any], body: Any
) -> None:
    with pytest.raises(InputError):
        export_model(settings, store, model, body)
