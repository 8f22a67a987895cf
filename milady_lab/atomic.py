"""Atomic writes: the one place for "never leave a half-written file or folder".

Everything a user makes (datasets, adapters, exports, the agent config) is written to a
temporary sibling on the same filesystem, flushed to disk, renamed into place, and the
parent folder is fsynced so the rename itself survives a power cut. A failure (or a
``KeyboardInterrupt``) removes the temporary path and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_dir",
    "atomic_file",
    "folder_lock",
    "fsync_dir",
    "fsync_path",
    "fsync_tree",
    "remove_stale",
    "write_bytes",
]


def fsync_path(path: Path) -> None:
    """Flush one file (or folder entry list) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries, so a rename or new file inside it is durable."""
    fsync_path(folder)


def fsync_tree(folder: Path) -> None:
    """Flush every file below ``folder`` and the folders themselves."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


@contextlib.contextmanager
def atomic_file(target: Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on a clean exit it replaces ``target``.

    The caller writes the temporary file by name (any library that takes a path).
    ``mode`` sets its permissions before the rename (default 0644; mkstemp's own 0600
    would hide a dataset from the other users of a shared machine).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644 if mode is None else mode)
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_dir(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on a clean exit it becomes ``target``.

    With ``replace`` an existing ``target`` is removed first (a stale checkpoint or an
    incomplete cache folder); without it an existing ``target`` makes the rename fail
    and the new folder is discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        fsync_tree(tmp)
        if replace and (target.exists() or target.is_symlink()):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)


def write_bytes(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """``target.write_bytes(data)``, atomically."""
    with atomic_file(target, mode=mode) as tmp:
        tmp.write_bytes(data)


def remove_stale(folder: Path, target_name: str) -> None:
    """Remove temporary siblings of ``target_name`` left by a killed writer.

    Only call it while holding the lock that serialises writers of that target.
    """
    prefix = f".{target_name}."
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (``flock`` on its descriptor).

    Serialises the writers of a file in a folder that is not ours (the agent's config)
    without leaving a lock file beside it: nothing is created, and the kernel drops the
    lock when the holder closes it or dies. Every call opens its own descriptor, so
    threads of one process exclude each other too. ``TimeoutError`` after ``timeout``.
    """
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{folder} is locked by another writer") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock
