"""Fixtures for the REST extension tests.

pytest-jupyter's server fixtures (``jp_serverapp``, ``jp_fetch``, ...) are imported
here rather than registered globally, so they and their autouse hooks apply to this
folder only. Servers run with ``allow_unauthenticated_access=False`` and the
extension's settings pointing at a temporary home and a demo trajectory database.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (fixtures and hooks, this folder only)
from tornado.httpclient import HTTPResponse
from traitlets.config import Config

from milady_lab.state import StateStore

from .restkit import decode, make_occupied


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rest-cache")


@pytest.fixture
def lab(tmp_path: Path, demo_db: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """The extension's four settings for one test (``demo_db`` is the suite's shared one)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    home = tmp_path / "milady-home"
    return {
        "home": home,
        "trajectories": demo_db,
        "agent_config": tmp_path / "agent" / "milady.json",
        "cache": shared_cache,
    }


@pytest.fixture
def jp_server_config(lab: dict[str, Path]) -> Config:
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {
                    "jupyter_server_ext": True,
                    "jupyter_server_terminals": False,
                },
                "allow_unauthenticated_access": False,
            },
            "TrainingExtension": {
                **{k: str(v) for k, v in lab.items()},
                "activity_interval": 0.2,
                "event_poll_interval": 0.1,
            },
        }
    )


@pytest.fixture(scope="session")
def demo_count(demo_db: Path) -> int:
    with contextlib.closing(sqlite3.connect(demo_db)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0])


@pytest.fixture
def ext(jp_serverapp: Any) -> Any:
    """The running TrainingExtension."""
    return jp_serverapp.web_app.settings["milady_lab"]


@pytest.fixture
def store(ext: Any) -> StateStore:
    return ext.service.store


Api = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def api(jp_serverapp: Any, http_server_client: Any, jp_base_url: str) -> Api:
    """``await api(method, path, body=..., params=..., headers=..., token=...)`` → (status, body).

    ``path`` goes into the URL as written (already percent-encoded), so tests can send
    hostile ids exactly; ``body`` may be a JSON value or raw bytes.
    """

    async def call(
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        token: str | bool | None = True,
    ) -> tuple[int, Any]:
        response = await fetch_raw(
            method, path, body=body, params=params, headers=headers, token=token
        )
        return response.code, decode(response)

    async def fetch_raw(method, path, *, body=None, params=None, headers=None, token=True,
                        **kwargs) -> HTTPResponse:  # fmt: skip
        headers = dict(headers or {})
        if token is True:
            headers.setdefault("Authorization", f"token {jp_serverapp.identity_provider.token}")
        elif isinstance(token, str):
            headers.setdefault("Authorization", f"token {token}")
        url = f"{jp_base_url}api/training/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        if isinstance(body, bytes):
            data = body
        elif body is None:
            data = b"" if method in ("POST", "PUT", "PATCH") else None
        else:
            data = json.dumps(body).encode()
        return await http_server_client.fetch(
            url, method=method, body=data, headers=headers, raise_error=False,
            allow_nonstandard_methods=True, request_timeout=60, **kwargs,
        )  # fmt: skip

    call.raw = fetch_raw  # type: ignore[attr-defined]
    return call


# -- jobs without training --
@pytest.fixture
def occupied(store: StateStore) -> Iterator[dict[str, Any]]:
    """A "running" job backed by a sleeping process: every new job is queued behind it,
    so tests exercise the job routes without training anything."""
    with make_occupied(store) as rec:
        yield rec
