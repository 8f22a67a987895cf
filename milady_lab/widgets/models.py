"""ModelManager: fine-tuned models with their metrics; import, activate, benchmark.

The newest model is chosen when the panel opens and whenever a new one is registered (a
job just completed): it is the one a user came to import, try and activate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as w

from ..api.schema import (
    ActivateAnswer,
    BenchmarkAnswer,
    DeactivateAnswer,
    ImportOllamaAnswer,
    Model,
    Scores,
)
from . import plots
from ._bodies import ActivateBody, ImportBody
from ._fields import STYLE, optional_text
from ._panel import Panel, Raw, esc, fmt_ms, fmt_num, header, html_table, short_model
from .auto import AutoImprovePanel

SCORE_KEYS = ("coherence", "consistency", "helpfulness")


#: What an action of the panel answers (the last one is kept: a benchmark's bars).
Outcome = ImportOllamaAnswer | ActivateAnswer | BenchmarkAnswer | DeactivateAnswer
Answer = TypeVar("Answer", ImportOllamaAnswer, ActivateAnswer, BenchmarkAnswer, DeactivateAnswer)


def score_map(scores: Scores | None) -> dict[str, float]:
    """A variant's scores by wire name (``formatValid``, ...), those it has; {} for none."""
    return {k: float(v) for k, v in scores.items() if v is not None} if scores else {}


SAMPLE_COLUMNS = (
    ("promptEnd", "prompt (its end)"),
    ("reference", "the agent's reply"),
    ("scores", "fine-tuned"),
    ("baseline", "base"),
    ("active", "active"),
)


SAMPLE_STYLE = "white-space: pre-wrap; max-width: 260px; margin: 0; font-size: 11px"


def samples_html(samples: Any) -> str:
    """The benchmark's replies per purpose, each purpose folded (``<details>``)."""
    if not isinstance(samples, dict) or not samples:
        return ""
    parts = ["<b>Replies behind the figures</b> (held-out examples, redacted)"]
    for purpose, rows in samples.items():
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        cols = [(k, label) for k, label in SAMPLE_COLUMNS if any(k in r for r in rows)]
        table = html_table(
            [label for _, label in cols],
            [[Raw(f"<pre style='{SAMPLE_STYLE}'>{esc(str(r.get(k, '')))}</pre>") for k, _ in cols]
             for r in rows],
        )  # fmt: skip
        parts.append(
            f"<details><summary>{esc(str(purpose))} ({len(rows)})</summary>{table}</details>"
        )
    return "".join(parts)


def benchmark_of(model: Model) -> tuple[dict[str, float], dict[str, float]]:
    """(scores, baseline) stored on a model record, or two empty dicts."""
    bench = model.benchmark
    if bench is None:
        return {}, {}
    return score_map(bench.scores), score_map(bench.baseline)


