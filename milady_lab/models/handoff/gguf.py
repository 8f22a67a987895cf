"""GGUF files that llama.cpp (and so Ollama) runs: a whole fused model, or a LoRA adapter.

The ``gguf`` package (llama.cpp's own gguf-py) ships the writer and the tensor-name
tables but no Hugging Face converter, so the mapping for the architectures milady-lab
trains is done here, following llama.cpp's ``convert_hf_to_gguf.py`` and
``convert_lora_to_gguf.py``:

* **llama** (SmolLM2, Llama 3.x): Q/K rows re-ordered from Hugging Face's rotate-half
  layout to the interleaved pairs GGUF llama expects; for a LoRA only ``lora_b`` (the
  output rows) is re-ordered, ``lora_a`` stays as PEFT wrote it (``[r, in]``).
* **qwen2** (Qwen2.5) with q/k/v biases and **qwen3** with q/k norms: no re-ordering.
* Tied embeddings are stored once; norms and biases stay f32; 2-D weights are f32, f16
  or q8_0 (gguf-py's quantizer, llama.cpp's block layout; rows whose length is not a
  multiple of 32 fall back to f16, as llama.cpp's converter does).

Tokenizer metadata: when the base came from a GGUF (the bundled SmolLM2) its
``tokenizer.*`` fields are copied verbatim; otherwise they are built from the HF
tokenizer (BPE → ``gpt2`` with the pre-tokenizer recognised from ``tokenizer.json``;
SentencePiece → ``llama``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ...api.schema import JsonObject
from ...errors import InputError

#: Hugging Face ``model_type`` → gguf architecture name.
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
OUTTYPES = ("f16", "q8_0", "f32")
#: Called with (bytes converted so far, bytes in all).
TensorProgress = Callable[[int, int], None]
_Q8_BLOCK = 32


def gguf_architecture(config: Any) -> str:
    """The GGUF architecture for a model config, or a 400 naming the supported ones."""
    kind = str(getattr(config, "model_type", None) or "?")
    if kind not in ARCHITECTURES:
        raise InputError(
            f"GGUF conversion supports the {', '.join(ARCHITECTURES)} architectures; this "
            f"model is {kind!r} (export it with --format hf instead)"
        )
    return ARCHITECTURES[kind]


# -- whole model ------------------------------------------------------------------------------
def write_model(
    model: Any,
    tokenizer: Any,
    tokenizer_dir: Path,
    path: Path,
    *,
    outtype: str = "f16",
    name: str = "milady",
    tokenizer_gguf: Path | None = None,
    progress: TensorProgress | None = None,
) -> None:
    """Write a (fused) causal LM and its tokenizer as one self-contained GGUF file."""
    import gguf

    config = model.config
    arch_name = gguf_architecture(config)
    if outtype not in OUTTYPES:
        raise InputError(f"outtype must be one of {', '.join(OUTTYPES)}")
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    shape = _Shape(config)
    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_name(name)
    _add_hparams(writer, config, shape)
    writer.add_file_type(_FILE_TYPES[outtype](gguf))
    if tokenizer_gguf is not None:
        _copy_tokenizer_fields(writer, tokenizer_gguf)
    else:
        _add_tokenizer(writer, tokenizer, tokenizer_dir, shape.vocab_size)

    names = gguf.get_tensor_name_map(arch, shape.n_layers)
    tensors = [(k, t) for k, t in model.state_dict().items() if _keep(k, shape)]
    total = sum(t.numel() * 4 for _, t in tensors)
    done = 0
    for hf_name, tensor in tensors:
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise InputError(f"GGUF conversion cannot place the tensor {hf_name!r}")
        data = tensor.detach().to("cpu").float().numpy()
        if arch_name == "llama":
            data = _llama_rope_rows(hf_name, data, shape)
        _add_tensor(writer, gguf_name, data, outtype)
        done += tensor.numel() * 4
        if progress is not None:
            progress(done, total)
    if shape.rope_freqs is not None:
        writer.add_tensor(
            gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", shape.rope_freqs
        )
    _finish(writer)


def _keep(hf_name: str, shape: _Shape) -> bool:
    if hf_name.endswith("rotary_emb.inv_freq"):
        return False
    return not (shape.tied and hf_name == "lm_head.weight")


# -- LoRA adapter -----------------------------------------------------------------------------
def write_lora(
    adapter_dir: Path,
    base_config: Any,
    path: Path,
    *,
    outtype: str = "f16",
    name: str = "milady",
) -> None:
    """Write a PEFT LoRA adapter in llama.cpp's GGUF LoRA layout (``general.type=adapter``).

    llama.cpp computes ``W·x + (alpha / r) · B·(A·x)``, PEFT's own scaling; rsLoRA's
    ``alpha / sqrt(r)`` is written as an equivalent alpha.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    arch_name = gguf_architecture(base_config)
    if outtype not in ("f16", "f32"):
        raise InputError("a LoRA adapter GGUF is written as f16 or f32")
    cfg = _lora_config(adapter_dir)
    shape = _Shape(base_config)
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    names = gguf.get_tensor_name_map(arch, shape.n_layers)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))

    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_name(name)
    rank = int(cfg["r"])
    alpha = float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):
        alpha *= math.sqrt(rank)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for hf_name, a, b in _lora_pairs(weights):
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None or not gguf_name.startswith("blk."):
            raise InputError(
                f"the adapter changes {hf_name!r}, which a GGUF LoRA cannot carry; "
                "import the fused model instead (the default mode)"
            )
        b = b.astype(np.float32)
        if arch_name == "llama":
            b = _llama_rope_rows(hf_name, b, shape)
        dtype = np.float16 if outtype == "f16" else np.float32
        writer.add_tensor(gguf_name + ".lora_a", np.ascontiguousarray(a.astype(dtype)))
        writer.add_tensor(gguf_name + ".lora_b", np.ascontiguousarray(b.astype(dtype)))
    _finish(writer)


