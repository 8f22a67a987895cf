"""Learning-rate schedules (``lrSchedule``), the same numbers on every backend.

``constant``, ``cosine`` and ``linear`` all start with ``warmup`` steps of linear
warmup; the two decays end at ``FLOOR`` × the peak on the last step rather than at 0,
so the last steps still learn something (mlx-lm and transformers decay to 0 unless
told otherwise; a 10 % floor is what this project trained with before these options
existed, and a resumed run must keep its schedule). Pure Python: the mlx backend
builds the same shape in mx ops (``backends/mlx.py``).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")
DEFAULT_SCHEDULE = "cosine"
#: What the decaying schedules end at, as a share of the peak learning rate.
FLOOR = 0.1


def default_warmup(total: int) -> int:
    """Warmup steps when the user gives none: 5 % of the run, between 1 and 100."""
    return max(1, min(100, total // 20))


def decay_span(total: int, warmup: int) -> int:
    """Steps over which a decay runs from the peak to the floor (at least 1)."""
    return max(1, total - warmup - 1)


def lr_factor(step: int, total: int, warmup: int, schedule: str = DEFAULT_SCHEDULE) -> float:
    """The learning rate of 0-based optimizer step ``step`` as a share of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / decay_span(total, warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - FLOOR) * progress
    if schedule == "cosine":
        return FLOOR + (1.0 - FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")
