"""Fixtures for the models tests: a tiny Llama with its own tokenizer, a real PEFT
adapter on it, a held-out dataset, a state store with a registered model, and the
Ollama stand-in server. Everything is built locally in seconds (no hub)."""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_models import build_bpe_tokenizer, save_tiny_llama_for

from milady_lab.config import Settings
from milady_lab.state import StateStore, now_ms

from .ollama_standin import OllamaStandIn

# Spinning OpenMP threads make tiny models crawl on a shared 2-core machine; this only
# takes effect when torch has not been imported yet, so tiny work also uses one_thread().
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models are overhead-bound: one torch thread is fastest and never oversubscribes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_WORDS = [
    *("hello", "there", "friend", "how", "are", "you", "today", "the", "weather"),
    *("is", "nice", "thanks", "for", "asking", "sure"),
]
_ACTIONS = ["REPLY", "IGNORE", "MUTE_ROOM", "FOLLOW_ROOM"]


def agent_reply(rng: random.Random) -> str:
    """A reply shaped like an elizaOS agent's structured answer."""
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8)))
    thought = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 5)))
    return (
        f"<response><thought>{thought}</thought><actions>{rng.choice(_ACTIONS)}</actions>"
        f"<text>{words}</text></response>"
    )


def make_examples(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        user = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10)))
        out.append(
            {
                "messages": [
                    {"role": "system", "content": "You are Milady. Answer in <response> XML."},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": agent_reply(rng)},
                ]
            }
        )
    return out


def _build_tokenizer(folder: Path) -> Any:
    corpus = [json.dumps(e) for e in make_examples(300, 99)] + [
        agent_reply(random.Random(i)) for i in range(300)
    ]
    return build_bpe_tokenizer(folder, corpus, 400)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF folder: a 2-layer Llama (hidden 32, GQA) with a byte-level BPE tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = _build_tokenizer(folder)
    return save_tiny_llama_for(folder, tok, max_position_embeddings=512)


def train_tiny_adapter(
    base: Path, folder: Path, *, targets: list[str] | None = None, layers: list[int] | None = None
) -> Path:
    """A PEFT LoRA (r=8, alpha 16) trained 40 steps on agent-shaped replies, so it
    measurably beats its (random) base and its outputs are far from uniform; on
    ``layers`` only when given (``loraLayers``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(base)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=targets or ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
        layers_to_transform=layers,
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg)
    texts = [tok.apply_chat_template(e["messages"], tokenize=False) for e in make_examples(64, 5)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    with one_thread():
        for step in range(40):
            rows = slice((step * 16) % 64, (step * 16) % 64 + 16)
            loss = model(
                input_ids=enc["input_ids"][rows],
                attention_mask=enc["attention_mask"][rows],
                labels=labels[rows],
            ).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(folder)
    assert (folder / "adapter_model.safetensors").is_file()
    return folder


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA folder (adapter_model.safetensors + adapter_config.json) on tiny_base."""
    return train_tiny_adapter(tiny_base, tmp_path_factory.mktemp("adapter"))


def save_tiny_qwen(folder: Path, tok: Any, kind: str) -> Path:
    """A 2-layer Qwen2 (q/k/v biases, untied embeddings) or Qwen3 (q/k norms, head_dim
    wider than hidden/heads, tied) with ``tok``, from seed 0."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    common = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=False, **common))
    else:
        model = Qwen3ForCausalLM(Qwen3Config(tie_word_embeddings=True, head_dim=32, **common))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=["llama", "qwen2", "qwen3"])
def tiny_arch(
    request: pytest.FixtureRequest,
    tiny_base: Path,
    tiny_adapter: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Path, Path]:
    """(architecture, base folder, trained adapter) for each architecture GGUF supports."""
    from transformers import AutoTokenizer

    if request.param == "llama":
        return "llama", tiny_base, tiny_adapter
    tok = AutoTokenizer.from_pretrained(tiny_base)
    base = save_tiny_qwen(tmp_path_factory.mktemp(f"tiny-{request.param}"), tok, request.param)
    adapter = train_tiny_adapter(
        base,
        tmp_path_factory.mktemp(f"adapter-{request.param}"),
        targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    return request.param, base, adapter


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    for name, n, seed in (("train.jsonl", 40, 1), ("valid.jsonl", 12, 2)):
        with (folder / name).open("w") as f:
            for ex in make_examples(n, seed):
                f.write(json.dumps(ex) + "\n")
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        home=tmp_path / "home",
        trajectories=tmp_path / "traj.sqlite",
        agent_config=tmp_path / "agent" / "milady.json",
        cache=tmp_path / "cache",
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[StateStore]:
    s = StateStore(settings.state_db)
    yield s
    s.close()


def insert_model(
    store: StateStore, adapter: Path, base: Path, dataset_dir: Path | None = None, **extra: Any
) -> dict[str, Any]:
    """Register a model (and its dataset) the way the job system does."""
    n = len(store.list_models()) + 1
    dataset_id = None
    if dataset_dir is not None:
        dataset_id = f"ds-{n}"
        store.insert_dataset(
            {
                "id": dataset_id,
                "createdAt": now_ms(),
                "trajectoryCount": 1,
                "exampleCount": 52,
                "trainCount": 40,
                "validCount": 12,
                "path": str(dataset_dir),
                "options": {},
            }
        )
    rec = {
        "id": f"model-{n}",
        "jobId": f"job-{n}",
        "name": f"Milady Tiny v{n}",
        "createdAt": now_ms() + n,
        "active": False,
        "adapterPath": str(adapter),
        "baseModel": "tiny-llama",
        "baseModelPath": str(base),
        "backend": "cpu",
        "datasetId": dataset_id,
        "finalLoss": 1.0,
        **extra,
    }
    store.insert_model(rec)
    got = store.get_model(rec["id"])
    assert got is not None
    return got


@pytest.fixture
def model(
    store: StateStore, tiny_adapter: Path, tiny_base: Path, tiny_dataset: Path
) -> dict[str, Any]:
    return insert_model(store, tiny_adapter, tiny_base, tiny_dataset)


@pytest.fixture
def ollama() -> Iterator[OllamaStandIn]:
    server = OllamaStandIn().start()
    yield server
    server.stop()
