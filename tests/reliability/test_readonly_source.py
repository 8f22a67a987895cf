"""The agent's trajectory database is only ever read: a write through the source's own
connection fails, the file's bytes and mtime are unchanged after listing, detail and
dataset builds, and it works as a read-only file (0444), in a read-only folder (0555)
and on a read-only mount, in rollback-journal and WAL mode alike.

Also: ``tests/trajectories/test_sqlite.py::test_source_is_read_only`` and
``tests/trajectories/test_postgres.py::test_source_is_read_only``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from milady_lab.config import Settings
from milady_lab.service import TrainingService

from .relkit import mount_tmpfs, remount_ro, umount


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file in the database's folder (-wal and -shm included)."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
    }


def _use(tmp_path: Path, db: Path) -> None:
    """Everything milady-lab reads a source for, then a write attempt through it."""
    svc = TrainingService(
        Settings.from_env(
            home=tmp_path / "home",
            trajectories=db,
            agent_config=tmp_path / "a.json",
            cache=tmp_path / "c",
        )
    )
    try:
        assert svc.status()["runtimeAvailable"] is True, svc.status()
        page = svc.list_trajectories(50, 0)
        assert page["total"] == 400 and len(page["trajectories"]) == 50
        svc.list_trajectories(10, 390)
        svc.get_trajectory(page["trajectories"][0]["id"])
        rec = svc.build_dataset({})["dataset"]
        assert rec["exampleCount"] > 0
        conn = svc.source._connection()
        for sql in ("DELETE FROM trajectories", "CREATE TABLE x (a)", "PRAGMA user_version = 7"):
            with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
                conn.execute(sql)
        assert svc.list_trajectories(1, 0)["total"] == 400
    finally:
        svc.source.close()
        svc.close()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_read_only_file_and_folder(tmp_path: Path, demo_db: Path, journal: str) -> None:
    folder = tmp_path / "agent"
    folder.mkdir()
    db = folder / "trajectories.sqlite"
    db.write_bytes(demo_db.read_bytes())
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.close()
    os.chmod(db, 0o444)
    os.chmod(folder, 0o555)
    try:
        before = _fingerprint(folder)
        _use(tmp_path, db)
        after = _fingerprint(folder)
        assert after[db.name] == before[db.name]
        # Root may write in a 0555 folder: a WAL reader then makes SQLite's shared-memory
        # index (-shm) and an empty -wal, as any reader of the agent's database does.
        extra = set(after) - set(before)
        assert extra <= {f"{db.name}-shm", f"{db.name}-wal"}, extra
        wal = folder / f"{db.name}-wal"
        assert not wal.exists() or wal.stat().st_size == 0  # no frame written
    finally:
        os.chmod(folder, 0o755)


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_read_only_mount(tmp_path: Path, demo_db: Path, journal: str) -> None:
    """A read-only filesystem: even root cannot create a -shm or -journal file there."""
    mnt = tmp_path / "ro"
    mount_tmpfs(mnt, "32m")
    try:
        db = mnt / "trajectories.sqlite"
        db.write_bytes(demo_db.read_bytes())
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA journal_mode={journal}")
        conn.close()
        remount_ro(mnt)
        before = _fingerprint(mnt)
        _use(tmp_path, db)
        assert _fingerprint(mnt) == before
    finally:
        umount(mnt)
