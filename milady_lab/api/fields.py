"""Field types several bodies share: user-typed names, loopback URLs, calendar dates.

A leaf (imports nothing of milady-lab), so the job and dataset bodies, which live beside
the code that checks them, take the same types as the others. ``x-error`` is the
sentence a 400 uses when a value breaks the field's pattern.
"""

from __future__ import annotations

import datetime
from typing import Annotated

from msgspec import Meta

#: A name a user types: not blank, no control characters.
NAME_PATTERN = "^[^\\u0000-\\u001f\\u007f]*[^\\s\\u0000-\\u001f\\u007f][^\\u0000-\\u001f\\u007f]*$"
#: ``http(s)://`` on this machine (localhost, 127.0.0.1, [::1]) with an optional port.
LOOPBACK_URL_PATTERN = (
    "^https?://(localhost|127\\.0\\.0\\.1|\\[::1\\])"
    "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$"
)


def _name_meta(max_length: int, description: str | None = None) -> Meta:
    rule = f"must be a non-blank string without control characters, at most {max_length} characters"
    return Meta(
        min_length=1,
        max_length=max_length,
        pattern=NAME_PATTERN,
        description=description,
        extra_json_schema={"x-error": rule},
    )


#: A model, Ollama or provider name (at most 200 characters).
Name = Annotated[str, _name_meta(200)]
#: A base model: a Hugging Face id or a local folder (at most 1000 characters).
ModelName = Annotated[str, _name_meta(1000)]
#: A URL on this machine (Ollama's): the SSRF rule, as a pattern.
LoopbackUrl = Annotated[
    str,
    Meta(
        pattern=LOOPBACK_URL_PATTERN,
        extra_json_schema={
            "x-error": "must be an http:// or https:// URL on a loopback host "
            "(localhost, 127.0.0.1 or [::1])"
        },
    ),
]
#: A calendar day, ``YYYY-MM-DD``.
Day = Annotated[
    datetime.date,
    Meta(
        extra_json_schema={
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
            "x-error": "must be a date as YYYY-MM-DD",
        }
    ),
]
