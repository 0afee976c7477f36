"""The hello-world apps bench/overhead.py serves: bare, wrapped by trackgate, and wrapped by each peer.

Selected with BENCH_APP; trackgate's settings come from TRACKGATE_* like any app's. The Kameleoon SDK
(GPLv3) is imported here only, by the benchmark, never by trackgate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

BODY = b"Hello, world!"


# What trackgate adds to a new visitor's response, sent by a bare app ("bare-cookie"): the cost of the header
# itself (the server writes it, the client reads it) apart from the middleware's.
COOKIE = ("Set-Cookie", "tg_vid=abcdefghijklmnop; HttpOnly; Max-Age=33696000; Path=/; SameSite=Lax")
HEADERS = (("Content-Type", "text/plain"), ("Content-Length", "13"))


def asgi_hello(*extra: tuple[str, str]) -> Any:
    """A hello-world ASGI app sending HEADERS and ``extra`` (each response gets its own list, as apps do)."""
    headers = [(name.lower().encode(), value.encode()) for name, value in (*HEADERS, *extra)]

    async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": BODY})

    return hello


def wsgi_hello(*extra: tuple[str, str]) -> Any:
    headers = [*HEADERS, *extra]

    def hello(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", list(headers))
        return [BODY]

    return hello


asgi_bare = asgi_hello()
wsgi_bare = wsgi_hello()


def asgi_app() -> Any:
    kind = os.environ["BENCH_APP"]
    if kind == "bare":
        return asgi_bare
    if kind == "bare-cookie":
        return asgi_hello(COOKIE)
    if kind == "trackgate":
        import trackgate

        return trackgate.ASGIMiddleware(asgi_bare)
    if kind == "session":
        from starlette.middleware.sessions import SessionMiddleware

        return SessionMiddleware(asgi_bare, secret_key="bench-session-key")
    raise ValueError(kind)


def wsgi_app() -> Any:
    kind = os.environ["BENCH_APP"]
    if kind == "bare":
        return wsgi_bare
    if kind == "bare-cookie":
        return wsgi_hello(COOKIE)
    if kind == "trackgate":
        import trackgate

        return trackgate.WSGIMiddleware(wsgi_bare)
    if kind == "kameleoon":
        from kameleoon import KameleoonClientConfig, KameleoonClientFactory
        from kameleoon.middleware import KameleoonWSGIMiddleware

        # Its configuration fetch is pointed at "localhost" subdomains so that nothing leaves the machine; it
        # fails in the SDK's background thread, off the cookie path the middleware runs on every request.
        config = KameleoonClientConfig(
            "bench-client", "bench-secret", top_level_domain="127.0.0.1", network_domain="localhost"
        )
        return KameleoonWSGIMiddleware(wsgi_bare, KameleoonClientFactory.create("benchsite", config))
    raise ValueError(kind)


application = wsgi_app() if os.environ.get("BENCH_SERVER") == "gunicorn" else None
