"""Which address is the client's, and how it is masked before it leaves the process."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import EnvironBuilder

from trackgate.netaddr import anonymize_ip, client_address


@pytest.mark.parametrize(
    ("peer", "forwarded", "hops", "expected"),
    [
        ("10.0.0.2", None, 0, "10.0.0.2"),
        ("10.0.0.2", "203.0.113.9", 0, "10.0.0.2"),  # never trusted by default
        ("10.0.0.2", "203.0.113.9", 1, "203.0.113.9"),
        ("10.0.0.2", "198.51.100.1, 203.0.113.9", 1, "203.0.113.9"),  # the client may prepend lies
        ("10.0.0.2", "198.51.100.1, 203.0.113.9, 10.0.0.1", 2, "203.0.113.9"),
        ("10.0.0.2", "203.0.113.9", 2, "10.0.0.2"),  # fewer entries than trusted proxies: the peer
        ("10.0.0.2", "", 1, "10.0.0.2"),
        ("10.0.0.2", "unknown", 1, None),  # a proxy's "unknown" is not the proxy's own address
        ("10.0.0.2", "_hidden", 1, None),
        ("10.0.0.2", "203.0.113.9:4711", 1, "203.0.113.9"),
        ("10.0.0.2", "[2001:db8::1]:443", 1, "2001:db8::1"),
        ("10.0.0.2", " 2001:DB8::1 ", 1, "2001:db8::1"),
        ("10.0.0.2", "::ffff:203.0.113.9", 1, "203.0.113.9"),
        (None, None, 0, None),
        ("", None, 0, None),
        ("unix-socket", None, 0, None),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, hops: int, expected: str | None) -> None:
    assert client_address(peer, forwarded, hops) == expected


@given(
    addresses=st.lists(st.ip_addresses(v=4).map(str), min_size=0, max_size=5),
    hops=st.integers(0, 6),
)
def test_same_choice_as_werkzeug_proxy_fix(addresses: list[str], hops: int) -> None:
    seen: list[str | None] = []

    def app(environ: dict[str, str], start_response: object) -> list[bytes]:
        seen.append(environ.get("REMOTE_ADDR"))
        return []

    header = ", ".join(addresses)
    environ = EnvironBuilder(headers={"X-Forwarded-For": header} if header else {}).get_environ()
    environ["REMOTE_ADDR"] = "10.9.9.9"
    ProxyFix(app, x_for=hops)(environ, lambda *args: None)  # type: ignore[arg-type]
    assert client_address("10.9.9.9", header or None, hops) == seen[0]


@pytest.mark.parametrize(
    ("address", "level", "expected"),
    [
        ("203.0.113.99", 0, "203.0.113.99"),
        ("203.0.113.99", 1, "203.0.113.0"),
        ("198.51.100.7", 2, "198.51.0.0"),
        ("198.51.100.7", 3, "198.0.0.0"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", 1, "2001:db8:1234:5678::"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", 2, "2001:db8:1234::"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", 3, "2001:db8::"),
        ("::ffff:203.0.113.99", 1, "203.0.113.0"),
        ("not an address", 1, None),
        (None, 2, None),
    ],
)
def test_anonymize_ip(address: str | None, level: int, expected: str | None) -> None:
    assert anonymize_ip(address, level) == expected


@given(st.ip_addresses(), st.integers(1, 3))
def test_masked_addresses_stay_in_the_original_network(address: ipaddress._BaseAddress, level: int) -> None:
    masked = anonymize_ip(str(address), level)
    assert masked is not None
    kept = (32 - 8 * level) if address.version == 4 else {1: 64, 2: 48, 3: 32}[level]
    parsed = ipaddress.ip_address(masked)
    if address.version == 6 and address.ipv4_mapped is not None:  # type: ignore[attr-defined]
        assert parsed.version == 4
        return
    assert parsed in ipaddress.ip_network(f"{address}/{kept}", strict=False)
    assert int(parsed) & ((1 << (parsed.max_prefixlen - kept)) - 1) == 0


def test_asgi_joins_repeated_forwarded_for_lines_as_a_wsgi_server_does() -> None:
    from trackgate.requestfacts import from_scope

    scope = {
        "type": "http", "method": "GET", "scheme": "http", "path": "/", "query_string": b"",
        "client": ("10.0.0.9", 5000), "server": ("127.0.0.1", 8000),
        # A client's own X-Forwarded-For line, then the one the trusted proxy appended.
        "headers": [
            (b"host", b"a.example"), (b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-for", b"203.0.113.5")
        ],
    }
    assert from_scope(scope, 1).client_addr == "203.0.113.5"  # one trusted hop: the address that proxy saw
    assert from_scope(scope, 2).client_addr == "198.51.100.7"
    assert from_scope(scope, 1).headers.get("x-forwarded-for") == "198.51.100.7, 203.0.113.5"
