"""Settings shared by every way in (environment, CLI flags, Jupyter traitlets).

One name per setting everywhere: ``MILADY_LAB_HOME``, ``MILADY_LAB_TRAJECTORIES``,
``MILADY_LAB_AGENT_CONFIG`` and ``MILADY_LAB_CACHE``. Explicit values win over the
environment, which wins over the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import agent_home as locate

ENV_HOME = "MILADY_LAB_HOME"
ENV_TRAJECTORIES = "MILADY_LAB_TRAJECTORIES"
ENV_AGENT_CONFIG = "MILADY_LAB_AGENT_CONFIG"
ENV_CACHE = "MILADY_LAB_CACHE"
ENV_AGENT_TOKEN = "MILADY_LAB_AGENT_TOKEN"


@dataclass(frozen=True)
class Settings:
    """Where milady-lab keeps its state and where it reads the agent's data."""

    home: Path
    trajectories: str
    agent_config: Path
    cache: Path
    # Bearer token for a ``milady+http://`` trajectory source; never logged or stored.
    agent_token: str | None = field(default=None, repr=False)
    # How ``trajectories`` was found (for status), and the agent's archive folder.
    trajectories_how: str = "given"
    archive: Path | None = None

    @classmethod
    def from_env(
        cls,
        *,
        home: str | os.PathLike[str] | None = None,
        trajectories: str | os.PathLike[str] | None = None,
        agent_config: str | os.PathLike[str] | None = None,
        cache: str | os.PathLike[str] | None = None,
        agent_token: str | None = None,
    ) -> Settings:
        env = os.environ
        home_path = Path(home or env.get(ENV_HOME) or Path.home() / ".milady-lab").expanduser()
        agent_cfg = Path(
            agent_config or env.get(ENV_AGENT_CONFIG) or locate.default_config(env)
        ).expanduser()
        explicit = trajectories or env.get(ENV_TRAJECTORIES)
        try:
            found = locate.locate(agent_cfg, str(explicit) if explicit else None, env)
        except ValueError as exc:  # an unreadable agent config: say so, read the default
            found = locate.Location(None, str(exc), None)
        traj_s = found.spec or str(home_path / "trajectories.sqlite")
        how = found.how if found.spec else f"{found.how}; reading {traj_s}"
        if "://" not in traj_s and not traj_s.startswith(("pglite:", "sqlite:")):
            traj_s = str(Path(traj_s).expanduser())
        cache_path = cache or env.get(ENV_CACHE) or Path.home() / ".cache" / "milady-lab"
        return cls(
            home=home_path,
            trajectories=traj_s,
            agent_config=agent_cfg,
            cache=Path(cache_path).expanduser(),
            agent_token=agent_token or env.get(ENV_AGENT_TOKEN) or None,
            trajectories_how=how,
            archive=found.archive,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def state_db(self) -> Path:
        return self.home / "state.sqlite"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for worker processes."""
        env = {
            ENV_HOME: str(self.home),
            ENV_TRAJECTORIES: self.trajectories,
            ENV_AGENT_CONFIG: str(self.agent_config),
            ENV_CACHE: str(self.cache),
        }
        if self.agent_token:
            env[ENV_AGENT_TOKEN] = self.agent_token
        return env
