"""milady-lab's Jupyter server extension: the ``/api/training/...`` REST routes.

Enabled on install by ``jupyter-config/jupyter_server_config.d/jupyter_server_ext.json``
(or ``jupyter server extension enable --sys-prefix jupyter_server_ext``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("milady-lab")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    """Where Jupyter finds the extension app (imported lazily: listing stays cheap)."""
    from .app import TrainingExtension

    return [{"module": "jupyter_server_ext", "app": TrainingExtension}]


__all__ = ["__version__", "_jupyter_server_extension_points"]
