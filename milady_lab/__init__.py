"""milady-lab: turn an agent's trajectories into a better model for it, from Jupyter.

The Python API is the service every other way in uses::

    from milady_lab import TrainingService
    svc = TrainingService()            # settings from MILADY_LAB_* environment variables
    frame = svc.trajectories_frame().collect()
    svc.build_dataset({"minLlmCallsPerTrajectory": 2})
"""

from __future__ import annotations

from .config import Settings
from .errors import ConflictError, InputError, MiladyLabError, NotFoundError, UpstreamError
from .service import TrainingService

__all__ = [
    "ConflictError",
    "InputError",
    "MiladyLabError",
    "NotFoundError",
    "Settings",
    "TrainingService",
    "UpstreamError",
]
__version__ = "0.1.0"
