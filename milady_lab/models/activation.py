"""Activate a model: point the agent's config at it and mark it the one active model.

The agent's config is the user's file (``MILADY_LAB_AGENT_CONFIG``, by default
``~/.milady/milady.json``), so the edit is as small as it can be: only
``agents.defaults.model.primary`` and, for an Ollama-imported model,
``env.OLLAMA_MODEL`` and ``env.AGENT_LLM_PROVIDER`` change. Every other key and its
order, the file's permission bits and its formatting style (indent, separators,
ASCII escaping, trailing newline) are kept. A file that is not valid JSON, or whose
``agents``/``defaults``/``model``/``env`` is not an object, is left untouched (409).

Order and crashes: under a lock file (``<config>.lock``) held across both steps, the
config is written first (temporary file in the same folder, fsync, ``os.replace``,
fsync of the folder), then one store transaction makes this model the only active
one. A crash between the two leaves the new config with the old active model in the
store; the agent then already uses the new model and the next activation puts the
store right. A crash before the rename leaves the old file (plus, at worst, a stray
``.milady.json.*.tmp`` file).

Holding the lock across both steps is what keeps two racing activations consistent:
the config and the store always name the same model afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .. import validation as v
from ..atomic import atomic_file, fsync_dir, remove_stale
from ..config import Settings
from ..errors import ConflictError, InputError, MiladyLabError
from ..state import EvalStore, StateStore, now_ms
from . import scores

LOCK_TIMEOUT_S = 30.0
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
#: The keys activation writes, as paths into the config.
PRIMARY = ("agents", "defaults", "model", "primary")
ENV_MODEL = ("env", "OLLAMA_MODEL")
ENV_PROVIDER = ("env", "AGENT_LLM_PROVIDER")


@dataclass(frozen=True)
class ConfigEdit:
    """What one config write replaced: enough to put it back."""

    previous: bytes | None  # the file's bytes, None when there was no file
    mode: int | None
    written: bytes
    keys: dict[str, Any]  # "a.b.c" -> {"present": bool, "value": ...} before the write


def activate(
    settings: Settings, store: StateStore, model: Mapping[str, Any], body: Any = None
) -> dict[str, Any]:
    """Make ``model`` the agent's model and the only active one, if the gate lets it."""
    fields = v.body_object(body, ("providerModel", "force"))
    provider = v.text(fields.get("providerModel"), "providerModel", max_length=200)
    force = _flag(fields.get("force"), "force")
    ollama_name = model.get("ollamaName")
    if provider is None:
        if not ollama_name:
            raise ConflictError(
                f"model {model['id']} is not imported into Ollama: import the model into "
                "Ollama first or pass providerModel"
            )
        provider = f"ollama/{ollama_name}"
    gate = {"forced": True} if force else check_gate(settings, store, model)

    config_path = Path(settings.agent_config)
    evals = EvalStore(store)
    with _config_lock(config_path):
        remove_stale(
            Path(os.path.realpath(config_path)).parent, Path(os.path.realpath(config_path)).name
        )
        edit = update_agent_config(config_path, provider, ollama_name or None)
        activated_at = now_ms()
        with store.transaction() as conn:
            before = conn.execute("SELECT id FROM models WHERE active != 0").fetchone()
            conn.execute(
                "UPDATE models SET active = 0 WHERE active != 0 AND id != ?", (model["id"],)
            )
            store.update_model(
                model["id"], conn, active=True, providerModel=provider, activatedAt=activated_at
            )
            evals.add_activation(
                {
                    "modelId": model["id"],
                    "providerModel": provider,
                    "activatedAt": activated_at,
                    "configPath": str(config_path),
                    "previousConfig": edit.previous,
                    "previousMode": edit.mode,
                    "writtenSha256": hashlib.sha256(edit.written).hexdigest(),
                    "previousKeys": edit.keys,
                    "previousActiveId": None if before is None else before["id"],
                    "forced": force,
                    "gate": gate,
                },
                conn,
            )
            store.emit(
                "model_activated",
                f"model {model['id']} is now the agent's model ({provider})"
                + (" (gate overridden with force)" if force else ""),
                conn,
                modelId=model["id"],
                providerModel=provider,
                forced=force,
            )
    return {"ok": True, "activeModel": provider}


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise InputError(f"{name} must be true or false")


