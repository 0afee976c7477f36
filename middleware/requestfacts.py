"""RequestFacts from what a server hands over: a WSGI environ or an ASGI scope.

The shells build them for the tracking paths and for pages they rewrite; ``trackgate.record`` and its
siblings build them for the events an app records with a request in hand.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Container, Iterable, Mapping
from typing import Any

from werkzeug.datastructures import EnvironHeaders, LanguageAccept
from werkzeug.http import parse_accept_header

from .facts import RequestFacts
from .shell_common import client_address

_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8}){0,7}")


def preferred_language(header: str) -> str | None:
    """The preferred language tag (BCP 47 shape only: a header is client input, "*" says nothing)."""
    # Browsers send a few hundred different headers between them, and parsing one costs several
    # microseconds on every click and page view: read each once (bounded in count and in length).
    return _cached_language(header) if len(header) <= _CACHED_HEADER_CHARS else _language(header)


def _language(header: str) -> str | None:
    best = parse_accept_header(header, LanguageAccept).best
    return best if best and _LANGUAGE_TAG.fullmatch(best) else None


_CACHED_HEADER_CHARS = 256
_cached_language = functools.lru_cache(maxsize=1024)(_language)


def from_environ(environ: Mapping[str, Any], trusted_proxies: int) -> RequestFacts:
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or _environ_host(environ, scheme)
    peer = environ.get("REMOTE_ADDR")
    client = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR"), trusted_proxies)
    root = _native_path(environ.get("SCRIPT_NAME", ""))
    path = root + _native_path(environ.get("PATH_INFO", ""))
    return RequestFacts(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        scheme=scheme,
        host=host,
        path=path,
        query_string=environ.get("QUERY_STRING", ""),
        headers=EnvironHeaders(environ),  # type: ignore[arg-type]
        client_addr=client,
        root_path=root,
    )


def _native_path(value: str) -> str:
    """A WSGI path (its bytes as latin-1, PEP 3333) as ASGI gives it: the bytes read as UTF-8."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a server that decoded it already
        return value


def _environ_host(environ: Mapping[str, Any], scheme: str) -> str:
    name, port = environ.get("SERVER_NAME", "localhost"), str(environ.get("SERVER_PORT", ""))
    default = "443" if scheme == "https" else "80"
    return name if not port or port == default else f"{name}:{port}"


def header_fields(
    raw_headers: Iterable[tuple[bytes, bytes]], wanted: Container[str] | None = None
) -> dict[str, str]:
    """An ASGI scope's header fields by lower-case name (only the ``wanted`` ones when given), repeated lines
    joined with ", " as HTTP says (and as WSGI servers do), so X-Forwarded-For keeps every hop. A plain dict:
    a missing header costs a lookup, where starlette's Headers.get raises and catches a KeyError."""
    fields: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        name = raw_name.decode("latin-1").lower()
        if wanted is not None and name not in wanted:
            continue
        value = raw_value.decode("latin-1")
        fields[name] = fields[name] + ", " + value if name in fields else value
    return fields


def from_scope(scope: Mapping[str, Any], trusted_proxies: int) -> RequestFacts:
    headers = header_fields(scope["headers"])
    scheme = scope.get("scheme", "http")
    host = headers.get("host") or _scope_host(scope, scheme)
    path = scope["path"]
    root = scope.get("root_path", "").rstrip("/")
    if root and not path.startswith(root):
        path = root + path
    return RequestFacts(
        method=scope.get("method", "GET").upper(),
        scheme=scheme,
        host=host,
        path=path,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        client_addr=scope_client_addr(scope, headers, trusted_proxies),
        root_path=root,
    )


def scope_client_addr(scope: Mapping[str, Any], headers: Mapping[str, str], trusted_proxies: int) -> str | None:
    """The client's address: the scope's peer, or X-Forwarded-For's entry as the trusted proxies say
    (``headers`` as header_fields reads them)."""
    client = scope.get("client")
    forwarded = headers.get("x-forwarded-for") if trusted_proxies else None
    return client_address(client[0] if client else None, forwarded, trusted_proxies)


def _scope_host(scope: Mapping[str, Any], scheme: str) -> str:
    server = scope.get("server")
    if not server:
        return "localhost"
    name, port = server[0], server[1]
    default = 443 if scheme == "https" else 80
    return name if port in (None, default) else f"{name}:{port}"
