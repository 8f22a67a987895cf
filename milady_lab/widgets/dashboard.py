"""Dashboard: the four panels in tabs, sharing one backend and one runner."""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from ._async import UiRunner
from ._backend import PanelData, describe_error, make_backend
from ._panel import CSS, esc
from .builder import DatasetBuilder
from .explorer import TrajectoryExplorer
from .launcher import JobLauncher
from .models import ModelManager


class Dashboard(w.VBox):
    """Trajectories, datasets, training and models in one widget.

    ``Dashboard()`` works in-process with ``Settings.from_env()``;
    ``Dashboard(remote=True)`` talks to the Jupyter server this notebook runs in and
    ``Dashboard(client=TrainingClient(url, token))`` to any server with the routes.
    """

    TITLES = ("Trajectories", "Datasets", "Training", "Models")

    def __init__(
        self,
        backend: PanelData | None = None,
        *,
        service: Any = None,
        client: Any = None,
        remote: bool = False,
        settings: Any = None,
        selected: int = 0,
        **kwargs: Any,
    ) -> None:
        # The backend first: discovering a server may import ipykernel, which changes the
        # comm manager; widgets opened before that could not be closed cleanly afterwards.
        backend_ = make_backend(
            backend, service=service, client=client, remote=remote, settings=settings
        )
        super().__init__(**kwargs)
        self._owns_backend = backend is None
        self.backend = backend_
        self.runner = UiRunner()
        shared = {"runner": self.runner}
        self.explorer = TrajectoryExplorer(self.backend, **shared)
        self.builder = DatasetBuilder(self.backend, **shared)
        self.launcher = JobLauncher(self.backend, **shared)
        self.models = ModelManager(self.backend, **shared)
        self.builder.on_built.append(lambda rec: self.launcher.refresh_datasets(select=rec.id))
        self.launcher.on_job_final.append(lambda _job: self.models.refresh())
        # Explore, then build from exactly what the filters show.
        self.use_filters_button = w.Button(
            description="Build a dataset from these filters",
            icon="arrow-right",
            layout=w.Layout(width="300px"),
        )
        self.use_filters_button.on_click(
            self.explorer.guard("use filters")(lambda _b: self.build_from_explorer())
        )
        bar = self.explorer.filter_bar
        bar.children = (*bar.children, self.use_filters_button)
        self.tabs = w.Tab(
            children=[self.explorer, self.builder, self.launcher, self.models],
            titles=self.TITLES,
            selected_index=selected,
        )
        self.banner = w.HTML(self._banner())
        self.children = [self.banner, self.tabs]
        self.add_class("milady-dashboard")

    def build_from_explorer(self) -> None:
        """Copy the explorer's filters into the dataset builder and show it."""
        self.builder.set_filters(self.explorer.filter_body())
        self.tabs.selected_index = self.TITLES.index("Datasets")

    @property
    def panels(self) -> tuple[w.Widget, ...]:
        return (self.explorer, self.builder, self.launcher, self.models)

    def _banner(self) -> str:
        try:
            st = self.backend.status()
            bits = [
                f"<b>milady-lab</b> · {esc(self.backend.mode)}",
                f"training backend <b>{esc(st.backend)}</b>",
                f"trajectories: {esc(st.trajectory_source or '?')}"
                + _found_by(st.trajectory_source_found_by),
                f"home: {esc(st.home or '?')}",
            ]
            if not st.runtime_available:
                reason = esc(st.runtime_reason or "unavailable")
                bits.append(f"<span style='color:#b71c1c'>{reason}</span>")
        except Exception as exc:  # the banner is informative only
            bits = [
                f"<b>milady-lab</b> · {esc(self.backend.mode)}",
                f"<span style='color:#b71c1c'>status: {esc(describe_error(exc))}</span>",
            ]
        return f"{CSS}<div style='margin:2px 0 6px 0'>{' · '.join(bits)}</div>"

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for background work and apply results (plain Python and tests)."""
        self.runner.wait(timeout)

    def close(self) -> None:
        """Stop every panel's live updates and release the shared backend."""
        for panel in self.panels:
            panel.close()
        self.runner.close()
        if self._owns_backend:
            self.backend.close()
        self.tabs.close()
        self.banner.close()
        super().close()


def _found_by(how: object) -> str:
    """How the source was found, small and grey after it (nothing when status omits it)."""
    return f" <span style='color:#666'>({esc(how)})</span>" if how else ""
