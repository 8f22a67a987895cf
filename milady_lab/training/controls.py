"""The training controls of a job (issue 15): how long, how hard and on what it trains.

``control_options`` checks the body's control fields (bounds from ``StartJobRequest``,
plus the rules between fields) and fills in the defaults: per model size for the
learning rate, LoRA rank, batch and maxSeqLength (``defaults``), a resumed job's own
values for everything else. ``for_dataset`` derives ``iterations`` from ``epochs`` (or the
other way round) once the dataset is known. All of it runs before any process starts.
"""

from __future__ import annotations

import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from .. import validation as v
from ..api.schema import JsonObject
from ..errors import InputError
from .defaults import size_defaults
from .request import RecordedOptions, StartJobRequest
from .schedule import DEFAULT_SCHEDULE, SCHEDULES
from .spec import DEFAULT_PROMPT_GRADIENT_TOKENS

#: ``targetModules`` presets; a list names the modules itself.
TARGET_PRESETS = ("attention", "all-linear")
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
#: Linear module names per architecture (``config.json``'s ``model_type``), to check a
#: ``targetModules`` list before any process starts; other architectures are checked
#: by the worker once the model is loaded.
LINEAR_MODULES: dict[str, tuple[str, ...]] = {
    arch: (*ATTENTION_MODULES, "gate_proj", "up_proj", "down_proj")
    for arch in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
} | {"phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")}
#: Friendly names whose architecture is known without a folder.
_FRIENDLY_ARCH = {"smollm2": "llama", "llama": "llama", "qwen2.5": "qwen2", "gemma-2": "gemma2"}
MAX_TARGET_MODULES = 64
DEFAULT_SEED = 0

T = TypeVar("T")


def _bounds(field: str) -> dict[str, float]:
    """``ge``/``le``/``gt``/``lt`` of a ``StartJobRequest`` field: the struct is the one source."""
    info = next(f for f in msgspec.structs.fields(StartJobRequest) if f.encode_name == field)
    keys = ("ge", "le", "gt", "lt")
    pending = [info.type]
    while pending:  # through Annotated[...] and X | None to the Meta holding the bounds
        kind = pending.pop()
        for meta in getattr(kind, "__metadata__", ()):
            found = {k: getattr(meta, k) for k in keys if getattr(meta, k, None) is not None}
            if found:
                return found
        pending.extend(typing.get_args(kind))
    return {}


def bounded_int(b: JsonObject, key: str, default: int | None) -> int | None:
    lim = _bounds(key)
    return v.integer(b.get(key), key, default=default, minimum=lim.get("ge"), maximum=lim.get("le"))


def bounded_number(b: JsonObject, key: str, default: float | None) -> float | None:
    """A number within the struct's bounds (``ge`` and ``lt`` checked here)."""
    lim = _bounds(key)
    low = lim.get("gt", lim.get("ge"))
    value = v.number(b.get(key), key, default=default, maximum=lim.get("le"))
    if value is None:
        return None
    if ("gt" in lim and value <= low) or ("ge" in lim and value < low):
        raise InputError(f"{key} must be {'greater than' if 'gt' in lim else 'at least'} {low:g}")
    if "lt" in lim and value >= lim["lt"]:
        raise InputError(f"{key} must be less than {lim['lt']:g}, got {value:g}")
    return value


