"""The launcher's training controls (issue 15): run length by iterations or epochs, and the
advanced options in a collapsed section, with the defaults the service would use.

``body()`` gives only what a user can reasonably mean: fields left at "auto" (warmup,
alpha, early stopping off) are not sent, so the service derives them as documented.
``apply_size_defaults`` sets learning rate, rank, batch and max tokens to the row of
``training.defaults`` for the chosen base model; ``show`` fills the controls from a job's
recorded options. The numbers are checked, never clamped (``_checks``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ..training.defaults import DEFAULT_MAX_SEQ_LENGTH, size_defaults
from ..training.request import StartJobRequest
from ..training.schedule import SCHEDULES
from ..training.spec import DEFAULT_PROMPT_GRADIENT_TOKENS
from ._bodies import JobBody
from ._checks import FieldChecks, decimal, whole
from ._fields import STYLE, Change, optional_text, wrap_row

#: ``loraLayers``: every layer (the default), or the last N.
LAYER_CHOICES = ("all", "8", "16")
#: ``promptGradientTokens``: the whole example, or the prompt's last N tokens.
PROMPT_GRADIENT_CHOICES = ("all", "0", "128", "256", "512")
TARGET_CHOICES = ("attention", "all-linear", "q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj")
#: The objectives (issue 27): sft on chat examples, dpo on a pairs dataset, kto on a labelled one.
OBJECTIVES = (("sft", "sft"), ("dpo (pairs)", "dpo"), ("kto (labelled)", "kto"))
#: β when the user has not changed it (``training.preference.DEFAULT_BETA``).
DEFAULT_BETA = 0.1


def _tokens_text(value: Any) -> str:
    """A ``promptGradientTokens`` value as the combobox shows it (None: ``all``)."""
    return "all" if value is None else str(value)


class TrainingControls(w.VBox):
    """Length of the run plus an "Advanced" accordion; ``iterations`` belongs to the launcher."""

    def __init__(self, checks: FieldChecks | None = None) -> None:
        super().__init__()
        self.checks = checks or FieldChecks(StartJobRequest)
        check = self.checks.add
        self.length_by = w.ToggleButtons(
            options=[("iterations", "iterations"), ("epochs", "epochs")],
            value="iterations",
            description="Length in",
            style={**STYLE, "button_width": "100px"},
        )
        self.epochs = decimal("Epochs", 3.0, "140px", step=0.5)
        self.lora_rank = whole("LoRA rank", 8, "140px")
        self.lora_layers = w.Combobox(
            value="all", options=list(LAYER_CHOICES), ensure_option=False,
            description="LoRA layers (last)", style=STYLE, layout=w.Layout(width="230px"),
        )  # fmt: skip
        self.max_seq_length = whole("Max tokens", DEFAULT_MAX_SEQ_LENGTH, "170px")
        self.gradient_accumulation = whole("Grad. accumulation", 1, "200px")
        self.lr_schedule = w.Dropdown(
            options=list(SCHEDULES), value="cosine", description="Schedule", style=STYLE,
            layout=w.Layout(width="190px"),
        )  # fmt: skip
        self.warmup_steps = optional_text("Warmup steps", "auto (5 %)", "200px")
        self.lora_alpha = optional_text("LoRA alpha", "2 × rank", "180px")
        self.lora_dropout = decimal("LoRA dropout", 0.0, "170px", step=0.01)
        self.target_modules = w.Combobox(
            value="attention", options=list(TARGET_CHOICES), ensure_option=False,
            description="Target modules", style=STYLE, layout=w.Layout(width="330px"),
        )  # fmt: skip
        self.seed = whole("Seed", 0, "140px")
        self.eval_every = whole("Eval every", 25, "160px")
        self.patience = whole("Early stop after (0: off)", 0, "230px")
        self.save_best = w.Checkbox(
            value=True,
            description="Register the best adapter (lowest val)",
            indent=False,
            layout=w.Layout(width="auto"),
        )
        self.prompt_gradient_tokens = w.Combobox(
            value=_tokens_text(DEFAULT_PROMPT_GRADIENT_TOKENS),
            options=list(PROMPT_GRADIENT_CHOICES), ensure_option=False,
            description="Gradient through the prompt's last (tokens)", style=STYLE,
            layout=w.Layout(width="330px"),
        )  # fmt: skip
        advanced = self._advanced_box()
        self.advanced = w.Accordion(children=[advanced], selected_index=None)
        self.advanced.set_title(0, "Advanced")
        self.objective = w.ToggleButtons(
            options=list(OBJECTIVES), value="sft", description="Objective",
            style={**STYLE, "button_width": "130px"},
        )  # fmt: skip
        self.beta = decimal("β", DEFAULT_BETA, "120px", step=0.01)
        # hidden until chosen (their box holds only the note then, empty)
        self.epochs.layout.display = "none"
        self.beta.layout.display = "none"
        self.length_by.observe(self._on_length, names="value")
        self.objective.observe(self._on_objective, names="value")
        self.children = [
            wrap_row([self.objective, check("beta", self.beta)]),
            wrap_row([self.length_by, check("epochs", self.epochs)]),
            self.advanced,
        ]

    def _advanced_box(self) -> w.VBox:
        """The "Advanced" accordion's rows, each number checked as it is typed."""
        check = self.checks.add
        return w.VBox(
            [
                wrap_row(
                    [
                        check("maxSeqLength", self.max_seq_length),
                        check("gradientAccumulation", self.gradient_accumulation),
                        check("loraRank", self.lora_rank),
                    ]
                ),
                wrap_row([self.lr_schedule, self.warmup_steps, check("seed", self.seed)]),
                wrap_row(
                    [self.lora_alpha, check("loraDropout", self.lora_dropout), self.target_modules]
                ),
                wrap_row([self.lora_layers, self.prompt_gradient_tokens]),
                wrap_row(
                    [
                        check("evalEvery", self.eval_every),
                        check("earlyStoppingPatience", self.patience),
                        self.save_best,
                    ]
                ),
            ]
        )

    def _on_length(self, change: Change) -> None:
        self.epochs.layout.display = "" if change["new"] == "epochs" else "none"

    def _on_objective(self, change: Change) -> None:
        self.beta.layout.display = "" if change["new"] != "sft" else "none"

    @property
    def by_epochs(self) -> bool:
        return self.length_by.value == "epochs"

    def apply_size_defaults(self, model: str, batch: Any, learning_rate: Any) -> None:
        """Set learning rate, batch, rank and max tokens to the size table's row for ``model``."""
        row = size_defaults(model or "smollm2-135m-instruct")
        batch.value, learning_rate.value = row.batch_size, row.learning_rate
        self.lora_rank.value, self.max_seq_length.value = row.lora_rank, row.max_seq_length

    def show(self, options: Mapping[str, Any]) -> None:
        """Fill the controls from a job's recorded options (camelCase, only what was set);
        what a record lacks keeps its value. The run stays measured in iterations: a job
        records them even when it was given epochs."""
        numbers = {
            "loraRank": self.lora_rank,
            "maxSeqLength": self.max_seq_length,
            "gradientAccumulation": self.gradient_accumulation,
            "loraDropout": self.lora_dropout,
            "seed": self.seed,
            "evalEvery": self.eval_every,
            "epochs": self.epochs,
            "beta": self.beta,
        }
        for key, widget in numbers.items():
            if isinstance(options.get(key), int | float):
                widget.value = options[key]
        self.patience.value = int(options.get("earlyStoppingPatience") or 0)
        if options.get("lrSchedule") in self.lr_schedule.options:
            self.lr_schedule.value = options["lrSchedule"]
        if isinstance(options.get("saveBest"), bool):
            self.save_best.value = options["saveBest"]
        # jobs recorded before the option trained through the whole example
        self.prompt_gradient_tokens.value = _tokens_text(options.get("promptGradientTokens"))
        targets = options.get("targetModules")
        if targets:
            self.target_modules.value = (
                targets if isinstance(targets, str) else ",".join(map(str, targets))
            )
        layers = options.get("loraLayers")
        self.lora_layers.value = str(layers) if layers is not None else "all"
        for key, widget in (("warmupSteps", self.warmup_steps), ("loraAlpha", self.lora_alpha)):
            value = options.get(key)
            widget.value = (
                "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
            )
        objective = options.get("objective") or "sft"
        if objective in {v for _, v in OBJECTIVES}:
            self.objective.value = objective

    def body(self) -> JobBody:
        """The control fields of a start request (``epochs`` when the run is in epochs)."""
        body: JobBody = {
            "loraRank": int(self.lora_rank.value),
            "maxSeqLength": int(self.max_seq_length.value),
            "gradientAccumulation": int(self.gradient_accumulation.value),
            "lrSchedule": self.lr_schedule.value,
            "loraDropout": float(self.lora_dropout.value),
            "seed": int(self.seed.value),
            "evalEvery": int(self.eval_every.value),
            "saveBest": bool(self.save_best.value),
        }
        if self.by_epochs:
            body["epochs"] = float(self.epochs.value)
        targets = (self.target_modules.value or "").strip()
        if targets:
            body["targetModules"] = targets  # the service splits names at commas
        # checked (and converted) by the service
        if self.warmup_steps.value.strip():
            body["warmupSteps"] = self.warmup_steps.value.strip()
        if self.lora_alpha.value.strip():
            body["loraAlpha"] = self.lora_alpha.value.strip()
        if self.lora_layers.value.strip() not in ("", "all"):  # all: the default
            body["loraLayers"] = self.lora_layers.value.strip()
        if self.prompt_gradient_tokens.value.strip():  # checked by the service
            body["promptGradientTokens"] = self.prompt_gradient_tokens.value.strip()
        if self.patience.value:
            body["earlyStoppingPatience"] = int(self.patience.value)
        if self.objective.value != "sft":  # sft is the default: its body stays as it was
            body["objective"] = self.objective.value
            body["beta"] = float(self.beta.value)
        return body
