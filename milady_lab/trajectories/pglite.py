"""A Milady agent's PGlite database (every desktop install's default), read safely.

PGlite is PostgreSQL compiled to WebAssembly, running inside the agent's Node process; its
data directory can be opened by one process at a time, and only by PGlite. So milady-lab:

1. never opens the agent's directory: it copies it into its cache and checks that no file
   changed during the copy (a running agent may be writing; then it copies again, and after
   a few tries refuses, naming the REST source that always works). The copy is a
   crash-consistent snapshot: PostgreSQL's own recovery replays its WAL when it opens;
2. serves the copy with the agent's own PGlite version (0.4.6, with the ``vector`` and
   ``fuzzystrmatch`` extensions plugin-sql loads) through ``@electric-sql/pglite-socket``
   on a loopback port — a small Node process, ``pglite_bridge/serve.mjs``, installed from
   the npm registry into milady-lab's cache on first use (needs Node 20+ and npm);
3. reads it with ``PostgresSource``: the same SQL, filters, frames and errors as an agent
   on a PostgreSQL server. Pages of ``iter_steps`` are keyset queries rather than one
   server-side cursor, because every connection to PGlite shares its single session: a
   cursor's open transaction would stall every other reader until the build finished.

The snapshot is refreshed when the agent's directory changes (checked at most every
``REFRESH_S`` seconds), so a long-running Jupyter server sees new trajectories.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psycopg

from . import _rows
from .base import SourceUnavailable, StepsFilter
from .postgres import PostgresSource, steps_select, table_columns

BRIDGE_DIR = Path(__file__).with_name("pglite_bridge")
#: Files whose presence marks a PostgreSQL/PGlite data directory.
_MARKERS = ("PG_VERSION", "base")
_COPY_TRIES = 4
REFRESH_S = 2.0
_START_TIMEOUT_S = 60.0


def is_pglite_dir(path: Path) -> bool:
    return path.is_dir() and all((path / m).exists() for m in _MARKERS)


def live_pid(data_dir: Path) -> int | None:
    """The pid in the directory's ``postmaster.pid`` when that process is running."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        pid = int(first)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file's (path, size, mtime): equal before and after a copy means no write
    happened during it."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(full)
                out.append((os.path.relpath(full, root), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def snapshot(data_dir: Path, into: Path) -> Path:
    """A consistent copy of ``data_dir`` under ``into`` (a new folder, returned)."""
    into.mkdir(parents=True, exist_ok=True)
    _sweep(into)
    for _ in range(_COPY_TRIES):
        before = _signature(data_dir)
        target = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=into))
        try:
            shutil.copytree(data_dir, target / "db", symlinks=True)
        except OSError as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise SourceUnavailable(f"cannot copy the PGlite database {data_dir}: {exc}") from None
        if _signature(data_dir) == before:
            # The copy is ours: the agent's lock file in it names the agent, not us.
            (target / "db" / "postmaster.pid").unlink(missing_ok=True)
            return target
        shutil.rmtree(target, ignore_errors=True)
        time.sleep(0.2)
    raise SourceUnavailable(
        f"the agent is writing to its PGlite database {data_dir} without pause, so no "
        "consistent copy could be made; read it through the running agent instead "
        "(MILADY_LAB_TRAJECTORIES=milady+http://127.0.0.1:2138)"
    )


def _sweep(into: Path) -> None:
    """Remove snapshots left by milady-lab processes that no longer run."""
    for child in into.iterdir():
        pid_text = child.name.split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(child, ignore_errors=True)
        except PermissionError:
            pass


# -- the Node bridge ---------------------------------------------------------------------------


def bridge_home(cache: Path) -> Path:
    """Where the bridge's npm packages live: one folder per lock file."""
    digest = hashlib.sha256((BRIDGE_DIR / "package-lock.json").read_bytes()).hexdigest()[:12]
    return cache / "pglite-bridge" / digest


def install_bridge(cache: Path) -> Path:
    """The bridge installed (``npm ci`` from its lock file, once; atomic), its folder."""
    home = bridge_home(cache)
    if (home / "node_modules" / "@electric-sql" / "pglite-socket").is_dir():
        return home
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SourceUnavailable(
            "reading a PGlite database needs Node.js 20+ and npm on PATH (the agent's own "
            "PGlite runs in Node); install them, or point MILADY_LAB_TRAJECTORIES at the "
            "running agent (milady+http://127.0.0.1:2138)"
        )
    home.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".install-", dir=home.parent))
    try:
        for name in ("package.json", "package-lock.json", "serve.mjs"):
            shutil.copy2(BRIDGE_DIR / name, tmp / name)
        done = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=tmp, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise SourceUnavailable(f"installing PGlite from npm failed: {tail[0]}")
        try:
            tmp.rename(home)
        except OSError:  # another process installed it first
            if not home.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


