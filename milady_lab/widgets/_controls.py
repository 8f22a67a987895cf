"""The launcher's training controls (issue 15): run length by iterations or epochs, and the
advanced options in a collapsed section, with the defaults the service would use.

``body()`` gives only what a user can reasonably mean: fields left at "auto" (warmup,
alpha, early stopping off) are not sent, so the service derives them as documented.
``apply_size_defaults`` sets learning rate, rank and batch to the row of
``training.defaults`` for the chosen base model.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..training.defaults import size_defaults
from ..training.schedule import SCHEDULES
from ._bodies import JobBody
from ._fields import STYLE, Change, count, optional_text, wrap_row

TARGET_CHOICES = ("attention", "all-linear", "q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj")
#: The objectives (issue 27): sft on chat examples, dpo on a pairs dataset, kto on a labelled one.
OBJECTIVES = (("sft", "sft"), ("dpo (pairs)", "dpo"), ("kto (labelled)", "kto"))
#: β when the user has not changed it (``training.preference.DEFAULT_BETA``).
DEFAULT_BETA = 0.1


def _number(description: str, value: float, width: str, step: float = 0.01) -> w.FloatText:
    return w.FloatText(
        value=value, step=step, description=description, style=STYLE, layout=w.Layout(width=width)
    )


class TrainingControls(w.VBox):
    """Length of the run plus an "Advanced" accordion; ``iterations`` belongs to the launcher."""

    def __init__(self) -> None:
        super().__init__()
        self.length_by = w.ToggleButtons(
            options=[("iterations", "iterations"), ("epochs", "epochs")],
            value="iterations",
            description="Length in",
            style={**STYLE, "button_width": "80px"},
        )
        self.epochs = _number("Epochs", 3.0, "140px", step=0.5)
        self.epochs.layout.display = "none"
        self.lora_rank = count("LoRA rank", 8, 1, 512, "140px")
        self.max_seq_length = count("Max tokens", 2048, 16, 131_072, "170px")
        self.gradient_accumulation = count("Grad. accumulation", 1, 1, 1024, "190px")
        self.lr_schedule = w.Dropdown(
            options=list(SCHEDULES), value="cosine", description="Schedule", style=STYLE,
            layout=w.Layout(width="190px"),
        )  # fmt: skip
        self.warmup_steps = optional_text("Warmup steps", "auto (5 %)", "200px")
        self.lora_alpha = optional_text("LoRA alpha", "2 × rank", "180px")
        self.lora_dropout = _number("LoRA dropout", 0.0, "170px")
        self.target_modules = w.Combobox(
            value="attention", options=list(TARGET_CHOICES), ensure_option=False,
            description="Target modules", style=STYLE, layout=w.Layout(width="330px"),
        )  # fmt: skip
        self.seed = count("Seed", 0, 0, 2**32 - 1, "140px")
        self.eval_every = count("Eval every", 25, 1, 1_000_000, "160px")
        self.patience = count("Early stop after (0: off)", 0, 0, 100_000, "230px")
        self.save_best = w.Checkbox(
            value=True, description="Register the best adapter (lowest val)"
        )
        advanced = w.VBox(
            [
                wrap_row([self.max_seq_length, self.gradient_accumulation, self.lora_rank]),
                wrap_row([self.lr_schedule, self.warmup_steps, self.seed]),
                wrap_row([self.lora_alpha, self.lora_dropout, self.target_modules]),
                wrap_row([self.eval_every, self.patience, self.save_best]),
            ]
        )
        self.advanced = w.Accordion(children=[advanced], selected_index=None)
        self.advanced.set_title(0, "Advanced")
        self.objective = w.ToggleButtons(
            options=list(OBJECTIVES), value="sft", description="Objective",
            style={**STYLE, "button_width": "110px"},
        )  # fmt: skip
        self.beta = _number("β", DEFAULT_BETA, "120px")
        self.beta.layout.display = "none"
        self.length_by.observe(self._on_length, names="value")
        self.objective.observe(self._on_objective, names="value")
        self.children = [
            wrap_row([self.objective, self.beta]),
            wrap_row([self.length_by, self.epochs]),
            self.advanced,
        ]

    def _on_length(self, change: Change) -> None:
        self.epochs.layout.display = "" if change["new"] == "epochs" else "none"

    def _on_objective(self, change: Change) -> None:
        self.beta.layout.display = "" if change["new"] != "sft" else "none"

    @property
    def by_epochs(self) -> bool:
        return self.length_by.value == "epochs"

    def apply_size_defaults(self, model: str, batch: Any, learning_rate: Any) -> None:
        """Set learning rate, batch and rank to the size table's row for ``model``."""
        row = size_defaults(model or "smollm2-135m-instruct")
        batch.value, learning_rate.value = row.batch_size, row.learning_rate
        self.lora_rank.value = row.lora_rank

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
        if self.patience.value:
            body["earlyStoppingPatience"] = int(self.patience.value)
        if self.objective.value != "sft":  # sft is the default: its body stays as it was
            body["objective"] = self.objective.value
            body["beta"] = float(self.beta.value)
        return body
