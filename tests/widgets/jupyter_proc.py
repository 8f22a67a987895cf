"""Start a real Jupyter server (or JupyterLab) in a subprocess on a free loopback port.

A subprocess, not pytest-jupyter's in-process ``jp_serverapp``: the widgets call the
server with a synchronous client, which would deadlock against a server sharing the
test's own event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterProcess:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def isolated_env(base: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """Jupyter config, runtime, workspaces and settings under ``base``: nothing from $HOME."""
    env = dict(os.environ)
    for name in ("config", "runtime", "workspaces", "settings"):
        (base / name).mkdir(parents=True, exist_ok=True)
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    # No news or update checks: nothing to reach, and no toast over the screenshots.
    notif = base / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"})
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def run_jupyter(
    app: str,
    root: Path,
    base: Path,
    env: Mapping[str, str],
    *,
    timeout: float = 120.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[JupyterProcess]:
    """``jupyter server`` or ``jupyter lab`` with a token; stopped (whole group) on exit."""
    token = secrets.token_hex(16)
    port = free_port()
    base.mkdir(parents=True, exist_ok=True)
    log = base / f"jupyter-{app}.log"
    args = [
        sys.executable,
        "-m",
        "jupyter",
        app,
        "--no-browser",
        f"--IdentityProvider.token={token}",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_unauthenticated_access=False",
        # milady-lab's REST extension, whether or not pip installed its config file
        "--ServerApp.jpserver_extensions",
        "jupyter_server_ext=True",
        *extra_args,
    ]
    if os.geteuid() == 0:  # containers and CI run as root
        args.append("--allow-root")
    if app == "lab":
        args.append("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    fh = log.open("wb")
    proc = subprocess.Popen(
        args,
        cwd=root,
        env=isolated_env(base, env),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    jp = JupyterProcess(url, token, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited early:\n{jp.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(
                    f"{url}/api/status", params={"token": token}, timeout=2, trust_env=False
                )
                if r.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyter {app} did not answer in {timeout:.0f} s:\n{jp.log_tail()}"
                )
            time.sleep(0.3)
        yield jp
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        fh.close()
