"""Export a fine-tuned model as a standalone model: a Hugging Face folder or a GGUF file.

The adapter is fused into its base (peft ``merge_and_unload``), so the result needs no
peft and no base model: load the folder with transformers, or give the GGUF to
llama.cpp or ``ollama create`` (``FROM ./model.gguf``). Output is written to a
temporary path beside the target and renamed into place; an existing target is never
overwritten.

GGUF (llama architecture only, which is what Ollama's adapter converter supports too):
the ``gguf`` package ships a writer but no HF converter, so the mapping is done here:
tensor names via ``gguf.get_tensor_name_map``, Q/K rows re-ordered from Hugging Face's
rotate-half layout to the interleaved layout GGUF llama expects, 2-D weights in f16
(or f32) and norms in f32, tied embeddings stored once. Tokenizer metadata: when the
base came from a GGUF (the bundled SmolLM2), its ``tokenizer.*`` fields are copied
verbatim; otherwise they are built from the HF tokenizer (BPE → ``gpt2`` with the
pre-tokenizer recognised from ``tokenizer.json``; SentencePiece → ``llama``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import validation as v
from ..config import Settings
from ..errors import ConflictError, InputError
from ..state import StateStore, now_ms

FORMATS = ("hf", "gguf")
GGUF_TYPES = ("f16", "f32")


def export_model(
    settings: Settings, store: StateStore, model: Mapping[str, Any], body: Any = None
) -> dict[str, Any]:
    """Fuse the adapter into the base and write it where ``out`` says (or under exports/)."""
    fields = v.body_object(body, ("format", "out", "outtype"))
    fmt = v.choice(fields.get("format"), "format", FORMATS, default="hf")
    outtype = v.choice(fields.get("outtype"), "outtype", GGUF_TYPES, default="f16")
    out_text = v.text(fields.get("out"), "out", max_length=4096)
    if out_text is not None:
        out = Path(out_text).expanduser().absolute()
    elif fmt == "hf":
        out = settings.home / "exports" / f"{model['id']}-hf"
    else:
        out = settings.home / "exports" / f"{model['id']}-{outtype}.gguf"
    if out.exists() or out.is_symlink():
        raise ConflictError(f"{out} already exists; remove it or pass another output path")
    from .artifacts import require_peft_adapter, resolve_base_path

    adapter = require_peft_adapter(model)
    base_path = resolve_base_path(settings, model)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConflictError(f"cannot create {out.parent}: {exc.strerror or exc}") from None

    merged, tokenizer = merge_adapter(base_path, adapter)
    if fmt == "hf":
        _atomic_dir(out, lambda tmp: _save_hf(merged, tokenizer, tmp))
    else:
        source = _source_gguf(model)
        _atomic_file(
            out,
            lambda tmp: write_gguf(
                merged,
                tokenizer,
                base_path,
                tmp,
                outtype=outtype,
                name=str(model.get("name") or model["id"]),
                tokenizer_gguf=source,
            ),
        )
    size = (
        sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        if out.is_dir()
        else out.stat().st_size
    )
    body_out = {
        "modelId": model["id"],
        "format": fmt,
        "path": str(out),
        "bytes": size,
        "completedAt": now_ms(),
    }
    if fmt == "gguf":
        body_out["outtype"] = outtype
    store.emit("model_exported", f"model {model['id']} exported as {fmt} to {out}", **body_out)
    return {"export": body_out}


def merge_adapter(base_path: Path, adapter: Path) -> tuple[Any, Any]:
    """The base with the LoRA weights added in (fp32), and its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.eval()
    return merged, AutoTokenizer.from_pretrained(base_path)


def _save_hf(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _atomic_dir(target: Path, write: Any) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _atomic_file(target: Path, write: Any) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _source_gguf(model: Mapping[str, Any]) -> Path | None:
    """The GGUF the base model was converted from, when it was (its tokenizer is exact)."""
    from ..training.base_models import DEFAULT_MODEL, builtin_gguf_path

    base = str(model.get("baseModel") or "")
    if base.strip().lower() == DEFAULT_MODEL:
        with contextlib.suppress(InputError):
            return builtin_gguf_path()
        return None
    path = Path(base).expanduser()
    return path if path.suffix.lower() == ".gguf" and path.is_file() else None


# -- GGUF -------------------------------------------------------------------------------------
def _rope_params(config: Any) -> tuple[float, dict[str, Any] | None]:
    """rope theta and scaling, from either transformers 4 or 5 style configs."""
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or None
    theta = getattr(config, "rope_theta", None) or params.get("rope_theta") or 10000.0
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = params
    return float(theta), scaling


def _interleave_rope_rows(weight: Any, n_heads: int) -> Any:
    """HF llama rotates the two halves of each head; GGUF llama rotates adjacent pairs."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


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


def write_gguf(
    model: Any,
    tokenizer: Any,
    tokenizer_dir: Path,
    path: Path,
    *,
    outtype: str = "f16",
    name: str = "milady",
    tokenizer_gguf: Path | None = None,
) -> None:
    """Write a llama-architecture model and its tokenizer as one GGUF file."""
    import gguf
    import numpy as np

    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise InputError(
            f"GGUF export supports llama-architecture models; this one is "
            f"{getattr(config, 'model_type', '?')!r} (export it with --format hf)"
        )
    n_layers = int(config.num_hidden_layers)
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
    theta, scaling = _rope_params(config)
    vocab_size = int(config.vocab_size)

    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // n_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    )

    if scaling:
        kind = str(scaling.get("rope_type") or scaling.get("type") or "default")
        if kind == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
        elif kind == "llama3":
            writer.add_tensor(
                gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                _llama3_rope_factors(scaling, theta, head_dim),
            )
        elif kind != "default":
            raise InputError(f"GGUF export does not support rope scaling {kind!r}; use --format hf")

    if tokenizer_gguf is not None:
        _copy_tokenizer_fields(writer, tokenizer_gguf)
    else:
        _add_tokenizer(writer, tokenizer, tokenizer_dir, vocab_size)

    names = gguf.get_tensor_name_map(arch, n_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise InputError(f"GGUF export cannot place the tensor {hf_name!r}")
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _interleave_rope_rows(data, n_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _interleave_rope_rows(data, n_kv)
        if outtype == "f16" and data.ndim > 1:
            data = data.astype(np.float16)
        writer.add_tensor(gguf_name, np.ascontiguousarray(data))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_tokenizer_fields(writer: Any, source: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(str(source))
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)


def _bpe_pre(tokenizer_dir: Path) -> str:
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
    if split is not None and r"\p{N}{1,3}" in json.dumps(split.get("pattern")).replace(
        "\\\\", "\\"
    ):
        return "llama-bpe"  # Llama 3's regex
    if digits and "ByteLevel" in kinds:
        return "smollm"
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def _add_tokenizer(writer: Any, tokenizer: Any, tokenizer_dir: Path, vocab_size: int) -> None:
    import gguf

    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size)
    if (tokenizer_dir / "tokenizer.model").is_file():
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
    else:
        by_id = {i: t for t, i in tokenizer.get_vocab().items()}
        if not by_id or max(by_id) >= vocab_size:
            raise InputError(
                "the tokenizer does not fit the model's vocabulary; GGUF export stopped"
            )
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
        writer.add_tokenizer_pre(_bpe_pre(tokenizer_dir))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(token_id, int) and kind not in special.special_token_ids:
            special.special_token_ids[kind] = token_id
    special.add_to_gguf(writer, quiet=True)
