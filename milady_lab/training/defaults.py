"""Defaults per model size: the learning rate, LoRA rank, batch size and maxSeqLength a
job uses when the user gives none (README, "Defaults per model size").

The size is read cheaply, before any process starts: from the friendly name, hub id
or file name (``…-135M…``, ``…-3B…``), else from a local folder's ``config.json``
(parameters ≈ 12 · layers · hidden² + vocabulary · hidden). A model whose size cannot
be told gets the row of the smallest class, the built-in model's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SizeDefaults:
    """One row of the table; ``up_to`` is in billions of parameters."""

    label: str
    up_to: float
    learning_rate: float
    lora_rank: int
    batch_size: int
    #: Tokens per example. Agent prompts run to thousands of tokens (elizaOS's templates:
    #: p50 ~2,900, p90 ~5,100 on the agent-shaped demo data); a longer example loses its
    #: oldest conversation turns first, never its format instructions or its reply.
    max_seq_length: int


#: Smallest first. 135M: measured here (tests and benchmarks on SmolLM2-135M; its 512
#: tokens on agent-shaped data, README "make demo": 2 CPU cores train 2048-token examples
#: at ~1 example per 12 s, 512-token ones ~4× faster, and the format and actions are
#: learnt from the newest turn and the instructions, which 512 keeps). Larger rows follow
#: the common LoRA recipes (QLoRA: 2e-4 at 7B with r 16–64; mlx-lm and Unsloth examples:
#: 1e-4–2e-4, r 8–16), lower rate and batch as the model grows, and 2048 tokens (they
#: train on a GPU, where a whole agent prompt is affordable); not measured here.
SIZE_TABLE: tuple[SizeDefaults, ...] = (
    SizeDefaults("up to 0.5B (SmolLM2-135M/360M, Qwen2.5-0.5B)", 0.6, 2e-4, 8, 4, 512),
    SizeDefaults("1–3B (Llama-3.2-1B/3B, SmolLM2-1.7B, Gemma-2-2B)", 4.5, 1e-4, 16, 4, 2048),
    SizeDefaults("7–8B and larger (Llama-3.1-8B, Mistral-7B)", float("inf"), 5e-5, 16, 2, 2048),
)
#: The built-in model's (the smallest row's) maxSeqLength: what a build's length
#: estimate compares examples with.
DEFAULT_MAX_SEQ_LENGTH = SIZE_TABLE[0].max_seq_length

_SIZE_IN_NAME = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)\s*([mMbB])(?![a-zA-Z])")


def billions_from_name(name: str) -> float | None:
    """``SmolLM2-135M`` → 0.135, ``llama-3.1-8b`` → 8.0; None when the name says nothing."""
    found = _SIZE_IN_NAME.findall(Path(name).name if "/" not in name else name.split("/")[-1])
    if not found:
        return None
    value, unit = found[-1]
    return float(value) / (1000.0 if unit.lower() == "m" else 1.0)


def billions_from_config(folder: Path) -> float | None:
    """An estimate from ``config.json`` of an HF folder; None when it is not readable."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        layers, hidden = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
        vocab = int(cfg.get("vocab_size", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (12 * layers * hidden * hidden + vocab * hidden) / 1e9


def size_defaults(model: str) -> SizeDefaults:
    """The table row for ``model`` (a friendly name, folder, .gguf file or hub id)."""
    size = None
    path = Path(model)
    if path.is_dir():
        size = billions_from_config(path)
    if size is None:
        size = billions_from_name(model)
    if size is None:
        return SIZE_TABLE[0]
    return next(row for row in SIZE_TABLE if size <= row.up_to)
