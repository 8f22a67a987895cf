"""The shipped ``openapi.json``, served as is with this server's base URL.

The file is generated from ``milady_lab.api`` (``make openapi``); bodies are checked by
the same structs (``milady_lab.api.decode``), so what the document promises is what the
server takes and sends.
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def spec_bytes() -> bytes:
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


@functools.cache
def spec_for_base_url(base_url: str) -> bytes:
    """The spec as served under ``base_url`` (its paths are relative to that)."""
    doc = {**json.loads(spec_bytes()), "servers": [{"url": base_url.rstrip("/") or "/"}]}
    return json.dumps(doc, indent=1).encode()
