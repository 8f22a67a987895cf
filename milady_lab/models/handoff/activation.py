"""Activate a model: point the agent's config at it and mark it the one active model.

The agent's config is the user's file (``MILADY_LAB_AGENT_CONFIG``, by default
``~/.milady/milady.json``), so the edit is as small as it can be: only
``agents.defaults.model.primary`` and, for an Ollama-imported model,
``env.OLLAMA_MODEL`` and ``env.AGENT_LLM_PROVIDER`` change, in the file's text
(``json_edit``): every other byte, inline objects included, and the file's permission
bits stay as they were. A file that is not valid JSON, or whose
``agents``/``defaults``/``model``/``env`` is not an object, is left untouched (409). A
config path that does not exist is refused (400) unless the request asks to create it
(``create``): a typo must not produce a file the agent never reads.

Nothing slow runs inside the request: a model never benchmarked is a 409 saying how to
benchmark it (or ``force``). An ``ollama/…`` provider model that Ollama does not list
(``/api/tags``, or Ollama not answering) is a warning in the answer and in the
activation record, not a failure: Ollama may be started after the edit.

Order and crashes: under an exclusive ``flock`` on the config's folder (no lock file
is left beside the user's file) held across both steps, the config is written first
(temporary file in the same folder, fsync, ``os.replace``, fsync of the folder), then
one store transaction makes this model the only active one. A crash between the two
leaves the new config with the old active model in the store; the agent then already
uses the new model and the next activation puts the store right. A crash before the
rename leaves the old file (plus, at worst, a stray ``.milady.json.*.tmp`` file, which
the next writer removes).

Holding the lock across both steps is what keeps two racing activations consistent:
the config and the store always name the same model afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from ... import validation as v
from ...api.schema import ActivateAnswer, JsonObject
from ...atomic import atomic_file, folder_lock, fsync_dir, remove_stale
from ...config import Settings
from ...errors import ConflictError, InputError
from ...state import EvalStore, StateStore, now_ms
from ..evaluation import scores
from .json_edit import JsonStyle, JsonText
from .loopback import check_loopback_url

__all__ = ["JsonStyle", "activate", "check_gate", "deactivate", "update_agent_config"]

LOCK_TIMEOUT_S = 30.0
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
#: The fields of the activation body.
FIELDS = ("providerModel", "force", "create", "ollamaUrl")
#: Where Ollama is asked whether it has an ``ollama/…`` model (loopback only).
DEFAULT_OLLAMA_URL = "http://localhost:11434"
#: The keys activation writes, as paths into the config.
PRIMARY = ("agents", "defaults", "model", "primary")
ENV_MODEL = ("env", "OLLAMA_MODEL")
ENV_PROVIDER = ("env", "AGENT_LLM_PROVIDER")


class KeyBefore(TypedDict):
    """One key activation writes, as it was before: there or not, and its value."""

    present: bool
    value: NotRequired[Any]


class Gate(TypedDict, total=False):
    """What the gate compared (``check_gate``), or that it was overridden."""

    forced: Literal[True]
    benchmarkCompletedAt: int | None
    againstActive: str | None


class Deactivated(TypedDict):
    """The answer of ``deactivate`` (``schema.DeactivateAnswer``; ``activeModelId`` is
    null, not left out, when no model is active again)."""

    ok: Literal[True]
    deactivatedModel: str
    activeModelId: str | None
    restored: str


@dataclass(frozen=True)
class ConfigEdit:
    """What one config write replaced: enough to put it back."""

    previous: bytes | None  # the file's bytes, None when there was no file
    mode: int | None
    written: bytes
    keys: dict[str, KeyBefore]  # "a.b.c" -> the key before the write


@dataclass(frozen=True)
class _Request:
    provider: str
    ollama_name: str | None
    force: bool
    create: bool
    ollama_url: str


def _request(model: Mapping[str, Any], body: Any) -> _Request:
    """The checked body: 400 for bad fields, 409 when there is nothing to point at."""
    fields = v.body_object(body, FIELDS)
    provider = v.text(fields.get("providerModel"), "providerModel", max_length=200)
    force = _flag(fields.get("force"), "force")
    create = _flag(fields.get("create"), "create")
    url = fields.get("ollamaUrl")
    url = DEFAULT_OLLAMA_URL if url is None else check_loopback_url(url)
    ollama_name = model.get("ollamaName") or None
    if provider is None:
        if not ollama_name:
            raise ConflictError(
                f"model {model['id']} is not imported into Ollama: import the model into "
                "Ollama first or pass providerModel"
            )
        provider = f"ollama/{ollama_name}"
    return _Request(provider, ollama_name, force, create, url)


def activate(
    settings: Settings, store: StateStore, model: Mapping[str, Any], body: Any = None
) -> ActivateAnswer:
    """Make ``model`` the agent's model and the only active one, if the gate lets it."""
    req = _request(model, body)
    config_path = Path(settings.agent_config)
    _check_config_exists(config_path, req.create)
    gate: Gate = {"forced": True} if req.force else check_gate(settings, store, model)
    warnings = _ollama_warnings(req)

    evals = EvalStore(store)
    with _config_lock(config_path, create=req.create):
        edit = update_agent_config(config_path, req.provider, req.ollama_name)
        activated_at = now_ms()
        with store.transaction() as conn:
            before = conn.execute("SELECT id FROM models WHERE active != 0").fetchone()
            conn.execute(
                "UPDATE models SET active = 0 WHERE active != 0 AND id != ?", (model["id"],)
            )
            store.update_model(
                model["id"], conn, active=True, providerModel=req.provider, activatedAt=activated_at
            )
            evals.add_activation(
                {
                    "modelId": model["id"],
                    "providerModel": req.provider,
                    "activatedAt": activated_at,
                    "configPath": str(config_path),
                    "previousConfig": edit.previous,
                    "previousMode": edit.mode,
                    "writtenSha256": hashlib.sha256(edit.written).hexdigest(),
                    "previousKeys": edit.keys,
                    "previousActiveId": None if before is None else before["id"],
                    "forced": req.force,
                    "gate": gate,
                    "warnings": warnings or None,
                },
                conn,
            )
            store.emit(
                "model_activated",
                f"model {model['id']} is now the agent's model ({req.provider})"
                + (" (gate overridden with force)" if req.force else "")
                + "".join(f"; warning: {w}" for w in warnings),
                conn,
                modelId=model["id"],
                providerModel=req.provider,
                forced=req.force,
                warnings=warnings,
            )
    return ActivateAnswer(ok=True, active_model=req.provider, warnings=warnings or None)


