"""AutoImprovePanel: the auto-improve policy and the decisions its rounds took.

The watcher itself runs in the Jupyter server (or ``milady-lab auto watch``); this panel
only reads and sets the stored policy, so closing the notebook never stops the loop.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ..api.schema import AutoAnswer
from ._bodies import AutoPolicy
from ._fields import STYLE, count, wrap_row
from ._panel import Panel, fmt_ms, header, html_table

#: Dropdown label for "let the service choose" (the policy stores null).
DEFAULT = "(default)"


class AutoImprovePanel(Panel):
    """Turn auto-improve on or off, set when it trains and whether it activates."""

    title = "Auto-improve"

    def __init__(self, backend: Any = None, **kwargs: Any) -> None:
        super().__init__(backend, **kwargs)
        self.shown: AutoAnswer | None = None
        self.enabled = w.Checkbox(value=False, description="enabled", indent=False)
        self.min_new = count("New trajectories ≥", 100, 1, 10**9, "220px")
        self.cooldown = w.BoundedFloatText(
            value=12.0, min=0, max=8760, description="Cooldown (h)", style=STYLE,
            layout=w.Layout(width="170px"),
        )  # fmt: skip
        self.iterations = count("Iterations (0 = job default)", 0, 0, 1_000_000, "250px")
        self.backend_pick = w.Dropdown(
            options=[DEFAULT, "cpu", "cuda", "mlx"], value=DEFAULT, description="Backend",
            style=STYLE, layout=w.Layout(width="190px"),
        )  # fmt: skip
        self.model = w.Text(
            description="Base model", placeholder="default base model", style=STYLE,
            layout=w.Layout(width="300px"),
        )  # fmt: skip
        self.activate = w.Dropdown(
            options=[("never", "never"), ("if better (the gate passes)", "if-better")],
            value="never", description="Activate", style=STYLE, layout=w.Layout(width="300px"),
        )  # fmt: skip
        self.save_button = w.Button(description="Save policy", icon="save", button_style="primary")
        self.reload_button = w.Button(description="Reload", icon="refresh")
        self.state_line = w.HTML()
        self.decisions = w.HTML(layout=w.Layout(width="100%"))
        self.children = [
            header(self.title),
            wrap_row([self.enabled, self.min_new, self.cooldown, self.activate]),
            wrap_row([self.iterations, self.backend_pick, self.model]),
            w.HBox([self.save_button, self.reload_button]),
            self.status_line,
            self.state_line,
            self.decisions,
        ]
        self.save_button.on_click(self.guard("save policy")(lambda _b: self.save()))
        self.reload_button.on_click(self.guard("reload")(lambda _b: self.refresh()))
        self.guard("load policy")(self.refresh)()

    def policy_body(self) -> AutoPolicy:
        """The ``PUT /auto`` body the fields describe (null: the service's default)."""
        return {
            "enabled": bool(self.enabled.value),
            "minNewTrajectories": int(self.min_new.value),
            "cooldownHours": float(self.cooldown.value),
            "iterations": int(self.iterations.value) or None,
            "backend": None if self.backend_pick.value == DEFAULT else self.backend_pick.value,
            "model": self.model.value.strip() or None,
            "activate": self.activate.value,
        }

    def save(self) -> None:
        """Store the policy; the next check of the watcher uses it."""
        body = self.policy_body()
        self.in_background(
            "save policy",
            lambda: self.backend.set_auto(body),
            lambda shown: (
                self.show(shown),
                self.set_status(f"policy saved: {'on' if body['enabled'] else 'off'}", "ok"),
            ),
            busy="saving…",
        )

    def refresh(self) -> None:
        """Read the stored policy, the round's state and the recent decisions."""
        self.show(self.backend.get_auto())

    def show(self, shown: AutoAnswer) -> None:
        self.shown = shown
        policy = shown.policy  # the stored policy's JSON (every field of api.schema.AutoPolicy)
        with self.hold_sync():
            self.enabled.value = bool(policy.get("enabled"))
            self.min_new.value = int(policy.get("minNewTrajectories") or 100)
            self.cooldown.value = float(policy.get("cooldownHours") or 0.0)
            self.iterations.value = int(policy.get("iterations") or 0)
            self.backend_pick.value = policy.get("backend") or DEFAULT
            self.model.value = policy.get("model") or ""
            self.activate.value = policy.get("activate") or "never"
        self.state_line.value = _state_html(shown)
        events = list(reversed(shown.events))
        self.decisions.value = (
            html_table(
                ["when", "decision", "reason"],
                [[fmt_ms(e.ts), e.kind, e.message] for e in events],
            )
            if events
            else "<i>No decision yet: a watcher checks the source every few minutes.</i>"
        )


def _state_html(shown: AutoAnswer) -> str:
    """One line: the last decision and who holds the lease (a round in progress)."""
    last = shown.state.get("lastDecision") or {}
    lease = shown.lease
    parts = []
    if last:
        parts.append(f"last: <b>{last.get('kind')}</b> at {fmt_ms(last.get('at'))}")
    if lease:
        holder = lease.get("owner")
        parts.append(f"round running ({holder})")
    return " · ".join(parts)
