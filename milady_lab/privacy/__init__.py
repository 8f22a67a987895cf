"""Privacy: secrets and contacts out of every dataset, and optionally people's handles.

``PrivacyOptions`` is the ``privacy`` part of a build or preview body;
``PrivacyPass`` runs it over each batch of examples before de-duplication and
writing, and counts what it replaced per kind. See ``rules`` for what is redacted.
"""

from __future__ import annotations

from .options import PrivacyOptions, PrivacyPass, install_key
from .redact import redact_frame, redact_texts
from .rules import Rule, kinds, rules

__all__ = [
    "PrivacyOptions",
    "PrivacyPass",
    "Rule",
    "install_key",
    "kinds",
    "redact_frame",
    "redact_texts",
    "rules",
]
