"""The best checkpoint and early stopping, decided from the validation losses.

Every evaluation goes through ``BestTracker.update``: a loss lower than every earlier
one is an improvement (the backend then saves the adapter as the best one); after
``patience`` evaluations in a row without one the run stops early and completes, with
the best adapter registered. The backends own the saving, this module the decision.
"""

from __future__ import annotations

from dataclasses import dataclass


class EarlyStop(Exception):
    """Raised inside a backend's loop to end it early; the run still completes."""


@dataclass
class BestTracker:
    """Lowest validation loss so far, and evaluations since it (``patience`` None: never stop)."""

    patience: int | None = None
    best_iteration: int | None = None
    best_val_loss: float | None = None
    since_best: int = 0

    def update(self, iteration: int, val_loss: float) -> bool:
        """Record one evaluation; True when it is the best so far."""
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_iteration, self.best_val_loss, self.since_best = iteration, val_loss, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience

    def reason(self) -> str:
        """Why the run stopped, for the job record."""
        return (
            f"valLoss did not improve for {self.since_best} evaluations (earlyStoppingPatience="
            f"{self.patience}); best {self.best_val_loss:.4f} at iteration {self.best_iteration}"
        )
