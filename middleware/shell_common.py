"""What the WSGI and ASGI shells do alike: build settings, edit response headers, resolve the client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from werkzeug.http import parse_etags, quote_etag, unquote_etag

from ._boundary import swallow
from .identity import (
    COOKIE_CACHE_MAX_CHARS,
    Identity,
    Visitor,
    VisitorState,
    code_digits,
    refill_code_digits,
)
from .lookup import EMIT_KEY, STATE_KEY, VISITOR_KEY
from .settings import Settings

if TYPE_CHECKING:
    from .gate import Gate

OPT_OUT_HEADER = "x-trackgate"


def make_settings(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    if settings is None:
        return Settings(**overrides)
    return settings.replace(**overrides) if overrides else settings


def endpoint_visitor(identity: Identity, cookie_header: str | None, gpc: str | None) -> str | None:
    """The code a tracking request records its event under: a returning visitor's who consents, else None.
    A fault reading the cookies costs the event its visitor, never the pixel or the redirect."""
    if not cookie_header:  # (resolve would make a new visitor, who has no code to record yet)
        return None
    try:
        visitor = identity.resolve(cookie_header, "", gpc).visitor
    except Exception as error:
        swallow("visitor identity", error)
        return None
    return visitor.code if visitor.consent and not visitor.is_new else None


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


def rewritten_headers(headers: Sequence[tuple[str, str]], *, head: bool) -> list[tuple[str, str]]:
    """The headers of a page whose body is rewritten, or of the HEAD of one (``head``), which shows its GET's.

    Nothing may let a client join the app's bytes onto ours: the ETag turns weak (it no longer names these
    exact bytes; nginx's gzip does the same), so a Range request's If-Range never matches it; Last-Modified
    goes (If-Range with that date would match; nginx's sub_filter drops it too), and Accept-Ranges says none.
    A HEAD also loses the app's Content-Length: its GET has another one, or none when it streams.
    """
    edited = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "etag":
            edited.append((name, quote_etag(unquote_etag(value.strip())[0], weak=True)))
        elif lowered in ("last-modified", "accept-ranges") or (head and lowered == "content-length"):
            continue
        else:
            edited.append((name, value))
    edited.append(("Accept-Ranges", "none"))
    return edited


def revalidated_copy_headers(
    headers: Sequence[tuple[str, str]], if_none_match: str | None
) -> list[tuple[str, str]] | None:
    """The headers of a 304 that confirms a client's rewritten copy (it sent back the weak ETag it was given),
    else None. The app answers with its own strong ETag; a cache that takes a 304's headers in (browsers do)
    would then keep the rewritten bytes under the app's strong validator."""
    if not if_none_match:
        return None
    etag = content_type = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == "etag":
            etag = value
        elif lowered == "content-type":
            content_type = value
    # (A 304 rarely names its type; one that names another than HTML is of a body never rewritten, whose
    # tag a CDN may have weakened on its own.)
    if etag is None or (content_type is not None and not looks_like_html(content_type)):
        return None
    tag, weak = unquote_etag(etag.strip())
    if weak or not tag or not parse_etags(if_none_match).is_weak(tag):
        return None
    return rewritten_headers(headers, head=True)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: int) -> str | None:
    if trusted_proxies == 0 or not forwarded_for:
        return peer
    from .netaddr import client_address as through_proxies

    return through_proxies(peer, forwarded_for, trusted_proxies)


def visitor_cookie_parts(gate: Gate) -> list[str] | None:
    """What the compiled starts write a new visitor's Set-Cookie from: "<name>=", then what follows the code
    without and with consent. None, the fault logged, when the settings cannot make one: the Python code then
    says what is wrong, response by response."""
    identity = gate.identity
    try:
        return [gate.settings.cookie_name + "=", identity.cookie_suffix(False), identity.cookie_suffix(True)]
    except Exception as error:
        swallow("preparing the visitor cookie", error)
        return None


def compiled_visit_config(gate: Gate, param_marker: str | bytes, send_config: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the compiled starts need of a middleware (_asgi_send.c's V_* layout, in this order): the prefix,
    the visits identity.py decides without reading anything (see Identity.resolve), and the shell's send
    configuration. ``param_marker`` is "<visitor parameter>=" as the shell's query string holds it."""
    identity = gate.identity
    return (
        gate.prefix + "/",
        gate.prefix,
        identity.implicit,
        identity.always_consents,
        param_marker,
        code_digits,
        refill_code_digits,
        identity.returning_visitor,
        COOKIE_CACHE_MAX_CHARS,
        VisitorState,
        VisitorState.slots(),
        Visitor,
        STATE_KEY,
        VISITOR_KEY,
        EMIT_KEY,
        gate.emit,
        send_config,
    )
