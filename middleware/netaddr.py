"""Client addresses: which X-Forwarded-For entry to believe, and masking before an address leaves us.

    client_address("10.0.0.2", "203.0.113.9, 10.0.0.1", trusted_hops=2)   # -> "203.0.113.9"
    anonymize_ip("203.0.113.9", 1)                                        # -> "203.0.113.0"

Trust follows werkzeug's ProxyFix ``x_for``: with N trusted proxies the N-th entry from the right is the
client (each proxy appends the address it saw); with fewer entries than that, or none trusted, the peer.
"""

from __future__ import annotations

import ipaddress

# Matomo's levels: 1 byte of IPv4 goes with the interface half of IPv6 (/64), 2 with /48, 3 with /32.
_IPV6_KEPT_BITS = {1: 64, 2: 48, 3: 32}

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str | None) -> _Address | None:
    """An address from a header entry or peer: bare, ``[v6]``, ``[v6]:port`` or ``v4:port``."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: str | None, trusted_hops: int) -> str | None:
    """The client's address as trusted proxies report it, normalised; None when it is not an address.

    A trusted proxy may write "unknown" or an obfuscated name (RFC 7239): that gives None, never the
    proxy's own address.
    """
    if trusted_hops > 0 and forwarded_for:
        entries = [entry for entry in forwarded_for.split(",") if entry.strip()]
        if len(entries) >= trusted_hops:
            found = _parse(entries[-trusted_hops])
            return None if found is None else str(found)
    found = _parse(peer)
    return None if found is None else str(found)


def anonymize_ip(address: str | None, level: int) -> str | None:
    """The address with its last ``level`` IPv4 bytes zeroed (IPv6: only the first 64/48/32 bits kept)."""
    if address is None or level <= 0:
        return address
    parsed = _parse(address)
    if parsed is None:
        return None
    kept = 32 - 8 * min(level, 3) if parsed.version == 4 else _IPV6_KEPT_BITS[min(level, 3)]
    return str(ipaddress.ip_network((parsed, kept), strict=False).network_address)