@contextlib.contextmanager
def _config_lock(config_path: Path) -> Iterator[None]:
    """The lock every config writer holds; its problems become 409s naming the file."""
    lock_path = Path(str(config_path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
        with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise ConflictError(
            f"another activation holds {lock_path}; try again when it has finished"
        ) from None
    except OSError as exc:
        raise ConflictError(
            f"cannot write the agent config {config_path}: {exc.strerror or exc}"
        ) from None


# -- the gate ---------------------------------------------------------------------------------
def check_gate(settings: Settings, store: StateStore, model: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse (409) a model that does the agent's job worse than the active model or the base.

    The model's last benchmark is run first when it has none. A gated score
    (``formatValid``, ``actionAccuracy``) "fell" when the paired 95 % interval of the
    difference lies wholly below 0; against an active model scored in another run,
    when the two intervals do not overlap. Returns what was compared, for the history.
    """
    from .benchmark import run_benchmark

    bench = model.get("benchmark")
    if not isinstance(bench, dict) or not isinstance(bench.get("scores"), dict):
        try:
            bench = run_benchmark(settings, store, model, None)
        except MiladyLabError as exc:
            raise ConflictError(
                f"model {model['id']} has no benchmark and it could not be run ({exc.message}); "
                "benchmark it, or activate with force to skip the check"
            ) from None
    active = next((m for m in store.list_models() if m.get("active")), None)
    if active is not None and active["id"] == model["id"]:
        active = None
    falls = gate_falls(bench, active)
    if falls:
        raise ConflictError(
            f"model {model['id']} is worse than "
            + "; ".join(falls)
            + " (beyond the 95% interval): not activated; activate with force to override"
        )
    return {
        "benchmarkCompletedAt": bench.get("completedAt"),
        "againstActive": (active or {}).get("id"),
    }


def gate_falls(bench: Mapping[str, Any], active: Mapping[str, Any] | None) -> list[str]:
    """Each gated score that fell, in words: ``the base model on formatValid by 0.25 (…)``."""
    out: list[str] = []
    diffs = bench.get("differences") if isinstance(bench.get("differences"), dict) else {}
    refs: list[tuple[str, str]] = [("baseline", "the base model")]
    if active is not None:
        refs.append(("active", f"the active model {active['id']}"))
    for label, who in refs:
        paired = (
            diffs.get(label)
            if label != "active" or bench.get("activeModelId") == (active or {}).get("id")
            else None
        )
        for name in scores.GATED:
            d = (paired or {}).get(name) if isinstance(paired, dict) else None
            if isinstance(d, dict):
                if d["high"] < 0:
                    mine = (bench.get("scores") or {}).get(name)
                    theirs = (bench.get(label) or {}).get(name)
                    out.append(
                        f"{who} on {name} by {-d['delta']:.2f} ({theirs:.2f} → {mine:.2f}, "
                        f"95% interval of the change {d['low']:+.2f}…{d['high']:+.2f})"
                    )
            elif label == "active" and paired is None:
                fell = _unpaired_fall(bench, active, name)
                if fell:
                    out.append(f"{who} on {name} {fell}")
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
def deactivate(settings: Settings, store: StateStore, body: Any = None) -> dict[str, Any]:
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
    with _config_lock(config_path):
        real = Path(os.path.realpath(config_path))
        remove_stale(real.parent, real.name)
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
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ConflictError(
            f"the agent config {real} is not valid JSON ({exc}); it was left untouched"
        ) from None
    if not isinstance(config, dict):
        raise ConflictError(f"the agent config {real} is not a JSON object; it was left untouched")
    for dotted, was in (last.get("previousKeys") or {}).items():
        _put_back(config, tuple(dotted.split(".")), was)
    _write(
        real, JsonStyle.detect(text).dump(config).encode("utf-8"), stat.S_IMODE(real.stat().st_mode)
    )
    return "keys"


def _put_back(config: dict[str, Any], keys: tuple[str, ...], was: Mapping[str, Any]) -> None:
    """Set one written key back to its old value, or remove it if it was not there."""
    node = config
    for key in keys[:-1]:
        child = node.get(key)
        if child is None and key not in node:
            if not was.get("present"):
                return  # nothing to remove
            child = node[key] = {}
        if not isinstance(child, dict):
            return  # someone else reshaped it since: theirs to keep
        node = child
    if was.get("present"):
        node[keys[-1]] = was.get("value")
    else:
        node.pop(keys[-1], None)


def _lookup(config: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
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
        config: dict[str, Any] = {}
        style = JsonStyle()
        mode = NEW_FILE_MODE
    else:
        text = _decode(raw, path)
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise ConflictError(
                f"the agent config {path} is not valid JSON ({exc}); it was left untouched"
            ) from None
        if not isinstance(config, dict):
            raise ConflictError(
                f"the agent config {path} is not a JSON object; it was left untouched"
            )
        style = JsonStyle.detect(text)
        mode = stat.S_IMODE(real.stat().st_mode)

    written_keys = [PRIMARY, *((ENV_MODEL, ENV_PROVIDER) if ollama_name else ())]
    before = {".".join(k): _lookup(config, k) for k in written_keys}
    model_cfg = _object_at(config, PRIMARY[:-1], path)
    model_cfg["primary"] = provider
    if ollama_name:
        env = _object_at(config, ("env",), path)
        env["OLLAMA_MODEL"] = ollama_name
        env["AGENT_LLM_PROVIDER"] = "ollama"
    data = style.dump(config).encode("utf-8")
    if raw is None:
        real.parent.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
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


def _decode(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConflictError(
            f"the agent config {path} is not UTF-8 text; it was left untouched"
        ) from None
    return text.removeprefix("\ufeff")


def _object_at(config: dict[str, Any], keys: tuple[str, ...], path: Path) -> dict[str, Any]:
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


@dataclass(frozen=True)
class JsonStyle:
    """How a JSON file is laid out, so a rewrite looks like the user's own file."""

    indent: int | str | None = 2  # spaces, "\t", or None for one line
    item_sep: str = ","
    key_sep: str = ": "
    ensure_ascii: bool = False
    trailing_newline: bool = True

    @classmethod
    def detect(cls, text: str) -> JsonStyle:
        """The style that reproduces ``text`` exactly when there is one, else a close guess."""
        body = text.removeprefix("\ufeff").strip()
        trailing = text.endswith("\n")
        indent: int | str | None = None
        m = re.search(r"[\[{][ \t]*\r?\n([ \t]*)\S", body)
        if m is not None:
            ws = m.group(1)
            indent = "\t" if ws.startswith("\t") else len(ws)
        obj = json.loads(body)
        candidates = [
            cls(indent, item, key, ascii_, trailing)
            for item in ((",",) if indent is not None else (",", ", "))
            for key in (": ", ":", " : ")
            for ascii_ in (False, True)
        ]
        for style in candidates:
            if style.dump(obj).rstrip("\n") == body:
                return style
        # Hand-edited files: the separators seen first, raw non-ASCII kept as it is.
        km = re.search(r'"(?:[^"\\]|\\.)*"(\s*:\s*)', body)
        key_sep = km.group(1).replace("\n", "").replace("\t", " ") if km else ": "
        item_sep = "," if indent is not None or not re.search(r",\s", body) else ", "
        ensure_ascii = not any(ord(c) > 127 for c in body) and "\\u" in body
        return cls(indent, item_sep, key_sep, ensure_ascii, trailing)

    def dump(self, obj: Any) -> str:
        out = json.dumps(
            obj,
            indent=self.indent,
            separators=(self.item_sep, self.key_sep),
            ensure_ascii=self.ensure_ascii,
        )
        return out + ("\n" if self.trailing_newline else "")