class _Bridge:
    """One ``serve.mjs`` process serving one snapshot; stopped by ``close``."""

    def __init__(self, home: Path, snapshot_dir: Path, shown: Path) -> None:
        self.snapshot_dir = snapshot_dir
        self.shown = shown  # the agent's folder, named in messages (never the snapshot)
        # ES modules resolve packages next to the script: it runs from the install folder,
        # refreshed from the package so an upgrade of milady-lab takes effect.
        script = home / "serve.mjs"
        if script.read_bytes() != (BRIDGE_DIR / "serve.mjs").read_bytes():
            shutil.copy2(BRIDGE_DIR / "serve.mjs", script)
        self.proc = subprocess.Popen(
            ["node", str(script), str(snapshot_dir / "db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self.port = self._read_port()

    def _read_port(self) -> int:
        assert self.proc.stdout is not None
        box: dict[str, bytes] = {}

        def read() -> None:
            box["line"] = self.proc.stdout.readline() if self.proc.stdout else b""

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(_START_TIMEOUT_S)
        line = box.get("line", b"")
        try:
            return int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            if self.proc.poll() is None:
                self.proc.kill()
            err = self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""
            self.close()
            reason = (err.strip().splitlines() or ["it did not start in time"])[-1]
            raise SourceUnavailable(f"PGlite could not open {self.shown}: {reason}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)


class PGliteSource(PostgresSource):
    """Trajectories from a PGlite data directory, read from a snapshot (module docstring)."""

    #: Every connection shares PGlite's one session, so one connection's prepared
    #: statements would collide with the next's names: never prepare.
    prepare_threshold = None

    def __init__(self, data_dir: str | os.PathLike[str], cache: Path) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self._cache = cache
        self._bridge: _Bridge | None = None
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._checked = 0.0
        self._readers = 0
        self._count: int | None = None  # of the current snapshot, which never changes
        super().__init__("postgresql://postgres@127.0.0.1:1/postgres?sslmode=disable")
        self.description = f"pglite:{self.data_dir}"
        atexit.register(self.close)

    # -- the snapshot behind the connection ---------------------------------------------------
    def _connect(self) -> Any:
        with self._lock:
            self._refresh()
        return super()._connect()

    def _refresh(self) -> None:
        """Start (or, when the agent's directory changed, restart) the bridge."""
        now = time.monotonic()
        if self._bridge is not None and now - self._checked < REFRESH_S:
            return
        self._checked = now
        if not is_pglite_dir(self.data_dir):
            raise SourceUnavailable(f"{self.data_dir} is not a PGlite database folder")
        seen = _signature(self.data_dir)
        if self._bridge is not None and (seen == self._seen or self._readers):
            return
        home = install_bridge(self._cache)
        copy = snapshot(self.data_dir, self._cache / "pglite-snapshots")
        fresh = _Bridge(home, copy, self.data_dir)
        self._stop()
        self._bridge, self._seen, self._count = fresh, seen, None
        self._url = f"postgresql://postgres@127.0.0.1:{fresh.port}/postgres?sslmode=disable"

    def _stop(self) -> None:
        self._close()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _connection(self) -> Any:
        if self._bridge is not None and time.monotonic() - self._checked >= REFRESH_S:
            self._close()  # reconnect through _connect, which refreshes the snapshot
        return super()._connection()

    def count(self) -> int:
        with self._lock:
            self._connection()  # refreshes the snapshot when the agent's folder changed
            if self._count is None:
                self._count = super().count()
            return self._count

    # -- reading every trajectory without holding a transaction open --------------------------
    def iter_steps(
        self, batch_rows: int = 5000, where: StepsFilter | None = None
    ) -> Iterator[pl.DataFrame]:
        """Keyset pages in listing order, each its own short query (module docstring)."""
        with self._lock:
            conn = self._connection()
            self._readers += 1
        try:
            with self._lock:
                columns = table_columns(conn)
            select = steps_select(columns)
            clause, params = (where or StepsFilter()).sql("postgres", columns)
            after: tuple[Any, Any] | None = None
            while True:
                page_clause, page_params = _after(clause, params, after)
                with self._lock:
                    try:
                        with conn.transaction(), conn.cursor() as cur:
                            cur.execute(
                                f"SELECT {select}, start_time, id FROM trajectories "
                                f"{page_clause} {_ORDER} LIMIT %s",
                                [*page_params, max(1, batch_rows)],
                            )
                            rows = cur.fetchall()
                    except psycopg.Error as exc:
                        raise SourceUnavailable(
                            f"reading {self.description} failed: {self._scrub(exc)}"
                        ) from None
                if not rows:
                    return
                after = (rows[-1][-2], rows[-1][-1])
                yield _rows.steps_from_rows([r[:-2] for r in rows])
                if len(rows) < batch_rows:
                    return
        finally:
            with self._lock:
                self._readers -= 1


_ORDER = 'ORDER BY start_time DESC NULLS LAST, id COLLATE "C"'


def _after(clause: str, params: list[Any], key: tuple[Any, Any] | None) -> tuple[str, list[Any]]:
    """``clause`` narrowed to the rows after ``key`` (start_time, id) in listing order."""
    if key is None:
        return clause, params
    start, tid = key
    if start is None:
        cond = 'start_time IS NULL AND id COLLATE "C" > %s'
        extra = [tid]
    else:
        cond = (
            '(start_time < %s OR (start_time = %s AND id COLLATE "C" > %s) OR start_time IS NULL)'
        )
        extra = [start, start, tid]
    joined = f"{clause} AND {cond}" if clause else f"WHERE {cond}"
    return joined, [*params, *extra]
