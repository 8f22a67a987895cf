"""Helpers for the REST tests: records written straight to the store, response decoding,
and a real Jupyter server in a subprocess (for the client, the flow and schemathesis)."""

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tornado.httpclient import HTTPResponse

from milady_lab.state import StateStore, now_ms
from milady_lab.training.jobs import process_start_time


def decode(response: HTTPResponse) -> Any:
    text = response.body.decode("utf-8", "replace") if response.body else ""
    if response.headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(text)
    return text


def insert_job(store: StateStore, job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A job record written straight to the store (a finished job, for 409s)."""
    rec = {
        "id": job_id,
        "status": status,
        "datasetId": None,
        "backend": "cpu",
        "model": "smollm2-135m-instruct",
        "createdAt": now_ms(),
        "completedAt": now_ms() if status in ("completed", "failed", "cancelled") else None,
        "totalIterations": 10,
        "currentIteration": 10 if status == "completed" else 0,
        "trainedTokens": 0,
        "options": {},
        **fields,
    }
    store.insert_job(rec)
    return rec


def insert_model(
    store: StateStore, home: Path, model_id: str = "model-test-1", *, adapter_files: bool = True
) -> dict[str, Any]:
    """A registered model with a small (fake) PEFT adapter folder, or an empty one."""
    adapter = home / "models" / model_id
    adapter.mkdir(parents=True, exist_ok=True)
    if adapter_files:
        config = {
            "r": 8,
            "lora_alpha": 16,
            "target_modules": ["q_proj", "v_proj"],
            "peft_type": "LORA",
            "base_model_name_or_path": "smollm2-135m-instruct",
        }
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    job = insert_job(store, f"job-for-{model_id}", "completed")
    rec = {
        "id": model_id,
        "jobId": job["id"],
        "name": "smollm2-135m-instruct-test-v1",
        "createdAt": now_ms(),
        "active": False,
        "adapterPath": str(adapter),
        "baseModel": "smollm2-135m-instruct",
        "backend": "cpu",
    }
    store.insert_model(rec)
    return rec


# -- a real Jupyter server in a subprocess --
@dataclass
class LiveServer:
    """A ``jupyter server`` process with the extension, on a free loopback port."""

    url: str  # ends with "/"
    token: str
    proc: subprocess.Popen[bytes]
    log: Path
    runtime_dir: Path

    def log_tail(self, n: int = 80) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def live_server(
    base: Path,
    lab: dict[str, Path],
    *,
    extra_config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
) -> Iterator[LiveServer]:
    """Start ``python -m jupyter_server`` with only this extension; stop its group on exit.

    Config comes from one file (``JUPYTER_NO_CONFIG`` hides the venv's and the user's),
    so the server is lean and the test sees exactly the settings it wrote.
    """
    base.mkdir(parents=True, exist_ok=True)
    (base / "root").mkdir(exist_ok=True)
    token = secrets.token_hex(16)
    port = free_port()
    config: dict[str, Any] = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_server_ext": True},
            "allow_unauthenticated_access": False,
            "ip": "127.0.0.1",
            "port": port,
            "port_retries": 0,
            "open_browser": False,
            "root_dir": str(base / "root"),
            "allow_root": os.geteuid() == 0,
        },
        "IdentityProvider": {"token": token},
        "TrainingExtension": {k: str(v) for k, v in lab.items()},
    }
    for section, values in (extra_config or {}).items():
        config.setdefault(section, {}).update(values)
    config_file = base / "jupyter_server_config.json"
    config_file.write_text(json.dumps(config, indent=1))
    runtime = base / "runtime"
    full_env = {
        **os.environ,
        "JUPYTER_NO_CONFIG": "1",
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_DATA_DIR": str(base / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    log = base / "jupyter-server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--config={config_file}"],
            cwd=base / "root",
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LiveServer(f"http://127.0.0.1:{port}/", token, proc, log, runtime)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited early:\n{server.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(
                    f"{server.url}api/training/status",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                    trust_env=False,
                )
                if r.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyter server not ready in {timeout:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.3)
        yield server
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (Jupyter shuts down cleanly), then SIGKILL the group if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


#: The stand-in worker of ``make_occupied``: it beats like a real worker (every 2 s),
#: so reconciles judge it by the same rules; it dies on SIGTERM like one not yet started.
_OCCUPIER = """
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
job_id = f"job-occupied-{os.getpid()}"
for _ in range(450):
    db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (int(time.time() * 1000), job_id))
    time.sleep(2)
"""


@contextlib.contextmanager
def make_occupied(store: StateStore) -> Iterator[dict[str, Any]]:
    """Insert a "running" job whose worker is a process in its own session that only
    keeps its heartbeat fresh.

    Jobs started meanwhile are queued behind it and never train. The occupier's group
    is killed on exit.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _OCCUPIER, str(store.path)], start_new_session=True
    )
    rec = {
        "id": f"job-occupied-{proc.pid}",
        "status": "running",
        "datasetId": None,
        "backend": "cpu",
        "model": "smollm2-135m-instruct",
        "createdAt": now_ms(),
        "startedAt": now_ms(),
        "heartbeatAt": now_ms(),
        "totalIterations": 10,
        "currentIteration": 0,
        "trainedTokens": 0,
        "options": {},
        "pid": proc.pid,
        "pidStartTime": process_start_time(proc.pid),
    }
    store.insert_job(rec)
    try:
        yield rec
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
