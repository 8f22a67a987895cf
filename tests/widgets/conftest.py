"""Fixtures for the panel tests: a state home over demo trajectories, a real service,
and a tiny Llama to train for real in a few seconds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milady_lab.config import Settings
from milady_lab.demo import write_demo_db
from milady_lab.service import TrainingService
from milady_lab.widgets import LocalBackend

DEMO_COUNT = 120
DEMO_SEED = 11


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One demo trajectory database for the session (sources open it read-only)."""
    return write_demo_db(tmp_path_factory.mktemp("demo") / "trajectories.sqlite",
                         count=DEMO_COUNT, seed=DEMO_SEED)


@pytest.fixture
def settings(tmp_path: Path, demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Workers inherit these: one thread each, the machine is shared.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    home = tmp_path / "home"
    home.mkdir()
    return Settings.from_env(
        home=home,
        trajectories=demo_db,
        agent_config=tmp_path / "milady.json",
        cache=tmp_path / "cache",
    )


@pytest.fixture
def service(settings: Settings) -> Iterator[TrainingService]:
    svc = TrainingService(settings)
    yield svc
    stop_jobs(svc)
    svc.close()


@pytest.fixture
def backend(service: TrainingService) -> LocalBackend:
    return LocalBackend(service)


def stop_jobs(svc: TrainingService) -> None:
    """Cancel what a test left running and make sure no worker survives it."""
    for job in svc.store.list_jobs(("queued", "running")):
        with contextlib.suppress(Exception):
            svc.cancel_job(job["id"])
    for job in svc.store.list_jobs():
        pid = job.get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32) with a byte-level BPE tokenizer and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["<response><thought>reply to the user</thought><actions>REPLY</actions>"
              "<text>hello there, how are you today?</text></response>"] * 50
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training tests' ``tiny_llama_dir`` when it exists, else our own tiny Llama."""
    with contextlib.suppress(pytest.FixtureLookupError):
        return Path(request.getfixturevalue("tiny_llama_dir"))
    return build_tiny_llama(tmp_path_factory.mktemp("widgets-tiny-llama"))


def register_model(svc: TrainingService, **extra: Any) -> dict[str, Any]:
    """A model record as a completed job leaves it (for the ModelManager tests)."""
    from milady_lab.state import now_ms

    rec = {
        "id": f"m-{now_ms()}",
        "jobId": "job-x",
        "name": "smollm2-135m-instruct-demo-v1",
        "createdAt": now_ms(),
        "active": False,
        "adapterPath": str(svc.settings.models_dir / "nowhere"),
        "baseModel": "smollm2-135m-instruct",
        "backend": "cpu",
        "finalLoss": 1.234,
        **extra,
    }
    svc.store.insert_model(rec)
    return rec


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
