"""The ``mlx`` backend: mlx-lm's own trainer (``mlx_lm.tuner.train``), driven through
its ``TrainingCallback`` — progress is never read from stdout.

What is ours: the data (the same assistant-only masks as the torch backend, so every
assistant turn trains, via a custom ``iterate_batches`` + ``loss``), metrics, cancel
(raise from the callback), checkpoints with the optimizer state, and the output.
DPO/KTO (``objective``) run their own steps (``preference_mlx``: mlx-lm's trainer only
reports a loss) through the same reports, evaluation, checkpoints and output.

Shared prompt prefixes (issue 26, ``TrainSpec.share_prefix``, SFT, on llama, qwen2 and
qwen3): examples of a micro-batch sharing ``MIN_SHARED_PREFIX`` tokens or more carry
them once, as the torch backend's rows do (``data.Packing``, ``data.row_layout``):
each continuation sees the prefix and itself only, at the positions it has alone, so
the loss and gradients are the unshared batch's. mlx-lm's models build their own mask
and rope offset from the ``cache`` argument, so the rows' layout goes in as one
(``_RowCache``: the boolean mask, per-token positions, nothing cached), and each
attention's rope is wrapped to turn every token at its own position (``_TokenRope``).
Rows are padded to a multiple of PAD_TO like the unshared ones, so mlx-lm's compiled
step is reused; a batch that shares nothing keeps the plain padded rows.
``benchmarks/bench_shared_prefix.py --mlx``: 0.37× the tokens, 1.82× the steps per
second on 4 agent-shaped examples of ~1200 tokens (fp32, mlx on a Linux CPU).

Detached prompts (``TrainSpec.prompt_gradient_tokens``, SFT, the same architectures):
the first columns of a padded batch, up to the shortest prompt of the optimizer step
but its last ``prompt_gradient_tokens`` (rounded down to PAD_TO), run first into a
cache whose keys and values are behind ``mx.stop_gradient`` (``_PromptCache``); the
rest of each row runs after them, reading the cache. The loss is the plain batch's; no
gradient flows back into those columns. It takes the place of shared prefixes.

Output folder: the PEFT form at the top (``adapter_model.safetensors`` +
``adapter_config.json``, alpha = scale × rank), so every backend's adapter loads in
peft and imports into Ollama the same way; mlx's native ``adapters.safetensors`` +
``adapter_config.json`` in ``mlx/`` (for ``mlx_lm.load(adapter_path=...)``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from ...api.schema import JsonObject
from ...errors import InputError
from ..callbacks import MetricPoint, PreferenceFigures, TrainingCallback, TrainingCancelled
from ..controls import ATTENTION_MODULES
from ..early_stop import BestTracker, EarlyStop
from ..schedule import FLOOR, decay_span
from ..spec import TrainResult, TrainSpec
from . import preference_mlx
from .common import (
    META_FILE,
    adapted_layers,
    peak_rss_bytes,
    read_checkpoint_meta,
    resolve_model_path,
    write_atomically,
)
from .data import (
    MIN_SHARED_PREFIX,
    Example,
    Packing,
    Shared,
    grouped_batch_indices,
    preference_items,
    prompt_length,
    row_layout,
    train_and_val_examples,
)

CHECKPOINT_KIND = "mlx"
MLX_SUBDIR = "mlx"
ADAPTER_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
PAD_TO = 32  # pad lengths to a multiple, as mlx-lm does, so compiled steps are reused


def _schedule(lr: float, total: int, warm: int, kind: str = "cosine") -> Any:
    """``schedule.lr_factor`` × ``lr`` in mx ops, because the optimizer calls it inside
    the compiled step."""
    span = decay_span(total, warm)

    def fn(step: mx.array) -> mx.array:
        s = step.astype(mx.float32)
        progress = mx.clip((s - warm) / span, 0.0, 1.0)
        if kind == "constant":
            decay = mx.ones_like(progress)
        elif kind == "linear":
            decay = 1.0 - (1.0 - FLOOR) * progress
        else:
            decay = FLOOR + (1.0 - FLOOR) * 0.5 * (1.0 + mx.cos(math.pi * progress))
        return lr * mx.where(s < warm, (s + 1) / max(1, warm), decay)

    return fn


# Architectures whose ``Model.__call__`` is exactly decoder → (tied) lm_head, so the
# loss may apply the head to assistant positions only; others get full logits.
_SELECTIVE_HEAD_MODULES = {"llama", "qwen2", "qwen3"}


def _supports_selective_head(model: Any) -> bool:
    return type(model).__module__.rsplit(".", 1)[-1] in _SELECTIVE_HEAD_MODULES


def _round_up(n: int) -> int:
    return PAD_TO * math.ceil(max(1, n) / PAD_TO)


def _to_batch(
    examples: list[Example], max_len: int, selective: bool, prompt: int = 0
) -> tuple[tuple, int]:
    """Padded arrays for ``loss`` plus the batch's non-padding tokens.

    Lengths are padded to a multiple of PAD_TO (mlx-lm does the same) so the compiled
    step is reused. ``selective``: ids, then flat indices of the hidden states that
    predict assistant tokens, their targets and weights (0 for padding entries).
    Otherwise: ids and a float mask over target positions (full logits).
    ``prompt`` > 0 (selective only; ``_detached_prompt``): the ids come as two arrays,
    the first ``prompt`` columns and the rest, the indices counted in the rest.
    """
    longest = max(len(e) for e in examples)
    width = max(longest, min(max_len, _round_up(longest)))
    ids = np.zeros((len(examples), width), np.int32)
    mask = np.zeros((len(examples), width), np.float32)
    for j, e in enumerate(examples):
        ids[j, : len(e)] = e.input_ids
        mask[j, : len(e)] = e.mask
    tokens = sum(len(e) for e in examples)
    if not selective:
        return (mx.array(ids), mx.array(mask)), tokens
    rows, cols = np.nonzero(mask[:, 1:])  # target t+1 is predicted at position t
    k = _round_up(len(rows))
    src = np.zeros(k, np.int32)
    tgt = np.zeros(k, np.int32)
    weight = np.zeros(k, np.float32)
    src[: len(rows)] = rows * (width - 1 - prompt) + cols - prompt
    tgt[: len(rows)] = ids[rows, cols + 1]
    weight[: len(rows)] = 1.0
    head = (ids,) if not prompt else (ids[:, :prompt], ids[:, prompt:])
    return (*map(mx.array, head), mx.array(src), mx.array(tgt), mx.array(weight)), tokens


def _detached_prompt(examples: list[Example], keep: int = 0) -> int:
    """Columns of a batch that run without gradient when prompts are detached: the
    shortest prompt of the examples (``data.prompt_length``; padded rows share one
    width, where the torch backend detaches each example's own) but its last ``keep``
    tokens, rounded down to PAD_TO so that compiled steps are reused."""
    return max(0, min(prompt_length(e) for e in examples) - keep) // PAD_TO * PAD_TO


def _to_shared_batch(
    examples: list[Example], max_len: int, min_prefix: int
) -> tuple[tuple, int, int] | None:
    """Packed rows carrying each shared prompt prefix once (``data.Packing``: rows of
    the batch's padded width, a shared block up to ``max_len``), for ``loss``: ids,
    their layout, then the gather of the targets as ``_to_batch``'s selective form.
    Also the examples' tokens and the tokens the decoder runs over. None when no
    examples of the batch share a prefix (``_to_batch`` then, with no mask to build).

    The layout (``_RowCache``) is one ``(3, rows, width)`` array: each token's
    position, its segment (a prefix or an example's tokens; the padding one more) and
    the segment it also sees in full (its prefix; -1 none)."""
    longest = max(len(e) for e in examples)
    rows = Packing(_round_up(longest), min_prefix, max_len).rows(examples)
    if not any(isinstance(b, Shared) for row in rows for b in row):
        return None
    layouts = [row_layout(row) for row in rows]
    longest = max(len(lay.ids) for lay in layouts)
    width = max(longest, min(max_len, _round_up(longest)))
    ids = np.zeros((len(rows), width), np.int32)
    layout = np.zeros((3, len(rows), width), np.int32)
    src: list[int] = []
    tgt: list[int] = []
    for r, lay in enumerate(layouts):
        n = len(lay.ids)
        segment = np.repeat(np.arange(len(lay.lengths)), lay.lengths)
        ids[r, :n] = lay.ids
        layout[0, r, :n] = lay.positions
        layout[1, r, :n] = segment
        layout[1, r, n:] = len(lay.lengths)  # padding: causal on its own, seeing itself
        layout[2, r, :n] = np.asarray(lay.parents)[segment]
        layout[2, r, n:] = -1
        src.extend(r * width + i for i in lay.src)
        tgt.extend(lay.tgt)
    k = _round_up(len(src))
    gather = np.zeros((3, k), np.int32)
    gather[0, : len(src)], gather[1, : len(tgt)], gather[2, : len(src)] = src, tgt, 1
    arrays = (mx.array(ids), mx.array(layout), mx.array(gather[0]), mx.array(gather[1]))
    weight = mx.array(gather[2].astype(np.float32))
    computed = sum(len(lay.ids) for lay in layouts)
    return (*arrays, weight), sum(lay.n_tokens for lay in layouts), computed


class _RowCache:
    """What a decoder layer of mlx-lm's llama, qwen2 and qwen3 reads from its ``cache``
    argument, carrying a shared-prefix batch's layout (``_to_shared_batch``) into their
    attention unchanged: ``offset``, the tokens' positions (for ``_TokenRope``);
    ``make_mask``, the boolean mask of who sees whom; ``update_and_fetch``, which keeps
    nothing (there is no generation here).

    Token i sees token j when j is at or before i in i's segment, or anywhere in the
    segment i's segment shares a prefix with (as ``packed.Packed`` on CUDA)."""

    def __init__(self, layout: mx.array) -> None:
        self.offset, self.segment, self.parent = layout[0], layout[1], layout[2]
        idx = mx.arange(layout.shape[-1])
        own = (self.segment[:, :, None] == self.segment[:, None, :]) & (
            idx[:, None] >= idx[None, :]
        )
        self.mask = own | (self.parent[:, :, None] == self.segment[:, None, :])

    def make_mask(
        self, n: int, return_array: bool = False, window_size: int | None = None
    ) -> mx.array:
        mask = self.mask
        if window_size is not None:  # a sliding window counts positions, not row indices
            mask = mask & (self.offset[:, :, None] - self.offset[:, None, :] < window_size)
        return mask[:, None]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return keys, values


class _PromptCache:
    """A layer's cache for a detached prompt (``TrainSpec.prompt_gradient_tokens``): the
    prompts' pass keeps its keys and values with their gradient stopped, so nothing flows back
    into the prompt; the replies' pass reads them before its own (``offset`` turns the
    replies' rope on from there; mlx-lm's causal mask lines the replies' queries up with
    the last keys)."""

    def __init__(self) -> None:
        self.offset = 0
        self.kv: tuple[mx.array, mx.array] | None = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.kv is None:  # the prompts
            self.kv = mx.stop_gradient(keys), mx.stop_gradient(values)
            self.offset = keys.shape[2]
            return keys, values
        past_k, past_v = self.kv
        return mx.concatenate([past_k, keys], axis=2), mx.concatenate([past_v, values], axis=2)


class _TokenRope(nn.Module):
    """A layer's rope that also takes a position per token: given a ``(rows, tokens)``
    ``offset`` (``_RowCache``), each token turns as a one-token sequence at its own
    position — ``mx.fast.rope`` takes one offset per sequence of the batch, so the
    tokens become the batch. Any other offset goes to the wrapped rope as it is."""

    def __init__(self, rope: nn.Module) -> None:
        super().__init__()
        self.rope = rope

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        if not isinstance(offset, mx.array) or offset.ndim != 2:
            return self.rope(x, offset=offset)
        b, heads, n, dim = x.shape
        tokens = x.transpose(0, 2, 1, 3).reshape(b * n, heads, 1, dim)
        turned = self.rope(tokens, offset=offset.reshape(-1))
        return turned.reshape(b, n, heads, dim).transpose(0, 2, 1, 3)


def positioned(model: Any) -> Any:
    """``model`` (a llama, qwen2 or qwen3 of mlx-lm) with every attention's rope a
    ``_TokenRope``, so it trains on ``_to_shared_batch``'s rows; returns it."""
    for layer in model.layers:
        if not isinstance(layer.self_attn.rope, _TokenRope):
            layer.self_attn.rope = _TokenRope(layer.self_attn.rope)
    return model


def masked_loss(model: Any, batch: mx.array, *rest: mx.array) -> tuple[mx.array, mx.array]:
    """Mean cross-entropy over assistant targets, in mlx-lm's ``loss`` signature.

    With (src, tgt, weight) the head runs only on the hidden states that predict an
    assistant token: the logits for prompt tokens are never computed; with a layout
    before them, the rows carry shared prompt prefixes once (``_to_shared_batch``). A
    last scalar, when given, scales the loss: with gradient accumulation it is
    ``accumulation × this micro-batch's targets / the step's``, so mlx-lm's mean over
    micro-batches is the mean over every target of the step, as one large batch gives.
    """
    scale = None
    if rest[-1].ndim == 0:
        *rest, scale = rest
    loss, ntoks = _masked_loss(model, batch, *rest)
    return (loss if scale is None else loss * scale), ntoks


def _masked_loss(model: Any, batch: mx.array, *rest: mx.array) -> tuple[mx.array, mx.array]:
    if len(rest) == 1:
        logits = model(batch[:, :-1])
        weights = rest[0][:, 1:]
        ce = nn.losses.cross_entropy(logits, batch[:, 1:]) * weights
    else:
        if len(rest) == 4 and rest[0].ndim == 2:  # detached: ``batch`` holds the prompts
            replies, src, tgt, weights = rest
            cache = [_PromptCache() for _ in model.layers]
            model.model(batch, cache=cache)
            hidden = model.model(replies[:, :-1], cache=cache)
        elif len(rest) == 4:  # shared prompt prefixes: every position is a row's token
            layout, src, tgt, weights = rest
            hidden = model.model(batch, cache=[_RowCache(layout)] * len(model.layers))
        else:
            src, tgt, weights = rest
            hidden = model.model(batch[:, :-1])
        picked = hidden.reshape(-1, hidden.shape[-1])[src]
        if model.args.tie_word_embeddings:
            logits = model.model.embed_tokens.as_linear(picked)
        else:
            logits = model.lm_head(picked)
        ce = nn.losses.cross_entropy(logits, tgt) * weights
    ntoks = weights.sum()
    return ce.astype(mx.float32).sum() / ntoks, ntoks


class Batches:
    """``iterate_batches`` for mlx-lm: stateless per iteration (resume sees the same
    batches), counting the examples' tokens it hands out and the tokens the decoder
    runs over (fewer where ``min_prefix`` > 0 lets a shared prompt prefix go once)."""

    def __init__(
        self,
        seed: int,
        start: int,
        selective: bool,
        accumulation: int = 1,
        min_prefix: int = 0,
        keep: int | None = None,
    ) -> None:
        self.seed = seed
        self.start = start
        self.selective = selective
        self.accumulation = accumulation
        self.min_prefix = min_prefix
        #: Prompt tokens trained through (``_detached_prompt``; needs ``selective``);
        #: None: no prompt detached.
        self.keep = keep
        self.tokens = 0
        self.computed = 0

    def arrays(
        self, examples: list[Example], max_len: int, step: list[Example] | None = None
    ) -> tuple[tuple, int, int]:
        """One (micro-)batch's arrays for ``loss``, its examples' tokens, and the
        tokens the decoder runs over. A detached prompt is the shortest of ``step``
        (the optimizer step's examples; default: these), so a step's gradient is the
        same however gradient accumulation splits it."""
        if self.keep is not None and self.selective:
            prompt = _detached_prompt(step or examples, self.keep)
            arrays, n = _to_batch(examples, max_len, True, prompt)
            return arrays, n, n
        if self.min_prefix > 0 and len(examples) > 1:
            shared = _to_shared_batch(examples, max_len, self.min_prefix)
            if shared is not None:
                return shared
        arrays, n = _to_batch(examples, max_len, self.selective)
        return arrays, n, n

    def __call__(
        self,
        dataset: list[Example],
        batch_size: int,
        max_seq_length: int,
        loop: bool = False,
        seed: int | None = None,
        comm_group: Any = None,
    ) -> Any:
        if loop:  # training: ``accumulation`` micro-batches per optimizer step
            lengths = [len(e) for e in dataset]
            it, k = self.start, self.accumulation
            while True:
                idx = grouped_batch_indices(lengths, batch_size * k, it, self.seed)
                micro = [
                    [dataset[i] for i in idx[j : j + batch_size]]
                    for j in range(0, len(idx), batch_size)
                ]
                labels = [sum(e.n_labels for e in m) for m in micro]
                step = [e for m in micro for e in m]
                for m, n_labels in zip(micro, labels, strict=True):
                    arrays, n, computed = self.arrays(m, max_seq_length, step)
                    self.tokens += n
                    self.computed += computed
                    yield (*arrays, mx.array(k * n_labels / max(1, sum(labels)), mx.float32))
                it += 1
        else:  # evaluation: every example once
            for i in range(0, len(dataset), batch_size):
                yield self.arrays(dataset[i : i + batch_size], max_seq_length)[0]


def _lora_keys(model: Any, targets: tuple[str, ...]) -> list[str]:
    """Module paths inside a decoder layer to adapt: every linear one for
    ``all-linear``, the default attention set as far as the model has it, or exactly
    the names the user listed (each must exist), as the torch backend chooses."""
    linear = {
        name: name.rsplit(".", 1)[-1]
        for name, mod in model.layers[0].named_modules()
        if isinstance(mod, nn.Linear | nn.QuantizedLinear)
    }
    if tuple(targets) == ("all-linear",):
        return sorted(linear)
    keys = [name for name, leaf in linear.items() if leaf in targets]
    missing = [t for t in targets if t not in linear.values()]
    if not keys or (missing and tuple(targets) != ATTENTION_MODULES):
        raise InputError(f"LoRA target modules {missing} do not exist in this model")
    return sorted(keys)


def mlx_adapter_config(spec: TrainSpec, keys: list[str], num_layers: int) -> JsonObject:
    """mlx-lm's ``adapter_config.json`` of the run's LoRA layers."""
    return {
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {
            "rank": spec.lora_rank,
            "scale": spec.lora_alpha / spec.lora_rank,
            "dropout": spec.lora_dropout,
            "keys": keys,
        },
    }


_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def mlx_to_peft(mlx_dir: Path, out_dir: Path, base_model_path: Path | str) -> None:
    """Write the PEFT form of an mlx-lm LoRA adapter folder into ``out_dir``.

    mlx computes ``x @ lora_a @ lora_b * scale`` with ``lora_a`` (in, r) and ``lora_b``
    (r, out); peft computes ``B(A(x)) * alpha / r`` with ``lora_A.weight`` (r, in) and
    ``lora_B.weight`` (out, r): transpose both and set ``alpha = scale × r``.
    """
    from safetensors.numpy import save_file

    cfg = json.loads((mlx_dir / "adapter_config.json").read_text(encoding="utf-8"))
    lp = cfg["lora_parameters"]
    rank = int(lp["rank"])
    tensors: dict[str, np.ndarray] = {}
    modules: set[str] = set()
    layers: set[int] = set()  # adapted layers (``loraLayers``: the last N)
    for name, arr in mx.load(str(mlx_dir / ADAPTER_FILE)).items():
        prefix, leaf = name.rsplit(".", 1)
        if leaf not in ("lora_a", "lora_b"):
            raise InputError(f"cannot convert mlx adapter tensor {name} to peft")
        peft_leaf = "lora_A.weight" if leaf == "lora_a" else "lora_B.weight"
        data = np.array(arr.astype(mx.float32), copy=False)
        tensors[f"base_model.model.{prefix}.{peft_leaf}"] = np.ascontiguousarray(data.T)
        modules.add(prefix.rsplit(".", 1)[-1])
        if found := _LAYER_INDEX.search(prefix):
            layers.add(int(found.group(1)))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_model_path),
        "r": rank,
        "lora_alpha": float(lp["scale"]) * rank,
        "lora_dropout": float(lp.get("dropout", 0.0)),
        "target_modules": sorted(modules),
        "layers_to_transform": sorted(layers) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _set_leaves(tree: Any, flat: dict[str, mx.array]) -> None:
    """Write ``flat`` (dotted paths, list indices as numbers) into ``tree`` in place, so
    objects mlx-lm's compiled step already holds see the restored values."""
    for path, value in flat.items():
        node = tree
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value


def train_mlx(spec: TrainSpec, callback: TrainingCallback) -> TrainResult:
    """Run one LoRA fine-tune with mlx-lm; see the module docstring."""
    return _MlxRun(spec, callback).train()


class _Running(TypedDict):
    """A run's running figures: tokens and seconds trained, the last losses."""

    tokens: int
    time: float
    loss: float | None
    val: float | None


class _MlxRun:
    """One run: ``__init__`` loads and prepares (as mlx-lm's ``lora.py`` does),
    ``train`` hands over to ``mlx_lm.tuner.trainer.train`` with our callback."""

    def __init__(self, spec: TrainSpec, callback: TrainingCallback) -> None:
        from mlx_lm import load as mlx_load
        from mlx_lm.tuner.utils import linear_to_lora_layers
        from transformers import AutoTokenizer

        self.spec = spec
        self.callback = callback
        self.model_path = resolve_model_path(spec)
        callback.on_log(f"loading base model {spec.model} from {self.model_path}")
        try:
            model, _ = mlx_load(str(self.model_path))
            tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load base model {spec.model!r} with mlx-lm: {exc}") from exc
        if tokenizer.chat_template is None:
            raise InputError(f"base model {spec.model!r} has no chat template to format examples")
        if spec.objective != "sft":  # DPO/KTO items (``preference_mlx``)
            self.train_set, self.val_set = preference_items(spec, tokenizer, callback)
        else:
            self.train_set, self.val_set = train_and_val_examples(spec, tokenizer, callback)
        #: A preference step's metrics and its evaluation's, added to the step's metric.
        self.extra: PreferenceFigures = {}
        self.val_extra: PreferenceFigures = {}

        mx.random.seed(spec.seed)
        model.freeze()
        keys = _lora_keys(model, spec.target_modules)
        num_layers = adapted_layers(spec, len(model.layers))
        self.mlx_cfg = mlx_adapter_config(spec, keys, num_layers)
        linear_to_lora_layers(model, num_layers, self.mlx_cfg["lora_parameters"])
        selective = _supports_selective_head(model)
        # Shared prompt prefixes carried once (issue 26), on the architectures whose
        # attention takes ``_RowCache``'s layout: the same losses, fewer tokens computed.
        # The rope is wrapped before the optimizer sees the model's tree (resume).
        sft = spec.objective == "sft"
        keep = spec.prompt_gradient_tokens if sft and selective else None
        share = MIN_SHARED_PREFIX if spec.share_prefix and sft and keep is None else 0
        if share and selective:
            positioned(model)
        self.model = model
        schedule = _schedule(spec.learning_rate, spec.iterations, spec.warmup, spec.lr_schedule)
        self.optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.0)
        self.best = BestTracker(spec.early_stopping_patience)
        #: Running figures: tokens and seconds trained, last losses.
        self.state: _Running = {"tokens": 0, "time": 0.0, "loss": None, "val": None}
        self.start = self._resume() if spec.resume_from is not None else 0
        self.done = self.start  # iterations complete
        self.trained_before = self.state["tokens"]
        self.batches = Batches(
            spec.seed, self.start, selective, spec.gradient_accumulation, share * selective, keep
        )
        self.tic = time.perf_counter()

    def _resume(self) -> int:
        """Load the checkpoint's adapter, optimizer state and counters; its iteration."""
        spec = self.spec
        assert spec.resume_from is not None
        meta = read_checkpoint_meta(spec.resume_from, CHECKPOINT_KIND)
        start = int(meta["iteration"])
        if start >= spec.iterations:
            raise InputError(
                f"checkpoint is at iteration {start}, nothing left of {spec.iterations}"
            )
        self.model.load_weights(
            list(mx.load(str(spec.resume_from / ADAPTER_FILE)).items()), strict=False
        )
        self.optimizer.init(self.model.trainable_parameters())
        opt_file = spec.resume_from / OPTIMIZER_FILE
        if opt_file.is_file():
            _set_leaves(self.optimizer.state, mx.load(str(opt_file)))
        self.state["tokens"] = int(meta.get("trainedTokens", 0))
        self.state["time"] = float(meta.get("trainTime", 0.0))
        mx.random.seed(spec.seed + start)
        self.callback.on_log(f"resuming from iteration {start} ({spec.resume_from})")
        return start

    def save_checkpoint(self, iteration: int) -> Path:
        spec, model, state = self.spec, self.model, self.state

        def fill(tmp: Path) -> None:
            mx.save_safetensors(
                str(tmp / ADAPTER_FILE), dict(tree_flatten(model.trainable_parameters()))
            )
            (tmp / "adapter_config.json").write_text(json.dumps(self.mlx_cfg), encoding="utf-8")
            mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(self.optimizer.state)))
            meta = {
                "kind": CHECKPOINT_KIND,
                "iteration": iteration,
                "jobId": spec.job_id,
                "trainedTokens": state["tokens"],
                "trainTime": state["time"],
            }
            (tmp / META_FILE).write_text(json.dumps(meta), encoding="utf-8")

        return write_atomically(spec.checkpoint_dir / str(iteration), fill)

    def save_adapter(self, dest: Path) -> None:
        """The adapter as it is now, in both forms (see the module docstring), at ``dest``."""

        def fill(tmp: Path) -> None:
            mlx_dir = tmp / MLX_SUBDIR
            mlx_dir.mkdir()
            weights = dict(tree_flatten(self.model.trainable_parameters()))
            mx.save_safetensors(str(mlx_dir / ADAPTER_FILE), weights)
            config = json.dumps(self.mlx_cfg, indent=2)
            (mlx_dir / "adapter_config.json").write_text(config, encoding="utf-8")
            mlx_to_peft(mlx_dir, tmp, self.model_path)

        write_atomically(dest, fill)

    def train(self) -> TrainResult:
        import tempfile

        from mlx_lm.tuner import trainer as mlx_trainer

        spec, callback, state, total = self.spec, self.callback, self.state, self.spec.iterations
        accumulation = spec.gradient_accumulation
        scratch = tempfile.TemporaryDirectory(prefix="milady-lab-mlx-")
        args = mlx_trainer.TrainingArgs(
            batch_size=spec.batch_size,
            iters=(total - self.start) * accumulation,  # mlx-lm counts micro-batches
            val_batches=-1,
            # A report (our metric + cancel check) after every optimizer step.
            steps_per_report=accumulation,
            steps_per_eval=10**9,  # we evaluate ourselves, after the step, like torch
            steps_per_save=10**9,  # we checkpoint ourselves, with the optimizer state
            max_seq_length=spec.max_seq_length,
            grad_accumulation_steps=accumulation,
            # mlx-lm's own final save; ours (``save_adapter``) writes the adapters we keep.
            adapter_file=str(Path(scratch.name) / ADAPTER_FILE),
        )
        callback.on_train_start(total, self.start)
        if callback.should_stop():
            raise TrainingCancelled(self.start)
        callback.on_log(f"training {total - self.start} iterations on mlx")
        ui_class = mlx_trainer.TrainUI
        # mlx-lm's rich progress output would fill the worker log; rank≠0 silences it.
        mlx_trainer.TrainUI = lambda iters, rank=0: ui_class(iters, rank=1)
        try:
            if spec.objective != "sft":
                preference_mlx.train_loop(self)
            else:
                mlx_trainer.train(
                    self.model,
                    self.optimizer,
                    self.train_set,
                    None,
                    args=args,
                    loss=masked_loss,
                    iterate_batches=self.batches,
                    training_callback=_bridge(self),
                )
        except EarlyStop:
            callback.on_log(f"stopping early at iteration {self.done}: {self.best.reason()}")
        finally:
            mlx_trainer.TrainUI = ui_class
            scratch.cleanup()

        if callback.should_stop():  # cancelled after the last step: no adapter, no model
            raise TrainingCancelled(self.done)
        callback.on_stage("saving")
        last = self._save_last()
        stopped = self.best.should_stop
        return TrainResult(
            adapter_dir=spec.output_dir,
            final_loss=state["loss"],
            final_val_loss=state["val"],
            trained_tokens=state["tokens"],
            tokens_per_second=state["tokens"] / state["time"] if state["time"] else 0.0,
            base_model_path=self.model_path,
            best_iteration=self.best.best_iteration,
            best_val_loss=self.best.best_val_loss,
            iterations_done=self.done,
            stopped_early=stopped,
            stop_reason=self.best.reason() if stopped else None,
            last_adapter_dir=last,
        )

    def _save_last(self) -> Path | None:
        """As the torch backend: the last adapter into ``output_dir`` unless that holds
        the best one, then into ``last_dir``; returns where it went besides ``output_dir``."""
        spec = self.spec
        keeps_best = spec.save_best and self.best.best_iteration is not None
        dest = spec.last_dir if keeps_best else spec.output_dir
        if dest is not None:
            self.save_adapter(dest)
            self.callback.on_log(f"last adapter written to {dest}")
        return dest if keeps_best else None

    def _evaluated(self, iteration: int, val: float) -> None:
        """Track the best validation loss; save the adapter when it is the best so far."""
        if not self.best.update(iteration, val):
            return
        if self.spec.save_best:
            self.save_adapter(self.spec.output_dir)
        self.callback.on_summary({"bestIteration": iteration, "bestValLoss": val})

    def on_report(self, info: Mapping[str, float]) -> None:
        """After every step: the metric, evaluation when due, checkpoint, cancel."""
        spec, callback, state, total = self.spec, self.callback, self.state, self.spec.iterations
        iteration = self.start + int(info["iteration"]) // self.spec.gradient_accumulation
        self.done = iteration
        state["time"] += time.perf_counter() - self.tic
        state["tokens"] = self.trained_before + self.batches.tokens
        if iteration == self.start + 1 and self.batches.computed < self.batches.tokens:
            callback.on_log(
                f"first step: {self.batches.tokens} tokens, {self.batches.computed} computed "
                "(shared prompt prefixes carried once)"
            )
        state["loss"] = float(info["train_loss"])
        metric: MetricPoint = {
            "iteration": iteration,
            "loss": state["loss"],
            "learningRate": float(info["learning_rate"]),
            "tokensPerSecond": state["tokens"] / state["time"] if state["time"] else 0.0,
            "trainedTokens": state["tokens"],
            "peakMemory": max(int(mx.get_peak_memory()), peak_rss_bytes()),
        }
        evaluate = iteration % max(1, spec.eval_every) == 0 or iteration == total
        # A cancel skips the evaluation (seconds on a big validation set).
        if self.val_set and evaluate and not callback.should_stop():
            callback.on_stage("evaluating")
            state["val"] = metric["valLoss"] = self.evaluate()
            self._evaluated(iteration, state["val"])
            metric.update(self.val_extra)
            if iteration < total:
                callback.on_stage("training")
        metric.update(self.extra)
        callback.on_metric(metric)
        if not math.isfinite(state["loss"]):
            raise RuntimeError(f"loss became {state['loss']} at iteration {iteration}")
        every = spec.checkpoint_every
        stop = iteration < total and callback.should_stop()
        # On cancel, keep the work since the last checkpoint (LoRA saves are quick).
        if every > 0 and (iteration % every == 0 or stop):
            path = self.save_checkpoint(iteration)
            callback.on_log(f"checkpoint at iteration {iteration}")
            callback.on_checkpoint(iteration, path)
        if stop:
            raise TrainingCancelled(iteration)
        if self.best.should_stop:
            raise EarlyStop()
        self.tic = time.perf_counter()

    def evaluate(self) -> float:
        from mlx_lm.tuner import trainer as mlx_trainer

        if self.spec.objective != "sft":
            return preference_mlx.evaluate(self)

        loss = mlx_trainer.evaluate(
            model=self.model,
            dataset=self.val_set,
            batch_size=self.spec.batch_size,
            num_batches=-1,
            max_seq_length=self.spec.max_seq_length,
            loss=masked_loss,
            iterate_batches=self.batches,
        )
        self.model.train()
        return loss


def _bridge(run: _MlxRun) -> Any:
    """mlx-lm's callback, handing each step's report to ``run.on_report``."""
    from mlx_lm.tuner.callbacks import TrainingCallback as MlxCallback

    class Bridge(MlxCallback):
        def on_train_loss_report(self, info: Mapping[str, float]) -> None:
            run.on_report(info)

    run.tic = time.perf_counter()
    return Bridge()