class ModelManager(Panel):
    """Registered models; Import into Ollama, Activate and Benchmark the chosen one."""

    title = "Models"

    def __init__(self, backend: Any = None, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.models: list[Model] = []
        self.last_result: Outcome | None = None
        self.table = w.HTML(layout=w.Layout(width="100%"))
        self.pick = w.Dropdown(
            description="Model", options=[], style=STYLE, layout=w.Layout(width="640px")
        )
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.ollama_name = optional_text("Ollama name", "default: from the model", "260px")
        self.ollama_base = optional_text("Base", "default: e.g. smollm2:135m", "260px")
        self.ollama_url = w.Text(
            description="Ollama URL",
            value="http://localhost:11434",
            style=STYLE,
            layout=w.Layout(width="270px"),
        )
        self.import_button = w.Button(
            description="Import into Ollama", icon="download", layout=w.Layout(width="180px")
        )
        self.provider_model = optional_text(
            "Provider model", "default: ollama/<imported name>", "360px"
        )
        self.activate_button = w.Button(
            description="Activate", icon="check", button_style="success"
        )
        self.benchmark_button = w.Button(
            description="Benchmark", icon="tachometer", button_style="info"
        )
        self.force = w.Checkbox(value=False, description="force (skip the gate)", indent=False)
        self.create_config = w.Checkbox(
            value=False, description="create the agent config if missing", indent=False
        )
        self.deactivate_button = w.Button(description="Roll back", icon="undo")
        self.chart = w.Image(format="png", layout=w.Layout(width="500px", display="none"))
        self._add_engine_controls()
        self.bench_note = w.HTML()
        #: A few replies per purpose behind the chart's figures (the benchmark's samples).
        self.samples = w.HTML()
        # The policy lives in the state store: the server's watcher runs it, not this panel.
        self.auto = AutoImprovePanel(self.backend, runner=self.runner)
        self.auto_section = w.Accordion(children=[self.auto], titles=("Auto-improve",))
        self._buttons = (self.import_button, self.activate_button, self.benchmark_button)

        self.children = self._layout()
        self.refresh_button.on_click(self.guard("refresh")(lambda _b: self.refresh()))
        self.import_button.on_click(self.guard("import")(lambda _b: self.import_ollama()))
        self.activate_button.on_click(self.guard("activate")(lambda _b: self.activate()))
        self.benchmark_button.on_click(self.guard("benchmark")(lambda _b: self.benchmark()))
        self.deactivate_button.on_click(self.guard("roll back")(lambda _b: self.deactivate()))
        self.pick.observe(self.guard("select")(lambda _c: self._show_chart()), names="value")
        self.guard("load models")(self.refresh)()

    def _layout(self) -> list[w.Widget]:
        return [
            header(self.title),
            self.table,
            w.HBox([self.pick, self.refresh_button]),
            w.HTML("<b>Import into Ollama</b>"),
            w.HBox(
                [
                    self.ollama_name,
                    self.ollama_mode,
                    self.quantization,
                    self.ollama_base,
                    self.ollama_url,
                    self.import_button,
                ],
                layout=w.Layout(flex_flow="row wrap"),
            ),
            w.HTML("<b>Use in the agent</b>"),
            w.HBox(
                [
                    self.provider_model,
                    self.force,
                    self.create_config,
                    self.activate_button,
                    self.deactivate_button,
                    self.benchmark_button,
                ],
                layout=w.Layout(flex_flow="row wrap"),
            ),
            self.status_line,
            self.bench_note,
            self.chart,
            self.samples,
            w.HBox([w.HTML("<b>Try it before activating</b>"), self.chat_button]),
            self.chat_area,
            self.auto_section,
        ]

    def _add_engine_controls(self) -> None:
        """Import mode and quantization, and the chat box (a worker thread streams replies)."""
        self.ollama_mode = w.Dropdown(
            description="Mode",
            options=[("one GGUF model", "model"), ("GGUF LoRA on Base", "adapter")],
            value="model",
            layout=w.Layout(width="230px"),
        )
        self.quantization = w.Dropdown(
            description="Type",
            options=["f16", "q8_0", "f32"],
            value="f16",
            layout=w.Layout(width="150px"),
        )
        self.chat_button = w.Button(description="Chat", icon="comments")
        self.chat_area = w.VBox()
        self.chat: Any = None
        self.chat_button.on_click(self.guard("chat")(lambda _b: self.open_chat()))

    def open_chat(self) -> None:
        """A chat box for the chosen model (in-process mode: the model loads in this kernel)."""
        from .chat import ChatBox

        model_id = self._require()
        service = getattr(self.backend, "service", None)
        if service is None:
            self.set_status("chat runs the model in this kernel: use in-process mode", "error")
            return
        if self.chat is not None:
            self.chat.halt()
        self.chat = ChatBox(model_id, service)
        self.chat_area.children = [self.chat]
        self.set_status(f"chatting with {model_id}", "info")

    # -- listing --------------------------------------------------------------------------
    def refresh(self, *_args: Any) -> None:
        """List the models again (a finished job calls this too)."""
        known = {m.id for m in self.models}
        self.models = self.backend.list_models()
        rows = []
        for m in self.models:
            scores, baseline = benchmark_of(m)
            # one score a line, the base model's in grey: the column stays narrow
            bench = (
                "<br>".join(
                    esc(f"{k[:4]} {scores[k]:.2f}")
                    + (
                        f" <span style='color:#777;font-size:11px'>({baseline[k]:.2f})</span>"
                        if k in baseline
                        else ""
                    )
                    for k in SCORE_KEYS
                    if k in scores
                )
                or "—"
            )
            rows.append(
                [
                    # the active model: a mark before its name (a column of its own is too wide)
                    Raw(f"<b>✓</b> {esc(m.name)}" if m.active else esc(m.name)),
                    short_model(m.base_model),
                    m.backend,
                    fmt_num(m.final_loss),
                    Raw(bench),
                    m.ollama_name or "—",
                    fmt_ms(m.created_at),
                ]
            )
        self.table.value = (
            html_table(
                [
                    "name (✓ active)",
                    "base",
                    "backend",
                    "loss",
                    "benchmark",
                    "Ollama",
                    "created",
                ],
                rows,
                numeric={3},
            )
            if rows
            else "<i>No model yet: a completed training job registers one.</i>"
        )
        options = [(f"{m.name} ({m.id})", m.id) for m in self.models]
        current = self.pick.value
        self.pick.options = options
        ids = [v for _, v in options]
        arrived = known and any(i not in known for i in ids)
        newest = max(self.models, key=lambda m: m.created_at).id if self.models else None
        self.pick.value = current if current in ids and not arrived else newest
        for button in self._buttons:
            button.disabled = not ids
        self._show_chart()
        self.auto.guard("load policy")(self.auto.refresh)()

    def selected_model(self) -> Model | None:
        return next((m for m in self.models if m.id == self.pick.value), None)

    def _require(self) -> str:
        if self.pick.value is None:
            raise LookupError("choose a model first (none is registered yet)")
        return str(self.pick.value)

    def _show_chart(self) -> None:
        """Bars of the chosen model's benchmark; hidden until it has one."""
        model = self.selected_model()
        if model is None:
            self.chart.layout.display = "none"
            self.bench_note.value = ""
            return
        bench = model.benchmark
        last = self.last_result
        if bench is None and isinstance(last, BenchmarkAnswer) and last.model_id == model.id:
            bench = last  # benchmarked just now, before the list shows it
        if bench is not None:
            self.chart.value = plots.scores_png(
                score_map(bench.scores),
                score_map(bench.baseline),
                title=f"Benchmark — {model.name}",
                active=score_map(bench.active) or None,
                intervals=bench.intervals,
            )
            self.chart.layout.display = ""
            self.bench_note.value = ""
            self.samples.value = samples_html(bench.samples)
        else:
            self.chart.layout.display = "none"
            self.samples.value = ""
            self.bench_note.value = (
                f"<i>{model.name} has no benchmark yet: Benchmark scores it and its base "
                "model on held-out replies.</i>"
            )

    # -- actions ------------------------------------------------------------------------
    def _run(
        self, action: str, work: Callable[[], Answer], message: Callable[[Answer], str], busy: str
    ) -> None:
        for button in self._buttons:
            button.disabled = True

        def done(result: Answer) -> None:
            self.last_result = result
            for button in self._buttons:
                button.disabled = False
            self.refresh()
            self.set_status(message(result), "ok")

        self.in_background(action, work, done, busy=busy)

    def after_error(self, action: str) -> None:
        for button in self._buttons:
            button.disabled = self.pick.value is None

    def import_ollama(self) -> None:
        """Convert the chosen model to GGUF and create it in Ollama (loopback URL only)."""
        model_id = self._require()
        body: ImportBody = {}
        if name := self.ollama_name.value.strip():
            body["modelName"] = name
        # Defaults are left out: an agent's own API may not know these fields.
        if self.ollama_mode.value != "model":
            body["mode"] = self.ollama_mode.value
        if self.quantization.value != "f16":
            body["quantization"] = self.quantization.value
        if base := self.ollama_base.value.strip():
            body["baseModel"] = base
        if ollama_url := self.ollama_url.value.strip():
            body["ollamaUrl"] = ollama_url
        self._run(
            "import",
            lambda: self.backend.import_ollama(model_id, body),
            lambda r: f"imported into Ollama as {r.model.ollama_name}",
            "importing into Ollama…",
        )

    def activate(self) -> None:
        """Make the chosen model the agent's model."""
        model_id = self._require()
        body: ActivateBody = {}
        if provider := self.provider_model.value.strip():
            body["providerModel"] = provider
        if self.force.value:
            body["force"] = True
        if self.create_config.value:
            body["create"] = True
        # The Ollama asked whether it lists the model: the one the import went to.
        if ollama_url := self.ollama_url.value.strip():
            body["ollamaUrl"] = ollama_url
        self._run(
            "activate",
            lambda: self.backend.activate_model(model_id, body),
            lambda r: (
                f"activated: the agent now uses {r.active_model}"
                + "".join(f" (warning: {w})" for w in r.warnings or [])
            ),
            "activating…",
        )

    def benchmark(self) -> None:
        """Score the chosen model and its base model (runs in a thread; minutes on CPU)."""
        model_id = self._require()

        def message(r: BenchmarkAnswer) -> str:
            shown = ", ".join(f"{k} {v:.2f}" for k, v in score_map(r.scores).items())
            return f"benchmark done: {shown}"

        self._run(
            "benchmark",
            lambda: self.backend.benchmark_model(model_id, None),
            message,
            "benchmarking (this takes a few minutes on a CPU)…",
        )

    def deactivate(self) -> None:
        """Undo the last activation: the agent config as it was before it."""
        self._run(
            "roll back",
            lambda: self.backend.deactivate_model(),
            lambda r: f"rolled back {r.deactivated_model}: agent config restored ({r.restored})",
            "rolling back…",
        )