def _check_config_exists(config_path: Path, create: bool) -> None:
    """A missing config is created only when asked: else a typo'd path would get a new
    file the agent never reads, and the answer would say the agent uses the model."""
    if create or config_path.exists():
        return
    raise InputError(
        f"the agent config {config_path} does not exist (MILADY_LAB_AGENT_CONFIG, "
        "--agent-config): point it at the agent's milady.json, or pass create=true to "
        "create a new one there"
    )


def _ollama_warnings(req: _Request) -> list[str]:
    """An ``ollama/…`` provider model Ollama does not list (or cannot be asked about)."""
    from .ollama import missing_model_warning

    if not req.provider.startswith("ollama/"):
        return []
    warning = missing_model_warning(req.ollama_url, req.provider.removeprefix("ollama/"))
    return [warning] if warning else []


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise InputError(f"{name} must be true or false")


@contextlib.contextmanager
def _config_lock(config_path: Path, *, create: bool = False) -> Iterator[Path]:
    """The lock every config writer holds (on the folder: no lock file is left); yields
    the real path of the config. Its problems become 409s naming the file."""
    real = Path(os.path.realpath(config_path))  # a symlinked config stays a symlink
    try:
        if create:
            real.parent.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
        with folder_lock(real.parent, LOCK_TIMEOUT_S):
            _remove_old_lock_file(real)
            remove_stale(real.parent, real.name)
            yield real
    except TimeoutError:
        raise ConflictError(
            f"another activation is changing {config_path}; try again when it has finished"
        ) from None
    except OSError as exc:
        raise ConflictError(
            f"cannot write the agent config {config_path}: {exc.strerror or exc}"
        ) from None


