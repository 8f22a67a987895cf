"""Replays the Binder build (repo2docker cannot run here) in a fresh virtual environment.

repo2docker, for a repository with a ``binder/`` folder, clones the repository, runs
``pip install -r binder/requirements.txt`` from its root, then ``binder/postBuild``, and
launches the server through ``binder/start``. This test does the same in a new venv on
a copy of the working tree (tracked and not-ignored files, as a clone would have), with
a throw-away ``HOME``, then checks that the extension is enabled, that a server started
through ``binder/start`` opens on the quickstart and answers ``/api/training/status``, and
that the quickstart notebook runs top to bottom.

Slow (a full install of torch, transformers and JupyterLab from the local index, then
the quickstart's training and benchmark): about 6-8 minutes on 2 idle cores.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]

# The cap is generous: on a busy 2-core machine the quickstart alone can take 15 minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def _copy_tree(dest: Path) -> None:
    """The files a clone would have: tracked plus untracked-but-not-ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def _env(venv: Path, home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MILADY_LAB_", "JUPYTER_", "JPY_", "PYTHON", "VIRTUAL_ENV", "PIP_"))
        or k in ("PIP_CERT", "PIP_FIND_LINKS", "PIP_DISABLE_PIP_VERSION_CHECK")
    }
    env.update(
        HOME=str(home),
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        # No network here: the PyTorch CPU index in requirements.txt is unreachable, so
        # fail each lookup at once instead of retrying (the local index has the wheels).
        PIP_RETRIES="0",
        # pip's cache stays on (HOME is new, so point it at the machine's): repo2docker
        # downloads into an empty image, but what this test checks is the steps, and
        # downloading ~1 GB of wheels again on every run was most of its time.
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}"
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_server(repo: Path, env: dict[str, str], tmp: Path) -> None:
    """``binder/start jupyter lab``: the extension answers, and / opens the quickstart."""
    port, token = _free_port(), secrets.token_hex(12)
    log = tmp / "lab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                str(repo / "binder" / "start"),
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
            ],
            cwd=repo,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"token {token}"}
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-4000:]
            try:
                if httpx.get(f"{base}/api/status", headers=headers, timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        status = httpx.get(f"{base}/api/training/status", headers=headers, timeout=30)
        assert status.status_code == 200, status.text
        body = status.json()
        assert body["available"] is True and body["runtimeAvailable"] is True, body
        landing = httpx.get(f"{base}/?token={token}", timeout=30, follow_redirects=False)
        assert landing.status_code in (301, 302, 303, 307), landing.status_code
        landing_path = urllib.parse.urlsplit(landing.headers["location"]).path
        assert landing_path.endswith("/lab/tree/notebooks/01-quickstart.ipynb"), landing_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_binder_build_and_quickstart(tmp_path: Path) -> None:
    repo, venv, home = tmp_path / "repo", tmp_path / "venv", tmp_path / "home"
    repo.mkdir()
    home.mkdir()
    _copy_tree(repo)
    for name in ("postBuild", "start"):
        script = repo / "binder" / name
        assert script.read_text().startswith("#!"), f"binder/{name} needs a shebang"
        assert os.access(script, os.X_OK), f"binder/{name} must be executable"
    assert "set -euo pipefail" in (repo / "binder" / "postBuild").read_text()
    assert (repo / "binder" / "start").read_text().rstrip().endswith('exec "$@"')

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = _env(venv, home)
    py = str(venv / "bin" / "python")

    # repo2docker's steps, in its order, from the repository root. ``--no-compile``: the
    # .pyc of every installed module (torch's thousands) took half the install, 34 of 71 s
    # here; what runs later compiles what it imports, as it would from any install.
    _run(
        [py, "-m", "pip", "install", "-q", "--no-compile", "-r", "binder/requirements.txt"],
        repo,
        env,
        900,
    )
    _run(["bash", "binder/postBuild"], repo, env, 600)

    torch_version = _run([py, "-c", "import torch; print(torch.__version__)"], repo, env, 120)
    assert torch_version.strip().startswith("2.13.0"), torch_version
    listing = _run(["jupyter", "server", "extension", "list"], repo, env, 120)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", listing)
    assert re.search(r"^\s*jupyter_server_ext\s+enabled", plain, re.M), plain
    assert re.search(r"jupyter_server_ext\s+[0-9.]*\s*OK", plain), plain
    demo_db = home / ".milady-lab" / "trajectories.sqlite"
    assert demo_db.is_file(), "postBuild did not write the demo data"

    _check_server(repo, env, tmp_path)

    # The quickstart, top to bottom, in the Binder environment (through binder/start).
    out_dir = tmp_path / "executed"
    _run(
        [
            str(repo / "binder" / "start"),
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.timeout=1800",
            "--output-dir",
            str(out_dir),
            "notebooks/01-quickstart.ipynb",
        ],
        repo,
        env,
        2000,
    )
    executed = (out_dir / "01-quickstart.ipynb").read_text()
    assert '"output_type": "error"' not in executed
    assert "completed 8/8 iterations" in executed
