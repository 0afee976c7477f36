"""The tracking paths as one plain function: request facts in, a Reply out, an event to ``gate.emit``.

    GET  {prefix}/o/{token}   200, a transparent 1x1 GIF that is never cached; records an open (email) or a
                              page view (pixel of a web page)
    GET  {prefix}/c/{token}   302 to the signed destination; records a click
    HEAD either               the same headers, records nothing (link scanners send HEAD)
    anything else             404 (counted), or 405 for other methods

A bad, forged, truncated or foreign token is a 404 with no event; an expired but authentic click link
still redirects (we signed its destination) and records nothing.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Protocol

from ._boundary import swallow
from .errors import BadToken, TokenExpired
from .events import tracking_event
from .facts import HeaderLookup
from .links import TrackingResult, location_header
from .tokens import Purpose

if TYPE_CHECKING:
    from .gate import Gate

# The smallest well-formed transparent GIF (42 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


class TrackingRequest(Protocol):
    """What answering a tracking path reads of its request: RequestFacts has it, and the ASGI shell makes a
    smaller record of its own (building RequestFacts was a fifth of a click's cost there)."""

    @property
    def route_path(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def headers(self) -> HeaderLookup: ...
    @property
    def client_addr(self) -> str | None: ...


class Reply:
    """A status, its headers and a body. A plain class: one is made for every click (a frozen dataclass
    cost a microsecond of it)."""

    __slots__ = ("_asgi_headers", "body", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        asgi_headers: tuple[tuple[bytes, bytes], ...] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self._asgi_headers = asgi_headers

    @property
    def asgi_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """The headers as the ASGI shell sends them (in a list of its own each time: middlewares outside
        may add to it), encoded once for the replies every request shares (the pixel, the 404)."""
        encoded = self._asgi_headers
        if encoded is None:
            encoded = self._asgi_headers = _asgi_encoded(self.headers)
        return encoded


def _asgi_encoded(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers)


def _plain(status: int, text: str, *extra: tuple[str, str]) -> Reply:
    body = text.encode()
    return Reply(
        status,
        (
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *extra,
        ),
        body,
    )


NOT_FOUND = _plain(404, "Not found\n")
METHOD_NOT_ALLOWED = _plain(405, "Method not allowed\n", ("Allow", "GET, HEAD"))
PIXEL = Reply(
    200,
    (
        ("Content-Type", "image/gif"),
        ("Content-Length", str(len(PIXEL_GIF))),
        ("Cache-Control", "no-store, no-cache, must-revalidate, private"),
        ("Pragma", "no-cache"),
        ("Expires", "0"),
    ),
    PIXEL_GIF,
)
_SEGMENTS: dict[str, Purpose] = {"/o/": "open", "/c/": "click"}


_REDIRECT_HEADERS = (("Cache-Control", "no-store"), ("Content-Length", "0"))  # after the Location
_ASGI_REDIRECT_HEADERS = _asgi_encoded(_REDIRECT_HEADERS)


def _redirect(result: TrackingResult) -> Reply:
    location = location_header(result.tracked_url or "")  # (ASCII: non-ASCII is percent-encoded)
    # Encoded as it is made: every click has one (its shared headers encoded once, above).
    return Reply(
        302,
        (("Location", location), *_REDIRECT_HEADERS),
        b"",
        ((b"location", location.encode("latin-1")), *_ASGI_REDIRECT_HEADERS),
    )


def answer(facts: TrackingRequest, visitor_code: str | None, gate: Gate) -> Reply:
    """The reply for any path under the prefix (the shell answers ``{prefix}/health`` first)."""
    prefix = gate.settings.path_prefix
    route = facts.route_path
    rest = route[len(prefix) :] if route.startswith(prefix + "/") else ""
    purpose = _SEGMENTS.get(rest[:3])
    if purpose is None:
        gate.count("not_found")
        return NOT_FOUND
    if facts.method not in ("GET", "HEAD"):
        return METHOD_NOT_ALLOWED
    # pytracking's append_slash links end in "/" (tokens never hold one): still the same link.
    token = rest[3:-1] if rest.endswith("/") else rest[3:]
    try:
        result = gate.links.decode_token(token, purpose, visitor=visitor_code)
    except TokenExpired as expired:
        gate.count("expired_token")
        if isinstance(expired.payload, TrackingResult) and purpose == "click":
            return _redirect(expired.payload)
        return PIXEL
    except BadToken:
        gate.count("bad_token")
        return NOT_FOUND
    if facts.method == "GET":
        _record(facts, visitor_code, gate, result)
    return _redirect(result) if purpose == "click" else PIXEL


def _record(facts: TrackingRequest, visitor_code: str | None, gate: Gate, result: TrackingResult) -> None:
    try:
        referrer, user_agent, ip, language = gate.client_values(facts)
        if result.kind == "pageview":
            # The pixel is requested with the page itself as its Referer: the page's own came in the token.
            referrer = result.referrer
        event = tracking_event(
            result.kind,
            visitor=visitor_code,
            url=result.tracked_url,
            title=result.title,
            metadata=result.metadata,
            event_id=result.event_id,
            timestamp=time.time(),
            referrer=referrer,
            user_agent=user_agent,
            ip=ip,
            language=language,
        )
        gate.emit(event)
    except Exception as error:  # the visitor still gets the pixel or the redirect
        gate.count("emit_failed")
        swallow("recording a tracking event", error)
