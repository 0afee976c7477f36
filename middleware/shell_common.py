"""What the WSGI and ASGI shells do alike: build settings, edit response headers, resolve the client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from werkzeug.http import quote_etag, unquote_etag

from .settings import Settings

OPT_OUT_HEADER = "x-trackgate"


def make_settings(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    if settings is None:
        return Settings(**overrides)
    return settings.replace(**overrides) if overrides else settings


def looks_like_html(content_type: str | None) -> bool:
    """Cheap first look so that non-HTML responses never pay for building request facts."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in HTML_TYPES


HTML_TYPES = ("text/html", "application/xhtml+xml")


def edit_headers(
    headers: list[tuple[str, str]], set_cookie: str | None
) -> tuple[list[tuple[str, str]], str | None]:
    """Remove our opt-out header (it is for us, not the client) and add our cookie.

    Returns a new header list (the app's is never mutated) and the Content-Type to judge rewriting by:
    None when there is none or the response opted out with ``X-Trackgate: off``.
    """
    content_type = None
    opted_out = False
    edited: list[tuple[str, str]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == OPT_OUT_HEADER:
            opted_out = opted_out or value.strip().lower() == "off"
            continue
        if lowered == "content-type":
            content_type = value
        edited.append((name, value))
    if set_cookie is not None:
        edited.append(("Set-Cookie", set_cookie))
    return edited, None if opted_out else content_type


def weak_etag(value: str) -> str:
    """The app's ETag, made weak for a body we rewrite: the tag no longer names these exact bytes (nginx's
    gzip does the same), so a Range request with If-Range can never splice the app's bytes onto ours."""
    tag, _ = unquote_etag(value.strip())
    return quote_etag(tag, weak=True)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: int) -> str | None:
    if trusted_proxies == 0 or not forwarded_for:
        return peer
    from .netaddr import client_address as through_proxies

    return through_proxies(peer, forwarded_for, trusted_proxies)
