"""ipywidgets panels for notebooks: explore trajectories, build datasets, train, ship models.

Each panel works alone or inside :class:`Dashboard` (tabs), in-process (the service in
the kernel) or remote (``TrainingClient`` to a Jupyter server or a Milady agent)::

    from milady_lab.widgets import Dashboard
    Dashboard()                 # in-process, settings from MILADY_LAB_* variables
    Dashboard(remote=True)      # the Jupyter server this notebook runs in

Buttons never raise into the notebook: errors are shown in the panel's status line.
"""

from __future__ import annotations

from ._backend import LocalData, PanelData, RemoteData, describe_error, make_backend
from .builder import DatasetBuilder
from .dashboard import Dashboard
from .explorer import TrajectoryExplorer
from .launcher import JobLauncher
from .models import ModelManager

__all__ = [
    "Dashboard",
    "DatasetBuilder",
    "JobLauncher",
    "LocalData",
    "ModelManager",
    "PanelData",
    "RemoteData",
    "TrajectoryExplorer",
    "describe_error",
    "make_backend",
]
