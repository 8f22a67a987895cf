"""The ollamaUrl loopback rule: every case reference.md lists, ours, and properties."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from milady_lab.errors import InputError
from milady_lab.models.handoff.loopback import RULE, SCHEME_RULE, check_loopback_url

ACCEPTED = {
    "http://localhost": "http://localhost",
    "http://localhost:11434": "http://localhost:11434",
    "http://localhost:11434/": "http://localhost:11434",
    "https://localhost:1": "https://localhost:1",
    "http://LOCALHOST:65535": "http://localhost:65535",
    "http://LocalHost": "http://localhost",
    "HTTP://localhost:11434": "http://localhost:11434",
    "http://127.0.0.1:11434": "http://127.0.0.1:11434",
    "http://127.0.0.1": "http://127.0.0.1",
    "http://127.255.255.255:8080": "http://127.255.255.255:8080",
    "http://127.0.0.0": "http://127.0.0.0",
    "https://127.10.20.30/": "https://127.10.20.30",
    "http://[::1]:11434": "http://[::1]:11434",
    "http://[::1]": "http://[::1]",
    "http://[0:0:0:0:0:0:0:1]:11434": "http://[::1]:11434",
    "http://[0000:0000:0000:0000:0000:0000:0000:0001]": "http://[::1]",
    "http://[::0001]": "http://[::1]",
    "http://[0::1]": "http://[::1]",
}

REJECTED = [
    # other names
    "http://localhost.:11434",
    "http://foo.localhost:11434",
    "http://127.0.0.1.nip.io:11434",
    "http://localhost.localdomain",
    "http://example.com",
    "http://ollama:11434",
    # encoded IPv4
    "http://2130706433:11434",
    "http://0x7f.1:11434",
    "http://0x7f000001",
    "http://127.1:11434",
    "http://127.0.1",
    "http://0177.0.0.1:11434",
    "http://127.0.0.01",
    "http://127.000.000.001",
    "http://127.0.0.1.",
    "http://127.0.0.256",
    "http://127.0.0",
    "http://127.0.0.1.1",
    # unspecified and other addresses
    "http://0.0.0.0:11434",
    "http://0:11434",
    "http://[::]:11434",
    "http://[::0]",
    "http://10.0.0.1:11434",
    "http://192.168.1.10",
    "http://128.0.0.1",
    "http://1.2.3.4",
    # IPv4-mapped / compatible IPv6 of 127.0.0.1
    "http://[::ffff:127.0.0.1]:11434",
    "http://[::ffff:7f00:1]",
    "http://[::127.0.0.1]",
    "http://[64:ff9b::127.0.0.1]",
    # IPv6 forms
    "http://::1:11434",
    "http://[::1",
    "http://::1]",
    "http://[::2]",
    "http://[fe80::1]",
    "http://[::1%lo]:11434",
    "http://[::1%25lo]:11434",
    "http://[::1%1]",
    "http://[[::1]]",
    "http://[localhost]",
    "http://[127.0.0.1]",
    # userinfo
    "http://user@localhost:11434",
    "http://user:pass@localhost:11434",
    "http://@localhost",
    "http://evil.com@localhost",
    "http://localhost@evil.com",
    "http://localhost:11434@evil.com",
    # backslashes
    "http://localhost\\@evil.com",
    "http:\\\\localhost",
    "http://localhost\\",
    "http://evil.com\\.localhost",
    # whitespace and control characters
    " http://localhost",
    "http://localhost ",
    "http://local host",
    "http://localhost:11434\n",
    "http://localhost\t:11434",
    "http://localhost\x00",
    "http://local\x00host",
    "http://localhost\r\nHost: evil",
    "http://localhost\x7f",
    # non-ASCII
    "http://lоcalhost",  # Cyrillic o
    "http://localhost\u3002",
    "http://127.0.0.1\uff0e",
    "http://ｌｏｃａｌｈｏｓｔ",
    "http://\u0661\u0662\u0667.0.0.1",
    # bad ports
    "http://localhost:0",
    "http://localhost:65536",
    "http://localhost:99999",
    "http://localhost:",
    "http://localhost:-1",
    "http://localhost:+80",
    "http://localhost:080",
    "http://localhost:11434:11434",
    "http://localhost:1e3",
    "http://localhost:0x50",
    "http://localhost:123456",
    # other shapes
    "//localhost:11434",
    "http:/localhost",
    "http:localhost",
    "http://",
    "http://:11434",
    "",
    "localhost",
    "127.0.0.1",
    # path, query, fragment
    "http://localhost:11434/api",
    "http://localhost:11434//",
    "http://localhost/../",
    "http://localhost?x=1",
    "http://localhost#frag",
    "http://localhost:11434/?a",
    "http://localhost%2eevil.com",
    "http://%6cocalhost",
    "http://localhost" + "/" * 300,
]


@pytest.mark.parametrize("url", sorted(ACCEPTED))
def test_accepted(url: str) -> None:
    assert check_loopback_url(url) == ACCEPTED[url]


#: Other schemes: refused in the agent's words (milady-ai/milady src/api/training-routes.ts).
OTHER_SCHEMES = [
    "ftp://localhost",
    "file://localhost/etc/passwd",
    "file:///etc/passwd",
    "ws://localhost:11434",
    "gopher://127.0.0.1",
    "javascript:alert(1)",
    "localhost:11434",  # "localhost:" reads as a scheme, to the agent's URL parser too
    "FILE://user:secret@localhost",
]


@pytest.mark.parametrize("url", REJECTED)
def test_rejected_names_the_rule(url: str) -> None:
    with pytest.raises(InputError) as info:
        check_loopback_url(url)
    assert RULE in info.value.message
    assert "loopback host" in info.value.message  # what the agent's own test looks for
    assert info.value.status == 400


@pytest.mark.parametrize("url", OTHER_SCHEMES)
def test_other_schemes_get_the_agents_message(url: str) -> None:
    with pytest.raises(InputError) as info:
        check_loopback_url(url)
    assert info.value.message == SCHEME_RULE == "ollamaUrl must use http:// or https://"


def test_rejection_never_echoes_the_url() -> None:
    with pytest.raises(InputError) as info:
        check_loopback_url("http://admin:s3cret-token@localhost:11434")
    assert "s3cret-token" not in info.value.message


@pytest.mark.parametrize("value", [None, 11434, b"http://localhost", ["http://localhost"], {}])
def test_non_strings_rejected(value: object) -> None:
    with pytest.raises(InputError):
        check_loopback_url(value)


_octet = st.integers(0, 255)


@settings(max_examples=300, deadline=None)
@given(
    _octet,
    _octet,
    _octet,
    st.one_of(st.none(), st.integers(1, 65535)),
    st.sampled_from(["http", "https"]),
)
def test_every_loopback_dotted_quad_accepted(
    b: int, c: int, d: int, port: int | None, scheme: str
) -> None:
    url = f"{scheme}://127.{b}.{c}.{d}" + (f":{port}" if port else "")
    assert check_loopback_url(url) == url


def _url_for(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"http://[{addr}]:11434" if addr.version == 6 else f"http://{addr}:11434"


def _is_loopback_per_rule(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if addr.version == 4:
        return addr in ipaddress.IPv4Network("127.0.0.0/8")
    return addr == ipaddress.IPv6Address("::1")


@settings(max_examples=500, deadline=None)
@given(st.ip_addresses().filter(lambda a: not _is_loopback_per_rule(a)))
def test_every_non_loopback_address_rejected(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    for url in (_url_for(addr), f"http://{addr}", f"http://[{addr}]"):
        with pytest.raises(InputError):
            check_loopback_url(url)


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=6).filter(lambda a: a != ipaddress.IPv6Address("::1")))
def test_exploded_ipv6_non_loopback_rejected(addr: ipaddress.IPv6Address) -> None:
    with pytest.raises(InputError):
        check_loopback_url(f"http://[{addr.exploded}]")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_ipv4_mapped_addresses_rejected(n: int) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ipaddress.IPv4Address(n)}")
    with pytest.raises(InputError):
        check_loopback_url(f"http://[{mapped}]")


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="htps:/[]@.:%0123456789abcdefxlocaLH\\ \t"),
        st.builds(lambda s: "http://" + s, st.text()),
        st.builds(lambda s: "http://localhost" + s, st.text()),
        st.builds(lambda s: "http://[" + s + "]", st.text()),
    )
)
def test_arbitrary_text_only_raises_input_error(text: str) -> None:
    try:
        result = check_loopback_url(text)
    except InputError:
        return
    # Anything accepted must re-check to itself and be one of the allowed shapes.
    assert check_loopback_url(result) == result
    m = re.fullmatch(r"https?://(localhost|\[::1\]|[0-9.]+)(?::[0-9]+)?", result)
    assert m is not None
    host = m[1]
    assert host in ("localhost", "[::1]") or ipaddress.IPv4Address(host) in ipaddress.IPv4Network(
        "127.0.0.0/8"
    )