def boolean(value: Any, name: str, default: bool) -> bool:
    """A JSON boolean, or the CLI's ``true``/``false`` (``yes``/``no``, ``1``/``0``)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise InputError(f"{name} must be true or false")


@dataclass(frozen=True)
class Controls:
    """The training controls of ``JobOptions``, checked and defaulted."""

    epochs: float | None
    batch_size: int
    learning_rate: float
    lora_rank: int | None
    #: The last N layers; ``all`` or None: every layer.
    lora_layers: int | Literal["all"] | None
    max_seq_length: int
    gradient_accumulation: int
    warmup_steps: int | None
    lr_schedule: str
    lora_dropout: float
    target_modules: str | tuple[str, ...]
    seed: int
    early_stopping_patience: int | None
    save_best: bool
    lora_alpha: float | None
    #: Prompt tokens trained through; ``all``: the whole example.
    prompt_gradient_tokens: int | Literal["all"]


def control_options(
    b: JsonObject, prior: RecordedOptions, model: str, resumed: Mapping[str, Any] | None
) -> Controls:
    """The control fields of ``JobOptions``, checked and defaulted (a resumed job's own
    values, else the defaults of the model's size)."""
    if b.get("epochs") is not None and b.get("iterations") is not None:
        raise InputError("give either epochs or iterations, not both (the other is derived)")
    size = size_defaults(model)

    def pick(recorded: T | None, default: T) -> T:
        return default if recorded is None else recorded

    epochs = bounded_number(b, "epochs", None)
    batch_size = _given(bounded_int(b, "batchSize", pick(prior.batch_size, size.batch_size)))
    learning_rate = _given(
        bounded_number(b, "learningRate", pick(prior.learning_rate, size.learning_rate))
    )
    lora_rank = _given(bounded_int(b, "loraRank", pick(prior.lora_rank, size.lora_rank)))
    out = Controls(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        lora_layers=lora_layers(b.get("loraLayers"), prior),
        max_seq_length=_given(
            bounded_int(b, "maxSeqLength", pick(prior.max_seq_length, size.max_seq_length))
        ),
        gradient_accumulation=_given(
            bounded_int(b, "gradientAccumulation", pick(prior.gradient_accumulation, 1))
        ),
        warmup_steps=bounded_int(b, "warmupSteps", prior.warmup_steps),
        lr_schedule=_given(
            v.choice(
                b.get("lrSchedule"),
                "lrSchedule",
                SCHEDULES,
                default=pick(prior.lr_schedule, DEFAULT_SCHEDULE),
            )
        ),
        lora_dropout=_given(bounded_number(b, "loraDropout", pick(prior.lora_dropout, 0.0))),
        target_modules=target_modules(b.get("targetModules"), model, prior.target_modules),
        seed=_given(bounded_int(b, "seed", pick(prior.seed, DEFAULT_SEED))),
        early_stopping_patience=bounded_int(
            b, "earlyStoppingPatience", prior.early_stopping_patience
        ),
        save_best=boolean(b.get("saveBest"), "saveBest", pick(prior.save_best, True)),
        lora_alpha=bounded_number(b, "loraAlpha", pick(prior.lora_alpha, 2.0 * lora_rank)),
        prompt_gradient_tokens=prompt_gradient_tokens(
            b.get("promptGradientTokens"), prior, resumed is not None
        ),
    )
    if resumed is not None:
        _same_shape(out, prior, resumed["id"])
    return out


def _given(value: T | None) -> T:
    """A checked value that has a default, so is never None."""
    assert value is not None
    return value


def _same_shape(out: Controls, prior: RecordedOptions, job_id: str) -> None:
    """A resume continues the same adapter: its LoRA shape cannot change."""
    rank = prior.lora_rank or 8  # jobs recorded before the rank was always set
    old_alpha = prior.lora_alpha if prior.lora_alpha is not None else 2.0 * rank
    shape = {
        "loraRank": (out.lora_rank, rank),
        "loraAlpha": (out.lora_alpha, old_alpha),
        "targetModules": (out.target_modules, prior.target_modules or "attention"),
        "loraLayers": (out.lora_layers or "all", prior.lora_layers or "all"),
    }
    for key, (new, old) in shape.items():
        if _plain(new) != _plain(old):
            raise InputError(f"{key} must match job {job_id} to resume it ({_plain(old)!r})")


def prompt_gradient_tokens(
    value: Any, prior: RecordedOptions, resumed: bool
) -> int | Literal["all"]:
    """``promptGradientTokens``: a count of prompt tokens or ``all``; by default a resumed
    job's own (``all`` for one recorded before the option: it trained so), else the
    default (training guide)."""
    if value is None:
        if prior.prompt_gradient_tokens is not None:
            return prior.prompt_gradient_tokens
        default = None if resumed else DEFAULT_PROMPT_GRADIENT_TOKENS
        return "all" if default is None else default
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    try:
        return _given(bounded_int({"promptGradientTokens": value}, "promptGradientTokens", None))
    except InputError as exc:
        raise InputError(f"{exc}; or 'all' for the whole example") from exc


def lora_layers(value: Any, prior: RecordedOptions) -> int | Literal["all"] | None:
    """``loraLayers``: a count of last layers or ``all``; by default a resumed job's own,
    else None: every layer (``make demo`` measured 8 of SmolLM2's 30 learning less in
    the same iterations: training guide)."""
    if value is None:
        return prior.lora_layers
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    try:
        return bounded_int({"loraLayers": value}, "loraLayers", None)
    except InputError as exc:
        raise InputError(f"{exc}; or 'all' for every layer") from exc


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def target_modules(value: Any, model: str, default: Any) -> str | tuple[str, ...]:
    """``attention``, ``all-linear`` or module names (a list, or comma-separated text),
    checked against the model's architecture where it is known."""
    if value is None:
        value = default if default is not None else "attention"
    if isinstance(value, str) and value.strip() in TARGET_PRESETS:
        return value.strip()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise InputError(
            "targetModules must be 'attention', 'all-linear' or a list of module names"
        )
    names: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or len(item) > 100:
            raise InputError("targetModules must list module names (non-empty strings)")
        names.append(item.strip())
    if len(names) > MAX_TARGET_MODULES:
        raise InputError(f"targetModules may list at most {MAX_TARGET_MODULES} names")
    known = model_linear_modules(model)
    unknown = [n for n in names if known is not None and n not in known]
    if unknown:
        raise InputError(
            f"targetModules {unknown} are not linear modules of {Path(model).name}; "
            f"it has {', '.join(known or ())} (or use 'attention' / 'all-linear')"
        )
    return tuple(dict.fromkeys(names))


def model_linear_modules(model: str) -> tuple[str, ...] | None:
    """The LoRA-able module names of ``model``'s architecture, when known cheaply."""
    arch = None
    folder = Path(model)
    if folder.is_dir():
        try:
            arch = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    else:
        arch = next((a for p, a in _FRIENDLY_ARCH.items() if model.lower().startswith(p)), None)
    return LINEAR_MODULES.get(arch) if arch else None


class RunLength(Protocol):
    """What ``derived_length`` reads of a job's options."""

    @property
    def iterations(self) -> int | None: ...
    @property
    def epochs(self) -> float | None: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def gradient_accumulation(self) -> int: ...
    @property
    def early_stopping_patience(self) -> int | None: ...
    @property
    def warmup_steps(self) -> int | None: ...


def derived_length(
    opts: RunLength, dataset: Mapping[str, Any] | None, default_iterations: int
) -> tuple[int, float | None]:
    """``iterations`` and ``epochs`` (one given, the other derived from the dataset's
    training examples), and the checks of ``warmupSteps`` and early stopping against them.
    A warmup left out is not recorded: it follows the run's length (a resume changes it).

    One iteration is one optimizer step over ``batchSize × gradientAccumulation``
    examples, so ``iterations = ceil(epochs × trainCount / that)``.
    """
    per_step = opts.batch_size * opts.gradient_accumulation
    train = int(dataset.get("trainCount") or 0) if dataset else 0
    iterations, epochs = opts.iterations, opts.epochs
    if epochs is not None:
        if train <= 0:
            raise InputError("epochs needs a dataset with training examples")
        limit = _bounds("iterations")["le"]
        iterations = max(1, math.ceil(epochs * train / per_step))
        if iterations > limit:
            raise InputError(
                f"epochs={epochs:g} would be {iterations} iterations (at most {limit})"
            )
    elif iterations is None:
        iterations = default_iterations
    if epochs is None and train > 0:  # given epochs stay as given
        epochs = round(iterations * per_step / train, 4)
    patience = opts.early_stopping_patience
    if patience is not None and dataset is not None and not dataset.get("validCount"):
        raise InputError(
            f"earlyStoppingPatience needs validation examples; dataset {dataset.get('id')} has none"
        )
    warmup = opts.warmup_steps  # None: ``default_warmup`` of the run, in the worker
    if warmup is not None and warmup >= iterations:
        raise InputError(f"warmupSteps ({warmup}) must be fewer than iterations ({iterations})")
    return iterations, epochs
