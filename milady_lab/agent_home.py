"""Where a Milady agent keeps its trajectories, found the way the agent finds its database.

Read from the agent's code (@elizaos/agent 2.x, plugin-sql), in order:

* state dir: ``MILADY_STATE_DIR``, else ``ELIZA_STATE_DIR``, else ``~/.milady``; config
  ``<state>/milady.json`` (milady-lab's ``MILADY_LAB_AGENT_CONFIG`` overrides the path);
* ``database.provider == "postgres"``: ``database.postgres.connectionString``, else its
  host/port/user/password/database/ssl fields, else ``POSTGRES_URL``; with no provider,
  a ``POSTGRES_URL`` in the environment also selects PostgreSQL (plugin-sql's rule);
* otherwise PGlite (every desktop install): ``database.pglite.dataDir``, else
  ``PGLITE_DATA_DIR``, else ``<workspace>/.eliza/.elizadb``, the workspace being
  ``agents.defaults.workspace``, else ``<state>/workspace``;
* the archive folder: ``<workspace>/trajectory-archive`` (``ELIZA_WORKSPACE_DIR`` or
  ``ELIZA_WORKSPACE_ROOT`` name the workspace when set, as the agent's archiver reads
  them); ``MILADY_LAB_ARCHIVE`` overrides it.

``MILADY_LAB_TRAJECTORIES``, when set, wins over all of this (the archive folder is
still found as above). ``Location.how`` says which rule applied, for ``status``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from .api.schema import JsonObject

ENV_ARCHIVE = "MILADY_LAB_ARCHIVE"


@dataclass(frozen=True)
class Location:
    """Where the trajectories are (``spec``: what ``open_source`` takes) and why."""

    spec: str | None  # None: no agent found
    how: str
    archive: Path | None


def state_dir(env: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    raw = env.get("MILADY_STATE_DIR") or env.get("ELIZA_STATE_DIR")
    return Path(raw).expanduser() if raw else Path.home() / ".milady"


def default_config(env: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    return state_dir(env) / "milady.json"


def read_config(path: Path) -> JsonObject | None:
    """The agent's config, or None when there is none. Milady writes plain JSON; JSON5
    (comments, trailing commas), which its loader also accepts, is read with json5."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ValueError(f"cannot read the agent config {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        import json5

        try:
            doc = json5.loads(text)
        except ValueError as exc:
            raise ValueError(f"the agent config {path} is not valid JSON: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def _dig(doc: JsonObject, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)  # type: ignore[assignment]
    return doc


def _postgres_url(pg: Any) -> str | None:
    if not isinstance(pg, dict):
        return None
    if isinstance(pg.get("connectionString"), str) and pg["connectionString"].strip():
        return pg["connectionString"].strip()
    if not pg.get("host"):
        return None
    user = quote(str(pg.get("user") or "postgres"), safe="")
    password = f":{quote(str(pg['password']), safe='')}" if pg.get("password") else ""
    port = f":{int(pg['port'])}" if pg.get("port") else ""
    query = urlencode({"sslmode": "require"}) if pg.get("ssl") else ""
    url = f"postgresql://{user}{password}@{pg['host']}{port}/{pg.get('database') or 'postgres'}"
    return f"{url}?{query}" if query else url


def workspace(config: JsonObject, env: os._Environ[str] | dict[str, str]) -> Path:
    ws = _dig(config, "agents", "defaults", "workspace")
    if isinstance(ws, str) and ws.strip():
        return Path(ws).expanduser()
    return state_dir(env) / "workspace"


def locate(
    config_path: Path | None = None,
    explicit: str | None = None,
    env: os._Environ[str] | dict[str, str] = os.environ,
) -> Location:
    """The agent's trajectory store (module docstring for the rules)."""
    path = config_path or default_config(env)
    config = read_config(path)
    ws = workspace(config or {}, env)
    archive_root = env.get("ELIZA_WORKSPACE_DIR") or env.get("ELIZA_WORKSPACE_ROOT")
    archive = Path(archive_root).expanduser() if archive_root else ws
    archive_dir = (
        Path(env[ENV_ARCHIVE]).expanduser()
        if env.get(ENV_ARCHIVE)
        else archive / "trajectory-archive"
    )
    spec, how = _database(path, config, explicit, env, ws)
    return Location(spec, how, archive_dir)


def _database(
    path: Path,
    config: JsonObject | None,
    explicit: str | None,
    env: os._Environ[str] | dict[str, str],
    ws: Path,
) -> tuple[str | None, str]:
    """(source spec, which rule found it); spec None when no agent was found."""
    if explicit:
        return explicit, "MILADY_LAB_TRAJECTORIES"
    if config is None and not env.get("POSTGRES_URL") and not env.get("PGLITE_DATA_DIR"):
        return None, f"no agent config at {path}"
    db = _dig(config or {}, "database")
    db = db if isinstance(db, dict) else {}
    provider = str(db.get("provider") or "").lower()
    if provider == "postgres":
        url = _postgres_url(db.get("postgres")) or env.get("POSTGRES_URL")
        if not url:
            return None, f"database.provider in {path} is postgres, but no connection is set"
        return url, f"database.postgres in {path}"
    if not provider and env.get("POSTGRES_URL"):
        return env["POSTGRES_URL"], "POSTGRES_URL (the agent's environment)"
    data_dir = _dig(db, "pglite", "dataDir")
    if isinstance(data_dir, str) and data_dir.strip():
        return f"pglite:{Path(data_dir).expanduser()}", f"database.pglite.dataDir in {path}"
    if env.get("PGLITE_DATA_DIR"):
        return f"pglite:{Path(env['PGLITE_DATA_DIR']).expanduser()}", "PGLITE_DATA_DIR"
    return f"pglite:{ws / '.eliza' / '.elizadb'}", f"the agent's default PGlite folder ({path})"
