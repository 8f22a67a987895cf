"""Fixtures for the training tests: the real SmolLM2 base model (converted once into
the milady-lab cache), a tiny Llama with its tokenizer, and a memorisable dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tiny_models import save_tiny_llama

#: A few chat examples a tiny model can learn by heart; one has two assistant turns.
MEMO_EXAMPLES: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "system", "content": "Codes."},
            {"role": "user", "content": f"Code for {word}?"},
            {"role": "assistant", "content": f"{word} is {code}."},
        ]
    }
    for word, code in [("red", "alpha"), ("blue", "bravo"), ("green", "charlie")]
] + [
    {
        "messages": [
            {"role": "system", "content": "Codes."},
            {"role": "user", "content": "Code for gold?"},
            {"role": "assistant", "content": "gold is delta."},
            {"role": "user", "content": "And silver?"},
            {"role": "assistant", "content": "silver is echo."},
        ]
    }
]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The built-in SmolLM2-135M-Instruct as an HF folder, in the user's milady-lab
    cache (``MILADY_LAB_CACHE``): the ~20 s conversion happens once per machine."""
    from milady_lab.config import Settings
    from milady_lab.training.base_models import DEFAULT_MODEL, resolve_base_model

    return resolve_base_model(DEFAULT_MODEL, Settings.from_env()).hf_path


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (hidden 64) with SmolLM2's tokenizer and chat template.

    ``initializer_range=0.2`` gives embeddings large enough that a LoRA can move the
    logits far from uniform, so the loss falls clearly within a few dozen steps.
    """
    folder = tmp_path_factory.mktemp("tiny-llama")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (smollm2_dir / name).is_file():
            shutil.copy(smollm2_dir / name, folder / name)
    return save_tiny_llama(
        folder,
        vocab_size=49152,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        hidden_size=64,
        intermediate_size=128,
        max_position_embeddings=512,
        initializer_range=0.2,
    )


def write_dataset(folder: Path, train: list[dict[str, Any]], valid: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("valid.jsonl", valid)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.fixture
def memo_dataset(tmp_path: Path) -> Path:
    """train.jsonl = the memorisable examples × 4, valid.jsonl = them once."""
    return write_dataset(tmp_path / "dataset", MEMO_EXAMPLES * 4, MEMO_EXAMPLES)
