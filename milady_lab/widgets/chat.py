"""A chat box: try a fine-tuned model before activating it.

Generation runs in a worker thread (llama.cpp when installed, else torch: see
``milady_lab.models.evaluation.chat``); the reply is streamed into the panel as it comes and Stop
ends it between two tokens, so the kernel stays free for other cells meanwhile.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as w


class ChatBox(w.VBox):
    """Talk to one registered model: ``ChatBox(model_id)`` (in-process service)."""

    def __init__(
        self,
        model_id: str,
        service: Any = None,
        *,
        engine: str = "auto",
        max_tokens: int = 256,
        **kwargs: Any,
    ) -> None:
        from ..service import TrainingService

        self.service = service or TrainingService(reconcile=False)
        self.chat_model = model_id
        self.engine = engine
        self.max_tokens = max_tokens
        self.session: Any = None
        self.thread: threading.Thread | None = None
        self.transcript = w.HTML(layout=w.Layout(width="100%"))
        self.message = w.Text(
            placeholder="say something to the model", layout=w.Layout(width="70%")
        )
        self.send = w.Button(description="Send", icon="paper-plane", button_style="primary")
        self.stop = w.Button(description="Stop", icon="stop", disabled=True)
        self.status = w.HTML()
        self.turns: list[tuple[str, str]] = []
        self.send.on_click(lambda _: self.submit())
        self.message.on_submit(lambda _: self.submit())
        self.stop.on_click(lambda _: self.halt())
        super().__init__(
            [self.transcript, w.HBox([self.message, self.send, self.stop]), self.status], **kwargs
        )

    def submit(self, text: str | None = None) -> None:
        """Send ``text`` (or the input box) and stream the reply in a worker thread."""
        text = self.message.value if text is None else text
        if not text.strip() or (self.thread is not None and self.thread.is_alive()):
            return
        self.message.value = ""
        self.turns.append(("you", text))
        self.turns.append(("model", ""))
        self.send.disabled, self.stop.disabled = True, False
        self._render()
        self.thread = threading.Thread(target=self._generate, args=(text,), daemon=True)
        self.thread.start()

    def halt(self) -> None:
        if self.session is not None:
            self.session.stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current reply is done (tests, scripts)."""
        if self.thread is not None:
            self.thread.join(timeout)

    def _generate(self, text: str) -> None:
        try:
            if self.session is None:
                self.status.value = "loading the model…"
                self.session = self.service.chat_session(
                    self.chat_model, engine=self.engine, max_tokens=self.max_tokens
                )
            self.status.value = f"generating through {self.session.engine}…"
            for piece in self.session.stream(text):
                self.turns[-1] = ("model", self.turns[-1][1] + piece)
                self._render()
            stopped = self.session.stop.is_set()
            self.status.value = "stopped" if stopped else f"done ({self.session.engine})"
        except Exception as exc:  # shown in the panel, never raised into the notebook
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.status.value = f"<span style='color:#b71c1c'>{html.escape(str(message))}</span>"
        finally:
            self.send.disabled, self.stop.disabled = False, True

    def _render(self) -> None:
        rows = "".join(
            f"<div><b>{who}:</b> <span style='white-space:pre-wrap'>{html.escape(said)}</span>"
            "</div>"
            for who, said in self.turns
        )
        self.transcript.value = f"<div class='milady-chat'>{rows}</div>"
