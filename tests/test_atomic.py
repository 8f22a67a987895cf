"""The atomic-write helpers: a target is either the old one or the complete new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from milady_lab.atomic import atomic_dir, atomic_file, remove_stale, write_bytes


def test_atomic_file_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "a" / "config.json"
    write_bytes(target, b"old")
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not visible before the rename
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.json"]


def test_atomic_file_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    write_bytes(target, b"old", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_atomic_dir(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "w.bin").write_bytes(b"1")
        assert not target.exists()
    assert (target / "w.bin").read_bytes() == b"1"
    with pytest.raises(OSError), atomic_dir(target) as tmp:  # no silent overwrite
        (tmp / "w.bin").write_bytes(b"2")
    assert (target / "w.bin").read_bytes() == b"1"
    with atomic_dir(target, replace=True) as tmp:
        (tmp / "w.bin").write_bytes(b"3")
    assert (target / "w.bin").read_bytes() == b"3"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_remove_stale(tmp_path: Path) -> None:
    (tmp_path / ".milady.json.abc12345.tmp").write_text("x")
    (tmp_path / ".milady.json.zz.tmp").mkdir()
    (tmp_path / "milady.json").write_text("{}")
    (tmp_path / ".other.json.abc.tmp").write_text("x")
    remove_stale(tmp_path, "milady.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abc.tmp", "milady.json"]


def test_folder_lock_excludes_and_leaves_no_file(tmp_path: Path) -> None:
    """The lock beside a user's file is on the folder itself: nothing is created, a
    second holder (another thread, its own descriptor) waits and then times out."""
    import threading

    from milady_lab.atomic import folder_lock

    got: list[str] = []
    with folder_lock(tmp_path, timeout=1.0):

        def second() -> None:
            try:
                with folder_lock(tmp_path, timeout=0.2):
                    got.append("locked")
            except TimeoutError:
                got.append("timed out")

        t = threading.Thread(target=second)
        t.start()
        t.join(5)
    assert got == ["timed out"] and list(tmp_path.iterdir()) == []
    with folder_lock(tmp_path, timeout=0.2):  # released on exit
        pass
