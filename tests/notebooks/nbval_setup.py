"""Set-up for the nbval run of the tutorials, a pytest plugin loaded by name::

    PYTHONPATH=tests/notebooks pytest -p nbval_setup --nbval-lax notebooks/

(``make test`` does this). It lives here, not as ``notebooks/conftest.py``, so the
notebook browser shows only the tutorials; it is not named ``conftest.py`` so the main
``pytest tests`` run does not load it.

nbval runs each notebook in a fresh kernel that inherits this process's environment,
and its cells are not ordinary test functions (they take no fixtures). So the set-up
is done in hooks, before any kernel starts:

* ``pytest_configure``: a throw-away ``MILADY_LAB_HOME`` holding demo trajectories
  (agent-shaped, 400, seed 7: the same data ``make lab`` gives), a scratch agent config, a private
  Jupyter runtime dir, and a shared ``MILADY_LAB_CACHE`` (default
  ``~/.cache/milady-lab``) so the converted base model is reused between runs.
* ``pytest_collection_modifyitems``: a per-cell timeout that fits a training run.
* ``pytest_collection_finish``: when the REST tutorial is among the collected items, a
  real ``jupyter server`` with the extension, on a free loopback port with a token. It
  writes its runtime file into the private runtime dir, so the notebook finds it with
  ``list_running_servers()`` exactly as a user's notebook would; its URL and token are
  also exported as ``MILADY_LAB_SERVER_URL`` / ``MILADY_LAB_SERVER_TOKEN``.
* ``pytest_unconfigure``: the server is stopped and the temp folder removed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

#: The tutorials: the Jupyter server started for the REST tutorial serves this folder.
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
REST_NOTEBOOK = "05-rest-api.ipynb"
DEMO_COUNT, DEMO_SEED = 400, 7

_state: dict[str, object] = {}


def pytest_configure(config) -> None:
    if _state.get("root"):
        return
    root = Path(tempfile.mkdtemp(prefix="milady-lab-nbval-"))
    _state["root"] = root
    home = root / "home"
    home.mkdir()
    db = home / "trajectories.sqlite"
    env = {
        "MILADY_LAB_HOME": str(home),
        "MILADY_LAB_TRAJECTORIES": str(db),
        "MILADY_LAB_AGENT_CONFIG": str(root / "agent" / "milady.json"),
        "MILADY_LAB_CACHE": os.environ.get("MILADY_LAB_CACHE")
        or str(Path.home() / ".cache" / "milady-lab"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        # Plots render to PNG in the kernel; nothing tries to open a window.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        # As `make test` sets it: idle OpenMP threads of the kernels and workers sleep.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    os.environ.update(env)
    for name in ("MILADY_LAB_AGENT_TOKEN", "MILADY_LAB_SERVER_URL", "MILADY_LAB_SERVER_TOKEN"):
        os.environ.pop(name, None)
    (root / "runtime").mkdir()
    _make_demo_data(db)


def _make_demo_data(db: Path) -> None:
    """What ``make demo-data`` writes (``milady-lab demo-data --count 400 --seed 7``)."""
    from milady_lab.demo import write_demo_db

    write_demo_db(db, count=DEMO_COUNT, seed=DEMO_SEED, shape="agent")


#: Per-cell cap (pytest-timeout; pyproject's 600 s is for tests). A cell that waits for a
#: training run takes about a minute on an idle 2-core machine, far longer on a busy one.
CELL_TIMEOUT_S = 1800


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.timeout(CELL_TIMEOUT_S))


def pytest_collection_finish(session) -> None:
    wanted = any(Path(str(item.fspath)).name == REST_NOTEBOOK for item in session.items)
    if wanted and "server" not in _state:
        _start_server()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server() -> None:
    root = Path(str(_state["root"]))
    token = secrets.token_hex(16)
    port = _free_port()
    config = root / "jupyter_server_config.json"
    config.write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_server_ext": True}}})
    )
    log = open(root / "jupyter-server.log", "wb")  # noqa: SIM115 - closed at unconfigure
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            f"--config={config}",
            "--no-browser",
            "--allow-root",  # harmless as a user; CI containers often run as root
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={NOTEBOOKS}",
        ],
        cwd=NOTEBOOKS,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )
    _state["server"] = proc
    _state["server_log"] = log
    url = f"http://127.0.0.1:{port}/"
    headers = {"Authorization": f"token {token}"}
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            log.flush()
            tail = (root / "jupyter-server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"jupyter server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(
                url + "api/status", headers=headers, timeout=2, trust_env=False
            ).is_success:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"jupyter server did not answer on {url} within 90 s")
        time.sleep(0.3)
    os.environ["MILADY_LAB_SERVER_URL"] = url
    os.environ["MILADY_LAB_SERVER_TOKEN"] = token


def _cancel_live_jobs() -> None:
    """A notebook stopped mid-run (a failure, Ctrl-C) can leave a worker training in the
    temp home: cancel it, so nothing writes there after the folder is removed."""
    from milady_lab.config import Settings
    from milady_lab.service import TrainingService

    svc = TrainingService(Settings.from_env(), reconcile=False)
    try:
        for job in svc.list_jobs()["jobs"]:
            if job["status"] in ("queued", "running"):
                try:
                    svc.cancel_job(job["id"])
                except Exception as exc:  # report, and go on cleaning up
                    print(f"nbval_setup: cancelling {job['id']}: {exc}")
    finally:
        svc.close()


def pytest_unconfigure(config) -> None:
    proc = _state.pop("server", None)
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    log = _state.pop("server_log", None)
    if log is not None:
        log.close()  # type: ignore[attr-defined]
    root = _state.pop("root", None)
    if root is not None and (Path(str(root)) / "home" / "state.sqlite").exists():
        _cancel_live_jobs()
    if root is not None and not os.environ.get("MILADY_LAB_KEEP_NBVAL_HOME"):
        shutil.rmtree(str(root), ignore_errors=True)