def _lora_config(adapter_dir: Path) -> JsonObject:
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the adapter's adapter_config.json: {exc}") from None
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora"):
        raise InputError("only plain LoRA adapters (not DoRA or other PEFT kinds) fit a GGUF LoRA")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise InputError("an adapter with per-layer ranks or alphas cannot be a GGUF LoRA")
    if not isinstance(cfg.get("r"), int) or not isinstance(cfg.get("lora_alpha"), int | float):
        raise InputError("adapter_config.json has no usable r / lora_alpha")
    return cfg


def _lora_pairs(weights: Mapping[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(base weight name as in the HF model, lora_A [r, in], lora_B [out, r]) per layer."""
    prefix = "base_model.model."
    for key in sorted(weights):
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                raise InputError(f"unexpected tensor {key!r} in the adapter")
            continue
        stem = key.removesuffix(".lora_A.weight")
        b_key = stem + ".lora_B.weight"
        if b_key not in weights:
            raise InputError(f"the adapter has {key!r} but no {b_key!r}")
        yield stem.removeprefix(prefix) + ".weight", weights[key], weights[b_key]


# -- shared pieces ----------------------------------------------------------------------------
class _Shape:
    """The numbers the writer needs from a config (transformers 4 and 5 spellings)."""

    def __init__(self, config: Any) -> None:
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(getattr(config, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.n_heads)
        self.vocab_size = int(config.vocab_size)
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.theta, self.scaling = _rope_params(config)
        self.rope_freqs: Any = None


def _add_hparams(writer: Any, config: Any, shape: _Shape) -> None:
    import gguf

    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    if shape.head_dim != config.hidden_size // shape.n_heads or config.model_type == "qwen3":
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    writer.add_rope_freq_base(shape.theta)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(shape.vocab_size)
    scaling = shape.scaling
    if not scaling:
        return
    kind = str(scaling.get("rope_type") or scaling.get("type") or "default")
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(scaling["factor"]))
    elif kind == "llama3":
        shape.rope_freqs = _llama3_rope_factors(scaling, shape.theta, shape.head_dim)
    elif kind != "default":
        raise InputError(f"GGUF conversion does not support rope scaling {kind!r}; use --format hf")


_FILE_TYPES: dict[str, Callable[[Any], Any]] = {
    "f16": lambda g: g.LlamaFileType.MOSTLY_F16,
    "q8_0": lambda g: g.LlamaFileType.MOSTLY_Q8_0,
    "f32": lambda g: g.LlamaFileType.ALL_F32,
}


def _add_tensor(writer: Any, name: str, data: Any, outtype: str) -> None:
    import gguf
    import numpy as np

    if data.ndim < 2 or outtype == "f32":
        writer.add_tensor(name, np.ascontiguousarray(data.astype(np.float32)))
    elif outtype == "q8_0" and data.shape[-1] % _Q8_BLOCK == 0:
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, q8), raw_dtype=q8)
    else:
        writer.add_tensor(name, np.ascontiguousarray(data.astype(np.float16)))


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _llama_rope_rows(hf_name: str, data: Any, shape: _Shape) -> Any:
    """HF llama rotates the two halves of each head; GGUF llama rotates adjacent pairs."""
    if hf_name.endswith("self_attn.q_proj.weight"):
        return _interleave_rope_rows(data, shape.n_heads)
    if hf_name.endswith("self_attn.k_proj.weight"):
        return _interleave_rope_rows(data, shape.n_kv)
    return data


def _interleave_rope_rows(weight: Any, n_heads: int) -> Any:
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _rope_params(config: Any) -> tuple[float, JsonObject | None]:
    """rope theta and scaling, from either transformers 4 or 5 style configs."""
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or None
    theta = getattr(config, "rope_theta", None) or params.get("rope_theta") or 10000.0
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    return float(theta), scaling


def _llama3_rope_factors(scaling: Mapping[str, Any], theta: float, head_dim: int) -> Any:
    """Per-frequency divisors for llama3-style rope scaling (stored as rope_freqs.weight)."""
    import numpy as np

    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * theta ** (i / head_dim)
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


# -- tokenizer --------------------------------------------------------------------------------
def _copy_tokenizer_fields(writer: Any, source: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(source))
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)


def bpe_pre(tokenizer_dir: Path) -> str:
    """llama.cpp's name for the pre-tokenizer, recognised from tokenizer.json's structure."""
    try:
        pre = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8")).get(
            "pre_tokenizer"
        )
    except (OSError, ValueError):
        return "default"
    parts = pre.get("pretokenizers", [pre]) if isinstance(pre, dict) else []
    kinds = [p.get("type") for p in parts if isinstance(p, dict)]
    digits = any(
        p.get("type") == "Digits" and p.get("individual_digits")
        for p in parts
        if isinstance(p, dict)
    )
    split = next((p for p in parts if isinstance(p, dict) and p.get("type") == "Split"), None)
    pattern = json.dumps(split.get("pattern")).replace("\\\\", "\\") if split else ""
    if r"\p{N}{1,3}" in pattern:
        return "llama-bpe"  # Llama 3's regex
    if r"\p{N}|" in pattern or r"\p{N}| ?" in pattern:
        return "qwen2"  # Qwen2/3: single digits inside the split regex
    if digits and "ByteLevel" in kinds:
        return "smollm"
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def _add_tokenizer(writer: Any, tokenizer: Any, tokenizer_dir: Path, vocab_size: int) -> None:
    import gguf

    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size)
    if (tokenizer_dir / "tokenizer.model").is_file():
        _add_sentencepiece(writer, tokenizer_dir, vocab_size)
    else:
        _add_bpe(writer, tokenizer, tokenizer_dir, vocab_size)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(token_id, int) and kind not in special.special_token_ids:
            special.special_token_ids[kind] = token_id
    special.add_to_gguf(writer, quiet=True)


def _add_sentencepiece(writer: Any, tokenizer_dir: Path, vocab_size: int) -> None:
    import gguf

    vocab = gguf.SentencePieceVocab(tokenizer_dir)
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    tokens += [f"[PAD{i}]".encode() for i in range(len(tokens), vocab_size)]
    scores += [-1000.0] * (vocab_size - len(scores))
    types += [gguf.TokenType.UNUSED] * (vocab_size - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens[:vocab_size])
    writer.add_token_scores(scores[:vocab_size])
    writer.add_token_types(types[:vocab_size])


def _add_bpe(writer: Any, tokenizer: Any, tokenizer_dir: Path, vocab_size: int) -> None:
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if not by_id or max(by_id) >= vocab_size:
        raise InputError("the tokenizer does not fit the model's vocabulary; GGUF export stopped")
    added = tokenizer.get_added_vocab()
    decoder = getattr(tokenizer, "added_tokens_decoder", {})
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            info = decoder.get(i)
            is_special = bool(getattr(info, "special", False)) or (
                token.startswith("<|") and token.endswith("|>")
            )
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if is_special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(bpe_pre(tokenizer_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
