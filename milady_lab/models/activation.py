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
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .. import validation as v
from ..config import Settings
from ..errors import ConflictError
from ..state import StateStore, now_ms

LOCK_TIMEOUT_S = 30.0
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700


def activate(
    settings: Settings, store: StateStore, model: Mapping[str, Any], body: Any = None
) -> dict[str, Any]:
    """Make ``model`` the agent's model and the only active one."""
    fields = v.body_object(body, ("providerModel",))
    provider = v.text(fields.get("providerModel"), "providerModel", max_length=200)
    ollama_name = model.get("ollamaName")
    if provider is None:
        if not ollama_name:
            raise ConflictError(
                f"model {model['id']} is not imported into Ollama: import the model into "
                "Ollama first or pass providerModel"
            )
        provider = f"ollama/{ollama_name}"

    config_path = Path(settings.agent_config)
    lock_path = Path(str(config_path) + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
        lock = FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S)
        with lock:
            _remove_stale_temps(Path(os.path.realpath(config_path)))
            update_agent_config(config_path, provider, ollama_name or None)
            activated_at = now_ms()
            with store.transaction() as conn:
                conn.execute(
                    "UPDATE models SET active = 0 WHERE active != 0 AND id != ?", (model["id"],)
                )
                store.update_model(
                    model["id"], conn, active=True, providerModel=provider, activatedAt=activated_at
                )
                store.emit(
                    "model_activated",
                    f"model {model['id']} is now the agent's model ({provider})",
                    conn,
                    modelId=model["id"],
                    providerModel=provider,
                )
    except Timeout:
        raise ConflictError(
            f"another activation holds {lock_path}; try again when it has finished"
        ) from None
    except OSError as exc:
        raise ConflictError(
            f"cannot write the agent config {config_path}: {exc.strerror or exc}"
        ) from None
    return {"ok": True, "activeModel": provider}


def update_agent_config(path: Path, provider: str, ollama_name: str | None) -> None:
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

    model_cfg = _object_at(config, ("agents", "defaults", "model"), path)
    model_cfg["primary"] = provider
    if ollama_name:
        env = _object_at(config, ("env",), path)
        env["OLLAMA_MODEL"] = ollama_name
        env["AGENT_LLM_PROVIDER"] = "ollama"
    _atomic_write(real, style.dump(config).encode("utf-8"), mode, create_parent=raw is None)


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


def _remove_stale_temps(path: Path) -> None:
    """Remove the temp files of activations killed before their rename.

    Only names ``tempfile.mkstemp`` gives in ``_atomic_write``; the caller holds the
    lock, so no live activation is writing one.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            if pattern.fullmatch(entry.name) and entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()


def _atomic_write(path: Path, data: bytes, mode: int, *, create_parent: bool) -> None:
    """Temp file in the same folder, fsync, rename over, fsync the folder."""
    folder = path.parent
    if create_parent:
        folder.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            with contextlib.suppress(OSError):
                # Keep the owner when root edits another user's file.
                st = path.stat()
                if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
