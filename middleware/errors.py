"""One exception hierarchy for trackgate; each error carries its context as attributes.

    TrackgateError
    ├── ConfigError      a setting could not be parsed (name, value — secrets masked)
    ├── BadURL           a destination that must not be encoded in a link (url, reason)
    └── BadToken         a tracking token that does not decode (reason)
        ├── ForeignToken signed with a key we do not know, or for another purpose
        └── TokenExpired authentic but past its expiry (payload kept for the redirect)
"""

from __future__ import annotations

from typing import Any


class TrackgateError(Exception):
    """Base of every error trackgate raises on purpose."""


class ConfigError(TrackgateError, ValueError):
    def __init__(self, name: str, value: str | None, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        shown = "" if value is None else f" = {value!r}"
        super().__init__(f"{name}{shown}: {reason}")


class BadURL(TrackgateError, ValueError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot track {url[:80]!r}: {reason}")


class BadToken(TrackgateError, ValueError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ForeignToken(BadToken):
    """Well formed, but not signed by any of our keys or signed for another purpose."""


class TokenExpired(BadToken):
    def __init__(self, reason: str, payload: Any = None) -> None:
        super().__init__(reason)
        # Kept so an authentic but expired click link can still redirect to its signed destination.
        self.payload = payload
