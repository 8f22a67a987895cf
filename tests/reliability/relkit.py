"""Helpers for the reliability suite: invariants, tmpfs mounts, a fork server that runs
the real code paths in processes the tests kill with SIGKILL, and the soak figures."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOAK = os.environ.get("MILADY_LAB_SOAK") == "1"
CLI = "import sys; from milady_lab.cli import main; sys.exit(main())"


def iterations(default: int, soak: int) -> int:
    """How many times a randomised check repeats: ``soak`` under ``make test-soak``."""
    return soak if SOAK else default


# -- figures ---------------------------------------------------------------------------------
@dataclass
class Figures:
    """What each randomised check did; printed in the terminal summary."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, name: str, iterations: int, violations: int, seconds: float, **extra: Any
    ) -> None:
        self.rows.append(
            {
                "check": name,
                "iterations": iterations,
                "violations": violations,
                "seconds": round(seconds, 1),
                **extra,
            }
        )
        FIGURES.append(self.rows[-1])

    def report(self) -> None:
        path = os.environ.get("MILADY_LAB_SOAK_REPORT")
        if path and self.rows:
            Path(path).write_text(json.dumps(self.rows, indent=1) + "\n")


#: Every figure of this session, for ``pytest_terminal_summary``.
FIGURES: list[dict[str, Any]] = []


# -- invariants ------------------------------------------------------------------------------
def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file opened fresh ("ok" when sound)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def dataset_violations(settings: Any, store: Any, checked: set[str] | None = None) -> list[str]:
    """Every listed dataset is complete and self-consistent; nothing else is listed.

    Unlisted ``.tmp-*`` folders are allowed (a build died writing: swept later, never
    listed); an unlisted complete folder is allowed only if ``sweep_orphans`` would
    recover it (a crash between the rename and the commit). Ids in ``checked`` were
    found sound before (a recorded dataset never changes) and are not read again.
    """
    from milady_lab.datasets import build as ds

    out: list[str] = []
    listed = {d["id"]: d for d in store.list_datasets()}
    root = settings.datasets_dir
    for ds_id, rec in listed.items():
        if checked is not None:
            if ds_id in checked:
                continue
            checked.add(ds_id)
        folder = Path(rec["path"])
        if folder.name != ds_id or folder.parent != root.absolute():
            out.append(f"{ds_id}: path {folder} is not its own folder")
            continue
        try:
            meta = json.loads((folder / "metadata.json").read_text())
            train = (folder / "train.jsonl").read_bytes().splitlines()
            valid = (folder / "valid.jsonl").read_bytes().splitlines()
        except (OSError, ValueError) as exc:
            out.append(f"{ds_id}: listed but unreadable: {exc}")
            continue
        if meta.get("id") != ds_id:
            out.append(f"{ds_id}: metadata.json names {meta.get('id')!r}")
        if (len(train), len(valid)) != (rec["trainCount"], rec["validCount"]):
            out.append(
                f"{ds_id}: {len(train)}+{len(valid)} lines, record says "
                f"{rec['trainCount']}+{rec['validCount']}"
            )
        for line in train + valid:
            try:
                json.loads(line)
            except ValueError:
                out.append(f"{ds_id}: a line is not JSON (half-written?)")
                break
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name in listed or entry.name.startswith(".tmp-"):
                continue
            if ds._recoverable(entry) is None:
                out.append(f"{entry.name}: an unlisted, unrecoverable folder in datasets/")
    return out


def config_violations(path: Path, expected_keep: dict[str, Any], providers: set[str]) -> list[str]:
    """The agent config is a whole JSON file: the user's keys kept, a known provider set."""
    try:
        cfg = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [f"agent config unreadable or not JSON (a mix?): {exc}"]
    out = []
    for key, value in expected_keep.items():
        if cfg.get(key) != value:
            out.append(f"agent config lost {key!r}: {cfg.get(key)!r}")
    primary = cfg.get("agents", {}).get("defaults", {}).get("model", {}).get("primary")
    if primary not in providers:
        out.append(f"agent config primary {primary!r} is none of the written values")
    return out


def store_violations(settings: Any) -> list[str]:
    """The state store is sound and opens cleanly in a new process-like handle."""
    from milady_lab.state import StateStore

    out = []
    check = integrity(settings.state_db)
    if check != "ok":
        out.append(f"integrity_check: {check}")
    store = StateStore(settings.state_db)
    try:
        store.list_datasets()
        store.list_jobs()
        store.list_models()
    except sqlite3.Error as exc:
        out.append(f"store does not open cleanly: {exc}")
    finally:
        store.close()
    return out


# -- tmpfs -----------------------------------------------------------------------------------
def mount_tmpfs(path: Path, size: str) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the disk-full and read-only-mount checks mount a tmpfs: run as root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def remount_ro(path: Path) -> None:
    subprocess.run(
        ["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True, timeout=30
    )


def umount(path: Path) -> None:
    for _ in range(50):
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(folder: Path) -> None:
    """Fill the filesystem holding ``folder`` to the last block."""
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={folder / '.filler'}", "bs=4k"], capture_output=True, timeout=60
    )


