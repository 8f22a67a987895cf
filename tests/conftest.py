"""Fixtures shared by every test folder: demo trajectory data and a real PostgreSQL server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DEMO_COUNT = 400
DEMO_SEED = 7


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Milady-schema SQLite file of DEMO_COUNT messy demo trajectories (read-only use)."""
    from milady_lab.demo import write_demo_db

    return write_demo_db(
        tmp_path_factory.mktemp("demo") / "trajectories.sqlite",
        count=DEMO_COUNT,
        seed=DEMO_SEED,
        shape="regular",
    )


def _pg_bindir() -> Path:
    """Where PostgreSQL's server programs live; fails loudly when they are not installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    for found in reversed(candidates):
        if Path(found, "initdb").exists() and Path(found, "pg_ctl").exists():
            return Path(found)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
        "`postgresql` package (make venv does this)",
        pytrace=False,
    )


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit()) or (0,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port, for the whole session.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the
    ``postgres`` user (or ``nobody``) and its programs run through ``runuser``.
    Connect as the superuser ``milady`` (trust auth, loopback only); the URL names the
    ``postgres`` database — tests create their own databases in it.
    """
    bindir = _pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="milady-pg-"))
    data, log = base / "data", base / "server.log"
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
        prefix = ["runuser", "-u", user, "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run(
            [*prefix, *cmd], capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"{server_log[-2000:]}",
                pytrace=False,
            )

    run(
        str(bindir / "initdb"), "-D", str(data), "-U", "milady", "--auth=trust",
        "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
    )  # fmt: skip
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=40"
    )
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        yield f"postgresql://milady@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
