"""The ``privacy`` options of a build or preview, and the pass that applies them."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from ..errors import InputError
from .handles import Pseudonyms
from .redact import redact_frame

#: Keys of the ``privacy`` object, in the order messages list them.
PRIVACY_KEYS = ("redact", "anonymizeHandles")
#: Where a home keeps the key its handle pseudonyms are derived from.
KEY_FILE = "privacy.key"


def _flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if type(value) is not bool:
        raise InputError(f"privacy.{key} must be true or false, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class PrivacyOptions:
    """Redaction is on unless a body says ``"redact": false``; handles stay unless asked.

    ``handle_key`` (Python API only) overrides the home's key: the same handles then
    get other pseudonyms, e.g. for datasets that must not be linkable.
    """

    redact: bool = True
    anonymize_handles: bool = False
    handle_key: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_body(cls, value: Any) -> PrivacyOptions:
        """From the body's ``privacy`` value; InputError names the bad key."""
        if value is None:
            return cls()
        if isinstance(value, PrivacyOptions):
            return value
        if not isinstance(value, Mapping):
            raise InputError(
                "privacy must be an object such as "
                '{"redact": true, "anonymizeHandles": false}, got ' + type(value).__name__
            )
        unknown = sorted(str(k)[:40] for k in value if k not in PRIVACY_KEYS)
        if unknown:
            raise InputError(
                f"unknown privacy key(s) {', '.join(unknown)}; expected {', '.join(PRIVACY_KEYS)}"
            )
        return cls(_flag(value, "redact", True), _flag(value, "anonymizeHandles", False))

    def as_body(self) -> dict[str, bool]:
        return {"redact": self.redact, "anonymizeHandles": self.anonymize_handles}


def install_key(home: str | os.PathLike[str]) -> bytes:
    """The home's pseudonym key, made once (32 random bytes, readable by its owner only).

    Written to a temporary file and hard-linked into place, so of two first builds at
    once exactly one key wins and both use it; a half-written key is never read.
    """
    path = Path(home) / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    from ..atomic import fsync_dir, fsync_path

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        fsync_path(Path(tmp))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        fsync_dir(path.parent)
    finally:
        os.unlink(tmp)
    return path.read_bytes()


class PrivacyPass:
    """One build's privacy pass: redaction counts and handle map across its batches."""

    def __init__(self, options: PrivacyOptions, home: str | os.PathLike[str] | None) -> None:
        self.options = options
        self.counts: Counter[str] = Counter()
        self.handles: Pseudonyms | None = None
        if options.anonymize_handles:
            key = options.handle_key or (install_key(home) if home else b"milady-lab")
            self.handles = Pseudonyms(key)

    @property
    def active(self) -> bool:
        return self.options.redact or self.handles is not None

    def apply(
        self,
        df: pl.DataFrame,
        columns: Sequence[str],
        conversation: str,
        system: str | None = None,
    ) -> pl.DataFrame:
        """``df`` with its text ``columns`` redacted and, if asked, handles replaced (found
        in the ``conversation`` column, the agent's name read from ``system``)."""
        if self.options.redact:
            df, counts = redact_frame(df, columns)
            self.counts.update(counts)
        if self.handles is not None:
            self.handles.discover(df, conversation, system)
            df = self.handles.apply(df, columns)
        return df

    def redactions(self) -> dict[str, int]:
        """Hits per kind, in a stable order (most first, then by name)."""
        return dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