# -- processes -------------------------------------------------------------------------------
def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs after SIGKILL")
        time.sleep(0.01)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``milady-lab ARGS`` in a new process (what a user's terminal runs)."""
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


_CLI_MANY = r"""
import contextlib, io, json, os, sys
from milady_lab.cli import main
out = []
for argv, env in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(env)
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    os.environ.clear()
    os.environ.update(saved)
    out.append([code, std.getvalue(), err.getvalue()])
print(json.dumps(out))
"""


def cli_many(
    calls: list[tuple[list[str], dict[str, str]]], timeout: float = 300
) -> list[list[Any]]:
    """Many ``milady-lab`` commands in one new interpreter: [code, stdout, stderr] each."""
    r = subprocess.run(
        [sys.executable, "-c", _CLI_MANY, json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


#: The fork server: imports the real code once, then forks one child per request. Each
#: child runs a scenario in a loop (real milady-lab calls, nothing mocked) until the
#: test kills it with SIGKILL at a random moment. Children are reaped automatically.
_ZYGOTE = r"""
import faulthandler, json, os, random, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
import polars  # noqa: F401  (no Polars work here: its thread pool starts in the children)
from milady_lab.config import Settings
from milady_lab.service import TrainingService
from milady_lab.models.handoff.activation import activate
from milady_lab.training import worker
from types import SimpleNamespace
from milady_lab.training.spec import TrainResult


def settings(a):
    return Settings.from_env(home=a["home"], trajectories=a.get("trajectories"),
                             agent_config=a.get("agent_config"), cache=a.get("cache"))


def build(a):
    svc = TrainingService(settings(a), reconcile=False)
    ready()
    while True:
        svc.build_dataset({"limit": random.randint(5, 400)})


def activation(a):
    svc = TrainingService(settings(a), reconcile=False)
    models = [svc.store.get_model(m) for m in a["models"]]
    ready()
    while True:
        svc.activate_model(random.choice(models)["id"],
                           {"providerModel": random.choice(a["providers"]), "force": True})


def register(a):
    from milady_lab.state import now_ms
    from milady_lab.training.jobs import new_id, process_start_time
    s = settings(a)
    svc = TrainingService(s, reconcile=False)
    me = os.getpid()
    ready()
    while True:
        job_id = new_id("job")
        job = {"id": job_id, "status": "running", "datasetId": None, "backend": "cpu",
               "model": "tiny", "createdAt": now_ms(), "startedAt": now_ms(),
               "totalIterations": 2, "currentIteration": 0, "trainedTokens": 0,
               "options": {}, "pid": me, "pidStartTime": process_start_time(me)}
        svc.store.insert_job(job)
        out = s.models_dir / f".tmp-{job_id}"
        adapter = out / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
        (adapter / "adapter_model.safetensors").write_bytes(os.urandom(256 * 1024))
        result = TrainResult(adapter_dir=adapter, base_model_path=Path("/base"), final_loss=1.0,
                             final_val_loss=None, trained_tokens=10, tokens_per_second=1.0)
        spec = SimpleNamespace(iterations=2)
        worker._complete(s, svc.store, svc.store.get_job(job_id), spec,
                         SimpleNamespace(hf_path="/base"), result)


def ready():
    os.write(1, f"READY {os.getpid()}\n".encode())


SCENARIOS = {"build": build, "activation": activation, "register": register}
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        faulthandler.dump_traceback_later(40, exit=True)  # a hung child says where
        random.seed(req.get("seed"))
        try:
            SCENARIOS[req["scenario"]](req["args"])
        except BaseException as exc:
            os.write(1, f"DIED {os.getpid()} {type(exc).__name__}: {exc}\n".encode())
        os._exit(1)
    os.write(1, f"FORKED {pid}\n".encode())
"""


class ForkServer:
    """``with ForkServer() as fs: pid = fs.start("build", args); ...; fs.kill(pid)``."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "POLARS_MAX_THREADS": "2", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.notes: list[str] = []

    def __enter__(self) -> ForkServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"fork server silent for {timeout} s (rc {self.proc.poll()})")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("fork server closed its output")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def _expect(self, prefix: str, timeout: float) -> str:
        while True:
            line = self._line(timeout)
            if line.startswith(prefix):
                return line
            self.notes.append(line)
            if line.startswith("DIED"):
                raise AssertionError(f"a scenario failed before it was killed: {line}")

    def start(self, scenario: str, args: dict[str, Any], seed: int) -> int:
        """Fork a child running ``scenario``; returns once it is ready (imports done)."""
        assert self.proc is not None and self.proc.stdin is not None
        req = {
            "scenario": scenario,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in args.items()},
            "seed": seed,
        }
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        pid = int(self._expect("FORKED", 30).split()[1])
        if f"READY {pid}" in self.notes:  # the child may speak before the fork server does
            return pid
        line = self._expect("READY", 60)
        assert int(line.split()[1]) == pid, line
        return pid

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
        # A scenario that failed by itself (instead of being killed) is a finding.
        while b"\n" in self._buf or select.select([self.proc.stdout], [], [], 0)[0]:  # type: ignore[list-item]
            try:
                line = self._line(0.05)
            except AssertionError:
                break
            if line.startswith("DIED"):
                raise AssertionError(f"a scenario failed before it was killed: {line}")


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every path under ``root``, and of ``root`` itself."""
    out = {".": (root.stat().st_mtime_ns, 0)}
    for path in root.rglob("*"):
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return out


def secrets_in(texts: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[str]:
    """``where: secret`` for every secret found in the (where, text) pairs."""
    found = []
    for where, text in texts:
        for secret in secrets:
            if secret and secret in text:
                found.append(f"{where}: {secret[:4]}…")
    return found


# -- a database of hostile rows ---------------------------------------------------------------
TEN_MB = 10 * 1024 * 1024
DEEP = 100_000  # nesting levels: far past any JSON parser's recursion limit


def _call(user: str, response: str) -> dict[str, Any]:
    return {
        "model": "m",
        "purpose": "response",
        "systemPrompt": "sys",
        "userPrompt": user,
        "response": response,
    }


#: id → steps_json: what an agent (or an attacker writing to its database) could store.
HOSTILE_STEPS: dict[str, Any] = {
    "deep-list": "[" * DEEP + "]" * DEEP,
    "deep-object": '{"steps": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}",
    "deep-in-call": '[{"llmCalls": [{"userPrompt": "u", "response": "r", "x": '
    + "[" * DEEP
    + "]" * DEEP
    + "}]}]",
    "deep-900-data": json.dumps(
        [
            {
                "llmCalls": [_call("deep data?", "ok")],
                "providerAccesses": [{"providerId": "p", "data": 0}],
            }
        ]
    ).replace('"data": 0', '"data": ' + "[" * 900 + "]" * 900),
    "ten-mb-reply": json.dumps([{"stepId": "s", "llmCalls": [_call("big?", "x" * TEN_MB)]}]),
    "int-steps": 42,
    "real-steps": 3.5,
    "null-text": "null",
    "true-text": "true",
    "empty-text": "",
    "not-json": "{this is not json",
    "steps-is-text": '{"steps": "x"}',
    "calls-is-number": '[{"llmCalls": 5}]',
    "calls-is-object": '[{"llmCalls": {"userPrompt": "u", "response": "r"}}]',
    "calls-wrong-items": '[{"llmCalls": [1, "a", null, [], {"userPrompt": 7, "response": ["x"]}]}]',
    "numbers-as-strings": json.dumps(
        [
            {
                "stepId": 5,
                "llmCalls": [
                    {
                        **_call("strings?", "yes"),
                        "promptTokens": "12",
                        "completionTokens": "x",
                        "timestamp": "abc",
                        "latencyMs": "9" * 40,
                    }
                ],
            }
        ]
    ),
    "nested-arrays": "[[[[]]]]",
    "bad-utf8": b'[{"llmCalls": [{"userPrompt": "\xff\xfe", "response": "r\xc3"}]}]',
    "nul-inside": '[{"llmCalls": [{"userPrompt": "a\\u0000b", "response": "c\x00d"}]}]',
    "good-newest": json.dumps([{"stepId": "s1", "llmCalls": [_call("still fine?", "yes")]}]),
}
#: Rows whose usable call must reach a dataset.
USABLE = {
    "ten-mb-reply",
    "deep-900-data",
    "numbers-as-strings",
    "good-newest",
    "nul-inside",
    "bad-utf8",
}  # invalid UTF-8 is read with replacement characters


def write_hostile_db(demo_db: Path, path: Path) -> Path:
    """The demo database plus HOSTILE_STEPS rows (newest first) and rows whose summary
    columns hold the wrong types (text start times, text counts, integer and blob ids)."""
    from milady_lab.demo import COLUMNS, INSERT_SQL

    shutil.copy(demo_db, path)
    conn = sqlite3.connect(path)
    try:
        template = dict(
            zip(
                COLUMNS,
                conn.execute(f"SELECT {', '.join(COLUMNS)} FROM trajectories LIMIT 1").fetchone(),
                strict=True,
            )
        )
        start = 1_900_000_000_000
        for i, (tid, steps) in enumerate(HOSTILE_STEPS.items()):
            row = {
                **template,
                "id": tid,
                "start_time": start + i,
                "steps_json": steps,
                "llm_call_count": 1,
            }
            conn.execute(INSERT_SQL, [row[c] for c in COLUMNS])
        odd = [
            {
                "id": "text-start",
                "start_time": "abc",
                "llm_call_count": "many",
                "total_reward": "high",
                "duration_ms": 1.5e300,
            },
            {"id": "huge-numbers", "start_time": 2**63 - 1, "total_prompt_tokens": -(2**63)},
            {"id": 12345},
            {"id": b"\xff\x00blob"},
        ]
        for extra in odd:
            row = {**template, **extra}
            conn.execute(INSERT_SQL, [row[c] for c in COLUMNS])
        conn.commit()
    finally:
        conn.close()
    return path
