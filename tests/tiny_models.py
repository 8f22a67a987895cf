"""Tiny Llamas the tests train and load for real, built locally in a second (no hub):
one BPE tokenizer recipe and one model recipe, shared by ``training/`` and ``models/``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: ChatML, as SmolLM2 and the agents' prompts use it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_bpe_tokenizer(folder: Path, corpus: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``, with ChatML specials and
    template, saved into ``folder``; returns the ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def save_tiny_llama(
    folder: Path,
    *,
    vocab_size: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    max_position_embeddings: int = 256,
    **config: Any,
) -> Path:
    """A 2-layer Llama (4 heads, 2 KV heads: GQA, tied embeddings) from seed 0, saved
    into ``folder`` next to its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **config,
    )
    LlamaForCausalLM(llama).save_pretrained(folder)
    return folder


def save_tiny_llama_for(folder: Path, tok: Any, **kw: Any) -> Path:
    """``save_tiny_llama`` sized and numbered for the tokenizer ``tok``."""
    return save_tiny_llama(
        folder,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **kw,
    )
