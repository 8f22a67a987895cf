"""Shared-prefix packing (issue 26): tokens computed per example, and training steps per
second, with and without carrying a shared prompt prefix once per packed row.

Real agent prompts are thousands of tokens of templated text (the character's system
prompt, the template's instructions) shared by many examples. The data here is shaped
like that: every example is one shared ``--prefix``-token head, then a prompt tail of
its own and a reply (the trained tokens). A batch of ``--batch-size`` examples is
packed as the torch backend packs it (``data.Packing``, ``packed.Packed``), once with
``share_prefix`` (a shared row holding up to ``--max-seq-length`` tokens, as in a
job) and once without; both count what the decoder runs over, and both
time forward + backward of the whole batch on a small random Llama with LoRA on q/k/v/o
(fp32, ``--threads`` CPU threads), interleaved ``--repeats`` times (the median counts).
The losses of the two are printed too: they are the same computation.

``--mlx`` adds the mlx backend's two forms of the same batch (``backends.mlx``): its
padded rows, one example each, and its shared-prefix rows (one boolean mask per row,
rope at each token's position), forward + backward in one ``mx.compile``'d step as
mlx-lm runs it, on the same Llama shape in mlx-lm (fp32, mlx's default device). Its
"tokens computed" counts the padded rows' positions, padding included: the decoder
runs over them.

    python benchmarks/bench_shared_prefix.py [--prefix 1000] [--batch-size 4] [--repeats 5]
        [--mlx]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch

from milady_lab.training.backends import attention
from milady_lab.training.backends.data import MIN_SHARED_PREFIX, Example, Packing
from milady_lab.training.backends.packed import Packed, row_loss_sum


def examples(prefix: int, batch: int, tail: int, reply: int, seed: int = 0) -> list[Example]:
    """``batch`` examples sharing ``prefix`` tokens, each with a prompt tail of about
    ``tail`` tokens and a trained reply of ``reply`` tokens (random ids)."""
    rng = random.Random(seed)
    head = [rng.randrange(10, 49_000) for _ in range(prefix)]
    out = []
    for _ in range(batch):
        own = [rng.randrange(10, 49_000) for _ in range(rng.randint(tail // 2, tail * 3 // 2))]
        answer = [rng.randrange(10, 49_000) for _ in range(reply)]
        ids = head + own + answer
        out.append(Example(ids, [False] * (len(head) + len(own)) + [True] * reply))
    return out


def model(hidden: int, layers: int) -> Any:
    """A random Llama (GQA, tied embeddings) with LoRA r=8 on q/k/v/o, fp32."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49_152, hidden_size=hidden, intermediate_size=hidden * 4,
        num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 192), max_position_embeddings=8192,
        tie_word_embeddings=True, attn_implementation=attention.register(),
    )  # fmt: skip
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(LlamaForCausalLM(config), lora)


def step(peft_model: Any, batch: list[Example], packing: Packing) -> tuple[float, int, float]:
    """Forward + backward of ``batch`` packed by ``packing``: seconds, tokens computed,
    and the mean loss per trained token."""
    causal_lm = peft_model.get_base_model()
    tic = time.perf_counter()
    rows = [Packed(r, torch.device("cpu")) for r in packing.rows(batch)]
    n_labels = sum(r.n_labels for r in rows)
    total = 0.0
    for row in rows:
        part = row_loss_sum(causal_lm.base_model, causal_lm.lm_head, row, nullcontext)
        (part / n_labels).backward()
        total += float(part.detach())
    peft_model.zero_grad(set_to_none=True)
    return time.perf_counter() - tic, sum(r.n_processed for r in rows), total / n_labels


