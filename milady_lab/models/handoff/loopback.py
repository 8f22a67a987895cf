"""The loopback-only rule for URLs milady-lab sends a model to (``ollamaUrl``).

An import uploads the user's adapter and tells the server what to build, so the URL
must never point anywhere but this machine. URL parsers (``urllib``, ``httpx``) are
lenient on purpose — they accept ``127.1``, ``0x7f.1``, userinfo, backslashes and
zone ids — so the URL is matched here by hand against a strict grammar and the host
checked with ``ipaddress``. The rule (reference.md):

* scheme ``http`` or ``https`` (any other scheme is refused with the agent's own words,
  ``SCHEME_RULE``; every other refusal names the rule, which says "loopback host" as the
  agent's refusal does, so the agent's client shows the same reason);
* host exactly ``localhost`` (any case), an IPv4 literal in 127.0.0.0/8 written as a
  plain dotted quad (four decimal octets, no leading zeros), or ``[::1]`` in any
  spelling ``ipaddress`` reads as exactly ``::1`` (no zone id, not IPv4-mapped);
* an optional port 1-65535 (decimal, no leading zeros);
* nothing else: no userinfo, path other than ``/``, query or fragment; no whitespace,
  control characters, backslashes or non-ASCII anywhere.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ...errors import InputError

RULE = (
    "ollamaUrl must target a loopback host (localhost, 127.x.x.x or [::1]): http:// or "
    "https://, the host, an optional port and no path"
)
#: The refusal of any other scheme, word for word the agent's (``training-routes.ts``).
SCHEME_RULE = "ollamaUrl must use http:// or https://"
MAX_LENGTH = 200

# scheme :// host [: port] [/]  — host is a bracketed IPv6 literal or a reg-name/IPv4.
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[^\]]*\]|[^/:\[\]?#]*)"
    r"(?::(?P<port>[^/?#]*))?"
    r"(?P<rest>.*)",
    re.DOTALL,
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def _reject(reason: str) -> InputError:
    # The URL itself is never echoed: it may carry userinfo (a password or token).
    return InputError(f"{RULE} ({reason})")


def check_loopback_url(url: Any) -> str:
    """The URL normalised (lower-case scheme and host, no trailing slash), or InputError.

    Never raises anything else, whatever ``url`` is.
    """
    if not isinstance(url, str):
        raise _reject("it must be a string")
    if not url or len(url) > MAX_LENGTH:
        raise _reject(f"it must be 1 to {MAX_LENGTH} characters")
    if not url.isascii():
        raise _reject("non-ASCII characters are not allowed")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise _reject("whitespace and control characters are not allowed")
    if "\\" in url:
        raise _reject("backslashes are not allowed")
    scheme_part = _SCHEME.match(url)
    if scheme_part is not None and scheme_part[1].lower() not in ("http", "https"):
        raise InputError(SCHEME_RULE)  # file:, ftp:, javascript:, ... (the URL not echoed)
    if "@" in url:
        raise _reject("user names and passwords are not allowed")
    m = _URL.fullmatch(url)
    if m is None:
        raise _reject("it must look like http://host:port")
    scheme = m["scheme"].lower()
    if scheme not in ("http", "https"):
        raise _reject("the scheme must be http or https")
    if m["rest"] not in ("", "/"):
        raise _reject("a path, query or fragment is not allowed")
    host = _loopback_host(m["host"])
    port = m["port"]
    if port is not None and not (_PORT.fullmatch(port) and 1 <= int(port) <= 65535):
        raise _reject("the port must be a number from 1 to 65535")
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _loopback_host(host: str) -> str:
    """The host in normal form when it is one the rule accepts."""
    if host.lower() == "localhost":
        return "localhost"
    if host.startswith("["):
        inner = host[1:-1]
        if "%" in inner:
            raise _reject("IPv6 zone ids are not allowed")
        if not _IPV6_CHARS.fullmatch(inner):
            raise _reject("the IPv6 host must be ::1")
        try:
            addr = ipaddress.IPv6Address(inner)
        except ValueError:
            raise _reject("the IPv6 host must be ::1") from None
        if addr != _LOOPBACK_V6 or addr.scope_id is not None:
            raise _reject("the IPv6 host must be ::1")
        return "[::1]"
    if _DOTTED_QUAD.fullmatch(host):
        if ipaddress.IPv4Address(host) in _LOOPBACK_V4:
            return host
        raise _reject("the IPv4 host must be in 127.0.0.0/8")
    raise _reject("the host must be localhost, 127.x.x.x or [::1]")