def _remove_old_lock_file(real: Path) -> None:
    """The ``<config>.lock`` earlier versions left beside the config, when nobody holds it."""
    old = real.with_name(real.name + ".lock")
    try:
        fd = os.open(old, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_size == 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            old.unlink()
    except OSError:
        pass  # held by an older milady-lab right now: its own
    finally:
        os.close(fd)


# -- the gate ---------------------------------------------------------------------------------
def check_gate(settings: Settings, store: StateStore, model: Mapping[str, Any]) -> Gate:
    """Refuse (409) a model that does the agent's job worse than the active model or the base.

    The model's last benchmark is compared; a model never benchmarked is refused with
    the way to benchmark it (the benchmark takes minutes: never inside this request). A
    gated score (``formatValid``, ``actionAccuracy``, and ``preferenceAccuracy`` where the
    benchmark scored held-out pairs) "fell" when the paired 95 %
    interval of the difference lies wholly below 0; against an active model scored in
    another run, when the two intervals do not overlap. Returns what was compared.
    """
    bench = model.get("benchmark")
    if not isinstance(bench, dict) or not isinstance(bench.get("scores"), dict):
        mid = model["id"]
        raise ConflictError(
            f"model {mid} has not been benchmarked, so it cannot be compared with the base "
            f"model: benchmark it first (milady-lab models benchmark {mid}, or POST "
            f"/api/training/models/{mid}/benchmark), or pass force=true to activate it "
            "without the check"
        )
    active = next((m for m in store.list_models() if m.get("active")), None)
    if active is not None and active["id"] == model["id"]:
        active = None
    falls = gate_falls(bench, active)
    if falls:
        raise ConflictError(
            f"model {model['id']} is worse than "
            + "; ".join(falls)
            + " (beyond the 95% interval): not activated; pass force=true to override"
        )
    return {
        "benchmarkCompletedAt": bench.get("completedAt"),
        "againstActive": (active or {}).get("id"),
    }


#: A purpose is gated on a score when at least this many of its held-out examples count.
MIN_PURPOSE_EXAMPLES = 8


def gate_falls(bench: Mapping[str, Any], active: Mapping[str, Any] | None) -> list[str]:
    """Each gated score that fell, in words: ``the base model on formatValid by 0.25 (…)``,
    pooled and on each call purpose with at least ``MIN_PURPOSE_EXAMPLES`` counted
    (``… on formatValid for purpose response …``): a model that gained on one purpose
    cannot hide breaking another."""
    out: list[str] = []
    refs: list[tuple[str, str]] = [("baseline", "the base model")]
    if active is not None:
        refs.append(("active", f"the active model {active['id']}"))
    paired_run = active is not None and bench.get("activeModelId") == active["id"]
    purposes = bench.get("byPurpose") if isinstance(bench.get("byPurpose"), dict) else {}
    if len(purposes) < 2:  # one purpose is the pooled figure again
        purposes = {}
    for label, who in refs:
        paired = label != "active" or paired_run
        out += _paired_falls(bench, label, who, "") if paired else []
        for purpose, block in sorted(purposes.items()):
            if paired and isinstance(block, dict):
                out += _paired_falls(block, label, who, purpose)
        if not paired:
            for name in scores.GATED:
                fell = _unpaired_fall(bench, active, name)
                if fell:
                    out.append(f"{who} on {name} {fell}")
    return out


def _paired_falls(block: Mapping[str, Any], label: str, who: str, purpose: str) -> list[str]:
    """The gated scores of ``block`` (a benchmark, or one purpose of it) whose paired
    interval against ``label`` lies wholly below 0."""
    diffs = (block.get("differences") or {}).get(label)
    if not isinstance(diffs, dict):
        return []
    counted = block.get("counts") or {}
    where = f" for purpose {purpose}" if purpose else ""
    out = []
    for name in scores.GATED:
        d = diffs.get(name)
        few = purpose and (counted.get(name) or 0) < MIN_PURPOSE_EXAMPLES
        if not isinstance(d, dict) or few or d["high"] >= 0:
            continue
        mine = (block.get("scores") or {}).get(name)
        theirs = (block.get(label) or {}).get(name)
        out.append(
            f"{who} on {name}{where} by {-d['delta']:.2f} ({theirs:.2f} → {mine:.2f}, "
            f"95% interval of the change {d['low']:+.2f}…{d['high']:+.2f})"
        )
    return out


def _unpaired_fall(bench: Mapping[str, Any], active: Mapping[str, Any] | None, name: str) -> str:
    """Against the active model's own last benchmark (other examples): intervals apart."""
    theirs = (active or {}).get("benchmark")
    if not isinstance(theirs, dict):
        return ""
    mine_iv = ((bench.get("intervals") or {}).get("scores") or {}).get(name)
    their_iv = ((theirs.get("intervals") or {}).get("scores") or {}).get(name)
    mine = (bench.get("scores") or {}).get(name)
    their = (theirs.get("scores") or {}).get(name)
    if not (
        mine_iv and their_iv and isinstance(mine, float | int) and isinstance(their, float | int)
    ):
        return ""
    if mine_iv[1] < their_iv[0]:
        return (
            f"by {their - mine:.2f} ({their:.2f} → {mine:.2f}; 95% intervals "
            f"{their_iv[0]:.2f}…{their_iv[1]:.2f} and {mine_iv[0]:.2f}…{mine_iv[1]:.2f})"
        )
    return ""


# -- rollback ---------------------------------------------------------------------------------
def deactivate(settings: Settings, store: StateStore, body: Any = None) -> Deactivated:
    """Undo the last activation: the config it replaced comes back, the model is not active.

    The file comes back byte for byte (and with its permission bits) when it still holds
    exactly what the activation wrote; when something else changed it since, only the
    keys activation wrote are set back (or removed) and every other change is kept. The
    model active before that activation, if any and still registered, is marked active
    again, so the store names the model the restored config names. The file is replaced
    by one rename (old or new content, never a mix, whenever the process dies); a
    rollback cut short after the rename is finished by the next one.
    """
    v.body_object(body, ())
    config_path = Path(settings.agent_config)
    evals = EvalStore(store)
    with _config_lock(config_path) as real:
        with store.transaction() as conn:
            last = evals.last_open_activation(conn)
        if last is None:
            raise ConflictError("no activation to roll back: no model was activated")
        how = _restore(real, last)
        with store.transaction() as conn:
            evals.mark_rolled_back(last["seq"], conn)
            conn.execute("UPDATE models SET active = 0 WHERE active != 0")
            previous = last.get("previousActiveId")
            restored = previous if previous and store.get_model(previous, conn) else None
            if restored:
                store.update_model(restored, conn, active=True)
            store.emit(
                "model_deactivated",
                f"model {last['modelId']} deactivated: agent config restored ({how})",
                conn,
                modelId=last["modelId"],
                activeModelId=restored,
                restored=how,
            )
    return {
        "ok": True,
        "deactivatedModel": last["modelId"],
        "activeModelId": restored,
        "restored": how,
    }


def _restore(real: Path, last: Mapping[str, Any]) -> str:
    """Put the config back; says how (``exact`` or ``keys``)."""
    try:
        current = real.read_bytes()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise ConflictError(f"cannot read the agent config {real}: {exc.strerror or exc}") from None
    previous = last.get("previousConfig")
    if current == previous:
        return "exact"  # already back (a rollback killed after its rename)
    if current is not None and hashlib.sha256(current).hexdigest() == last["writtenSha256"]:
        if previous is None:
            real.unlink()
            fsync_dir(real.parent)
        else:
            _write(real, bytes(previous), int(last.get("previousMode") or NEW_FILE_MODE))
        return "exact"
    if current is None:
        raise ConflictError(
            f"the agent config {real} was removed since the activation; nothing to roll back into"
        )
    text = _decode(current, real)
    config = _parse(text, real)
    doc = JsonText(text)
    for dotted, was in (last.get("previousKeys") or {}).items():
        keys = tuple(dotted.split("."))
        if _put_back(config, keys, was):
            with contextlib.suppress(ValueError):
                if was.get("present"):
                    doc.set(keys, was.get("value"))
                else:
                    doc.delete(keys)
    data = _edited(raw_text=current, doc=doc, config=config)
    _write(real, data, stat.S_IMODE(real.stat().st_mode))
    return "keys"


def _put_back(config: JsonObject, keys: tuple[str, ...], was: Mapping[str, Any]) -> bool:
    """Set one written key back to its old value, or remove it if it was not there;
    False when there is nothing to do."""
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if child is None and key not in node:
            if not was.get("present"):
                return False  # nothing to remove
            child = node[key] = {}
        if not isinstance(child, dict):
            return False  # someone else reshaped it since: theirs to keep
        node = child
    if was.get("present"):
        node[keys[-1]] = was.get("value")
    elif keys[-1] in node:
        node.pop(keys[-1])
    else:
        return False
    return True


def _edited(*, raw_text: bytes, doc: JsonText, config: JsonObject) -> bytes:
    """The edited text, when it says exactly what ``config`` says (it always should);
    else ``config`` in the file's style, so a slip of the text editor never writes
    a wrong value. A byte-order mark the file had is kept."""
    bom = "\ufeff" if raw_text.startswith(b"\xef\xbb\xbf") else ""
    text = doc.text
    try:
        same = json.loads(text) == config
    except ValueError:
        same = False
    if not same:
        text = doc.style.dump(config)
    return (bom + text).encode("utf-8")


def _lookup(config: Mapping[str, Any], keys: tuple[str, ...]) -> KeyBefore:
    node: Any = config
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return {"present": False}
        node = node[key]
    return {"present": True, "value": node}


# -- the config file --------------------------------------------------------------------------
def update_agent_config(path: Path, provider: str, ollama_name: str | None) -> ConfigEdit:
    """Set the agent's model in its JSON config, atomically; caller holds the lock."""
    real = Path(os.path.realpath(path))  # a symlinked config (dotfile managers) stays a symlink
    try:
        raw = real.read_bytes()
    except FileNotFoundError:
        raw = None
    except OSError as exc:
        raise ConflictError(
            f"cannot read the agent config {path}: {exc.strerror or exc}; it was left untouched"
        ) from None

    if raw is None:
        config: JsonObject = {}
        mode = NEW_FILE_MODE
    else:
        config = _parse(_decode(raw, path), path)
        mode = stat.S_IMODE(real.stat().st_mode)

    changes: dict[tuple[str, ...], str] = {PRIMARY: provider}
    if ollama_name:
        changes |= {ENV_MODEL: ollama_name, ENV_PROVIDER: "ollama"}
    before = {".".join(k): _lookup(config, k) for k in changes}
    for keys, value in changes.items():
        _object_at(config, keys[:-1], path)[keys[-1]] = value
    if raw is None:
        data = JsonStyle().dump(config).encode("utf-8")
    else:
        doc = JsonText(_decode(raw, path))
        for keys, value in changes.items():
            doc.set(keys, value)
        data = _edited(raw_text=raw, doc=doc, config=config)
    _write(real, data, mode)
    return ConfigEdit(raw, None if raw is None else mode, data, before)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic replace keeping the mode (and the owner, when root edits another user's file)."""
    with atomic_file(path, mode=mode) as tmp:
        with contextlib.suppress(OSError):
            st = path.stat()
            if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                os.chown(tmp, st.st_uid, st.st_gid)
        tmp.write_bytes(data)


def _parse(text: str, path: Path) -> JsonObject:
    """The config as an object; anything else is a 409 that leaves the file alone."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ConflictError(
            f"the agent config {path} is not valid JSON ({exc}); it was left untouched"
        ) from None
    if not isinstance(config, dict):
        raise ConflictError(f"the agent config {path} is not a JSON object; it was left untouched")
    return config


def _decode(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConflictError(
            f"the agent config {path} is not UTF-8 text; it was left untouched"
        ) from None
    return text.removeprefix("\ufeff")


def _object_at(config: JsonObject, keys: tuple[str, ...], path: Path) -> JsonObject:
    """The object at ``keys``, created when missing; anything else there is a conflict."""
    node = config
    for i, key in enumerate(keys):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConflictError(
                f"{where} in the agent config {path} is not a JSON object; it was left untouched"
            )
        node = child
    return node