def mlx_steps(hidden: int, layers: int, max_len: int) -> dict[str, Any]:
    """The mlx rows: per form, a function timing one compiled forward + backward of a
    batch on a random Llama of mlx-lm like ``model``'s (LoRA r=8 on q/k/v/o, fp32)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models import llama
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from milady_lab.training.backends import mlx as mb

    mx.random.seed(0)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
        intermediate_size=hidden * 4, num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 192), rms_norm_eps=1e-5, vocab_size=49_152,
        max_position_embeddings=8192, tie_word_embeddings=True,
    )  # fmt: skip
    net = llama.Model(args)
    net.freeze()
    keys = [f"self_attn.{p}_proj" for p in "qkvo"]
    lora = {"rank": 8, "scale": 2.0, "dropout": 0.0, "keys": keys}
    linear_to_lora_layers(net, layers, lora)
    mb.positioned(net)
    grad = nn.value_and_grad(net, mb.masked_loss)
    compiled = mx.compile(lambda *arrays: grad(net, *arrays))

    def timed(batches: Any) -> Any:
        def run(batch: list[Example]) -> tuple[float, int, float]:
            tic = time.perf_counter()
            arrays, _, _ = batches.arrays(batch, max_len)
            (loss, _), grads = compiled(*arrays)
            mx.eval(loss, grads)
            return time.perf_counter() - tic, arrays[0].size, loss.item()

        return run

    return {
        "mlx unshared": timed(mb.Batches(0, 0, selective=True)),
        "mlx shared": timed(mb.Batches(0, 0, selective=True, min_prefix=MIN_SHARED_PREFIX)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", type=int, default=1000, help="shared prompt tokens")
    ap.add_argument("--tail", type=int, default=150, help="mean prompt tokens of one example")
    ap.add_argument("--reply", type=int, default=60, help="trained tokens of one example")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--budget", type=int, default=512, help="row budget (the CPU default)")
    ap.add_argument("--max-seq-length", type=int, default=2048, help="a shared row's limit")
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mlx", action="store_true", help="add the mlx backend's rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = examples(args.prefix, args.batch_size, args.tail, args.reply)
    net = model(args.hidden, args.layers)
    unshared = Packing(args.budget)
    shared = Packing(args.budget, MIN_SHARED_PREFIX, args.max_seq_length)
    modes = {
        "unshared": lambda b: step(net, b, unshared),
        "shared": lambda b: step(net, b, shared),
    }
    if args.mlx:
        modes.update(mlx_steps(args.hidden, args.layers, args.max_seq_length))
    for run in modes.values():
        run(batch)  # warm-up (for mlx: compiling each form)
    times: dict[str, list[float]] = {m: [] for m in modes}
    tokens: dict[str, int] = {}
    losses: dict[str, float] = {}
    for r in range(args.repeats):
        for name in modes if r % 2 == 0 else reversed(modes):
            seconds, tokens[name], losses[name] = modes[name](batch)
            times[name].append(seconds)
    example_tokens = sum(map(len, batch))
    print(
        f"{args.batch_size} examples of {example_tokens / len(batch):.0f} tokens on average, "
        f"{args.prefix} of them a shared prefix; Llama hidden {args.hidden} × {args.layers} "
        f"layers + LoRA, fp32, {args.threads} thread(s), median of {args.repeats}"
    )
    print("| packing | tokens computed / example | s / step | examples / s | loss |")
    print("|---|---|---|---|---|")
    for name in modes:
        sec = statistics.median(times[name])
        print(
            f"| {name} | {tokens[name] / len(batch):.0f} | {sec:.3f} | "
            f"{len(batch) / sec:.2f} | {losses[name]:.6f} |"
        )
    for prefix in ("", "mlx ") if args.mlx else ("",):
        speedup = statistics.median(times[f"{prefix}unshared"]) / statistics.median(
            times[f"{prefix}shared"]
        )
        ratio = tokens[f"{prefix}shared"] / tokens[f"{prefix}unshared"]
        print(
            f"{prefix}tokens computed: {ratio:.2f}× of {prefix}unshared; "
            f"steps per second: {speedup:.2f}× {prefix}unshared"
        )


if __name__ == "__main__":
    main()
