"""The extension app: settings as traitlets, one ``TrainingService``, the routes.

The service is synchronous (SQLite, file work, process control), so every call runs
in one of two thread pools: ``read_pool`` for quick reads and ``work_pool`` for the
long requests (job starts, cancels, imports, benchmarks), so a long one never starves
``GET /status`` of a thread. Dataset builds, the one CPU-heavy request, run in a
worker process (``builds.py``) so they do not hold the server's GIL either.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Float, Integer, Unicode, default

from milady_lab.config import Settings
from milady_lab.errors import WorkerError

from . import builds
from .sse import EventHub

if TYPE_CHECKING:
    from milady_lab.api.schema import (
        AgentExportAnswer,
        AgentExportRequest,
        BuildDatasetRequest,
        DatasetAnswer,
        DatasetPreview,
    )

#: Key under ``last_activity_times`` (the server's hook for extension activity).
ACTIVITY_KEY = "milady_lab"


class TrainingExtension(ExtensionApp):
    """Serves milady-lab's ``/api/training/...`` routes inside a Jupyter server."""

    name = "milady_lab"
    description = "milady-lab: fine-tune an agent's model from its trajectories"
    load_other_extensions = True

    home = Unicode(help="State folder (MILADY_LAB_HOME).").tag(config=True)
    trajectories = Unicode(
        help="Trajectory source: SQLite path, postgresql:// URL, milady+http:// URL or export "
        "file (MILADY_LAB_TRAJECTORIES)."
    ).tag(config=True)
    agent_config = Unicode(help="The agent's config file (MILADY_LAB_AGENT_CONFIG).").tag(
        config=True
    )
    cache = Unicode(help="Converted base models (MILADY_LAB_CACHE).").tag(config=True)
    reconcile_on_start = Bool(
        True, help="Follow or fail jobs an earlier process started, and start queued ones."
    ).tag(config=True)
    read_threads = Integer(8, help="Threads for quick reads.").tag(config=True)
    work_threads = Integer(4, help="Threads for long requests (builds, benchmarks).").tag(
        config=True
    )
    max_body_bytes = Integer(10 * 1024 * 1024, help="Largest request body (413 above).").tag(
        config=True
    )
    event_poll_interval = Float(0.25, help="Seconds between event-log polls for SSE.").tag(
        config=True
    )
    build_in_subprocess = Bool(
        True, help="Run dataset builds in a worker process (keeps the server's GIL free)."
    ).tag(config=True)
    auto_watch = Bool(
        True, help="Run the auto-improve watcher (it acts only when the policy is enabled)."
    ).tag(config=True)
    auto_interval = Float(300.0, help="Seconds between the auto-improve watcher's checks.").tag(
        config=True
    )
    activity_interval = Float(
        5.0, help="Seconds between checks for live jobs (activity, dead workers, queue)."
    ).tag(config=True)

    # Defaults come from the environment, like every other way in (CLI, Python API).
    @default("home")
    def _default_home(self) -> str:
        return str(Settings.from_env().home)

    @default("trajectories")
    def _default_trajectories(self) -> str:
        return Settings.from_env(home=self.home).trajectories

    @default("agent_config")
    def _default_agent_config(self) -> str:
        return str(Settings.from_env().agent_config)

    @default("cache")
    def _default_cache(self) -> str:
        return str(Settings.from_env().cache)

    # -- lifecycle ------------------------------------------------------------------------
    def milady_settings(self) -> Settings:
        return Settings.from_env(
            home=self.home,
            trajectories=self.trajectories,
            agent_config=self.agent_config,
            cache=self.cache,
        )

    def initialize_settings(self) -> None:
        from milady_lab.service import TrainingService

        # Reconciling is a few indexed queries and process checks: fine before serving.
        self.service = TrainingService(self.milady_settings(), reconcile=self.reconcile_on_start)
        self.read_pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="milady-read")
        self.work_pool = ThreadPoolExecutor(self.work_threads, thread_name_prefix="milady-work")
        self.event_hub = EventHub(self.service, self.read_pool, self.event_poll_interval)
        self._build_pools: dict[str, ProcessPoolExecutor] = {}
        self.live_jobs: list[dict[str, str]] = []
        self._activity_running = False
        self._activity_timer = PeriodicCallback(
            self._check_activity, max(0.05, self.activity_interval) * 1000
        )
        self._activity_timer.start()
        # Auto-improve runs in its own thread, never on the IOLoop; first look after a minute.
        self.auto_watcher = None
        if self.auto_watch:
            from milady_lab.models.auto import AutoWatcher

            self.auto_watcher = AutoWatcher(
                self.service, self.auto_interval, first_delay_s=min(60.0, self.auto_interval)
            ).start()
        # Warm the status path (backend probing imports torch) off the loop.
        self.read_pool.submit(self._warm_up)
        self.log.info("milady-lab: state in %s", self.service.settings.home)

    def initialize_handlers(self) -> None:
        from .handlers import route_table

        self.handlers.extend(route_table())

    def _warm_up(self) -> None:
        with contextlib.suppress(Exception):
            self.service.status()
        self._refresh_live_jobs()

    async def stop_extension(self) -> None:
        """Stop polling and end event streams; running jobs keep training on their own."""
        self._activity_timer.stop()
        if self.auto_watcher is not None:
            self.auto_watcher.stop(timeout=0)
        self.event_hub.close()
        await asyncio.sleep(0)
        self.read_pool.shutdown(wait=False, cancel_futures=True)
        self.work_pool.shutdown(wait=False, cancel_futures=True)
        for pool in self._build_pools.values():
            builds.stop_pool(pool)
        self._build_pools.clear()

    # -- dataset builds ---------------------------------------------------------------------
    async def build_dataset(self, body: BuildDatasetRequest | None) -> DatasetAnswer:
        """``TrainingService.build_dataset`` in the build process (or a thread)."""
        return await self._in_build_process("build", body)

    async def preview_dataset(self, body: BuildDatasetRequest | None) -> DatasetPreview:
        """``TrainingService.preview_dataset`` in the preview process (or a thread)."""
        return await self._in_build_process("preview", body)

    async def export_trajectories(self, body: AgentExportRequest | None) -> AgentExportAnswer:
        """The agent's trajectory export: its body checked, the dataset built in the build
        process, its examples written as one file (``TrainingService.export_trajectories``)."""
        loop = asyncio.get_running_loop()
        request = self.service.export_request(body)  # microseconds: a 400 before any work
        dataset = (await self.build_dataset(request.build)).dataset
        write = self.service.write_export
        return await loop.run_in_executor(self.work_pool, write, dataset, request.output_path)

    async def _in_build_process(self, kind: str, body: BuildDatasetRequest | None) -> Any:
        local = {"build": self.service.build_dataset, "preview": self.service.preview_dataset}
        remote = {"build": builds.build_dataset, "preview": builds.preview_dataset}
        loop = asyncio.get_running_loop()
        if not self.build_in_subprocess:
            return await loop.run_in_executor(self.work_pool, local[kind], body)
        pool = self._build_pools.get(kind)
        if pool is None:
            pool = self._build_pools[kind] = builds.new_pool(self.service.settings)
        try:
            return await loop.run_in_executor(pool, remote[kind], body)
        except BrokenProcessPool:
            self._build_pools.pop(kind, None)
            raise WorkerError(
                f"the dataset {kind} process ended unexpectedly (out of memory?); "
                "no dataset was written"
            ) from None

    # -- activity ---------------------------------------------------------------------------
    def current_activity(self) -> list[dict[str, str]] | None:
        """Live (queued or running) jobs: an idle-culling server must not stop under them."""
        return list(self.live_jobs) or None

    def _refresh_live_jobs(self) -> list[dict[str, str]]:
        """Runs in a pool thread: repairs dead workers, starts queued jobs, lists live ones."""
        return self.service.live_jobs()

    async def _check_activity(self) -> None:
        if self._activity_running:
            return
        self._activity_running = True
        try:
            loop = asyncio.get_running_loop()
            live = await loop.run_in_executor(self.read_pool, self._refresh_live_jobs)
        except Exception:  # never let a transient DB error kill the timer
            self.log.warning("milady-lab: checking live jobs failed", exc_info=True)
            return
        finally:
            self._activity_running = False
        # Published and touched in one loop step: no reader sees live jobs without activity.
        self.live_jobs = live
        if live:
            self.touch_activity()

    def touch_activity(self) -> None:
        """Count now as server activity (``/api/status`` last_activity, idle culling)."""
        from jupyter_server._tz import utcnow

        settings = self.serverapp.web_app.settings if self.serverapp else self.settings
        settings.setdefault("last_activity_times", {})[ACTIVITY_KEY] = utcnow()

    # -- helpers for handlers ----------------------------------------------------------------
    def api_url(self, *parts: str) -> str:
        assert self.serverapp is not None
        return url_path_join(self.serverapp.base_url, "api", "training", *parts)
