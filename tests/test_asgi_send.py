"""The ASGI shell's compiled start and send (middleware/_asgi_send.c) against its pure-Python code: for any
request, configuration and response, the app sees the same visitor and the server gets the same messages."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackgate
import trackgate.asgi

pytestmark = pytest.mark.skipif(trackgate.asgi.prepare is None, reason="the compiled shell is not built")

_COOKIES = st.sampled_from(
    [
        None,
        "",
        "tg_vid=abc123",
        "other=1; tg_vid=abc123",
        "tg_vid=abc123; tg_vid=zzz",
        "tg_vid=abc123; tg_vid=abc123",
        "tg_vid=bad value",
        "tg_vid=" + "x" * 300,
        "cc=1",
        "cc=0; tg_vid=abc123",
        "cc=1; tg_vid=abc123",
        "theme=dark",
        "tg_vid=abc123; " + "pad=" + "p" * 5000,
    ]
)
_QUERIES = st.sampled_from([b"", b"a=1", b"tg_vid=fromquery", b"tg_vid=abc123", b"tg_vid=", b"x=tg_vid=q", None])
_PATHS = st.sampled_from(
    [
        ("/", ""),
        ("/page", ""),
        ("/_tg/health", ""),
        ("/_tg", ""),
        ("/_tgx", ""),
        ("/m/page", "/m"),
        ("/m/_tg/health", "/m"),
    ]
)
_CONTENT_TYPES = st.sampled_from(
    [None, b"text/plain", b"text/html; charset=utf-8", b"TEXT/HTML", b"application/json", b"application/xhtml+xml"]
)
_SETTINGS = st.fixed_dictionaries(
    {
        "consent": st.sampled_from(["implicit", "required"]),
        "consent_cookie": st.sampled_from([None, "cc"]),
        "respect_gpc": st.booleans(),
        "rewrite": st.sampled_from(["off", "all"]),
        "cookie_secure": st.sampled_from([None, True, False]),
        "cookie_domain": st.sampled_from([None, "example.org"]),
    }
)


def _app(action: str | None, start: dict[str, Any], body: bytes, seen: list[Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if action == "grant":
            trackgate.set_consent(scope, True)
        elif action == "withdraw":
            trackgate.set_consent(scope, False)
        seen.append(trackgate.get_visitor(scope))
        await send({**start})
        await send({"type": "http.response.body", "body": body})

    return app


def _served(compiled: bool, config: dict[str, Any], scope: dict[str, Any], app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with pytest.MonkeyPatch.context() as patch:
        if not compiled:
            for name in ("prepare", "Responder", "request_headers"):
                patch.setattr(trackgate.asgi, name, None)
        middleware = trackgate.ASGIMiddleware(app, secret_key="k", emit=lambda event: None, **config)
        asyncio.run(middleware(scope, receive, send))
    return sent


def _normalised(messages: list[dict[str, Any]], seen: list[Any]) -> Any:
    """Messages with a new visitor's random code (and a rewritten page's signed links) made comparable."""
    codes = [v.code for v in seen if v is not None and v.is_new]
    text = repr(messages)
    for code in codes:
        text = text.replace(code, "<new code>")
    return re.sub(r"/_tg/[oc]/[A-Za-z0-9_.-]+", "/_tg/<token>", text)


_CASES = st.fixed_dictionaries(
    {
        "config": _SETTINGS,
        "cookie": _COOKIES,
        "gpc": st.sampled_from([None, b"1", b"0"]),
        "query": _QUERIES,
        "where": _PATHS,
        "scheme": st.sampled_from(["http", "https"]),
        "with_state": st.booleans(),
        "content_type": _CONTENT_TYPES,
        "opt_out": st.sampled_from([None, b"off", b"on"]),
        "status": st.sampled_from([200, 304, 302]),
        "as_tuple": st.booleans(),
        "action": st.sampled_from([None, "grant", "withdraw"]),
    }
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_CASES)
def test_the_compiled_shell_does_what_the_python_shell_does(case: dict[str, Any]) -> None:
    config, cookie, gpc, query = case["config"], case["cookie"], case["gpc"], case["query"]
    content_type, opt_out, as_tuple = case["content_type"], case["opt_out"], case["as_tuple"]
    path, root = case["where"]
    request_headers = [(b"host", b"example.org")]
    if cookie is not None:
        request_headers.append((b"cookie", cookie.encode()))
    if gpc is not None:
        request_headers.append((b"sec-gpc", gpc))
    response_headers = [(b"content-length", b"20")]
    if content_type is not None:
        response_headers.append((b"content-type", content_type))
    if opt_out is not None:
        response_headers.append((b"X-Trackgate", opt_out))
    start = {
        "type": "http.response.start",
        "status": case["status"],
        "headers": tuple(response_headers) if as_tuple else response_headers,
    }
    body = b"<html><body><a href='https://e.org/'>x</a></body></html>"[:20]
    results = []
    for compiled in (True, False):
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": case["scheme"],
            "path": path,
            "raw_path": path.encode(),
            "root_path": root,
            "query_string": query,
            "headers": list(request_headers),
            "client": ("127.0.0.1", 5000),
            "server": ("example.org", 80),
        }
        if query is None:
            del scope["query_string"]
        if case["with_state"]:
            scope["state"] = {}
        seen: list[Any] = []
        sent = _served(compiled, config, scope, _app(case["action"], start, body, seen))
        results.append((_normalised(sent, seen), [(v.is_new, v.consent) if v else None for v in seen]))
        assert start["headers"] == (tuple(response_headers) if as_tuple else response_headers)  # never edited
    assert results[0] == results[1]


def test_the_compiled_send_is_marked_as_a_coroutine_function() -> None:
    """asgiref's WsgiToAsgi and async_to_sync check the send they are given, and warn on every call
    otherwise."""
    responder = trackgate.asgi.Responder
    assert responder is not None
    config = trackgate.asgi._send_config(trackgate.ASGIMiddleware(_app(None, {}, b"", []), secret_key="k").gate)
    assert config is not None
    send = responder(config, {}, None, None)
    assert asyncio.iscoroutinefunction(send)
    import inspect

    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12 and later
        assert inspect.iscoroutinefunction(send)


def test_a_first_visit_and_a_returning_one_take_the_compiled_start() -> None:
    """The two commonest requests do not fall back to the Python code (the point of the compiled start)."""
    middleware = trackgate.ASGIMiddleware(_app(None, {}, b"", []), secret_key="k", emit=lambda event: None)
    config = middleware._visit_config
    assert config is not None

    def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {"type": "http", "path": "/", "root_path": "", "query_string": b"", "headers": headers}

    async def send(message: Any) -> None:
        return None

    first = scope([(b"host", b"x")])
    assert isinstance(trackgate.asgi.prepare(config, first, send), trackgate.asgi.Responder)  # type: ignore[arg-type]
    code = first["state"]["trackgate.visitor"].code
    cookie = [(b"cookie", f"tg_vid={code}".encode())]
    middleware.gate.identity.resolve(f"tg_vid={code}", "", None)  # what the Python code does the first time
    returning = scope(cookie)
    assert trackgate.asgi.prepare(config, returning, send) is not None
    assert returning["state"]["trackgate.visitor"] == trackgate.Visitor(code, False, True)
    # Anything else is the Python code's to decide.
    assert trackgate.asgi.prepare(config, {**scope(cookie), "query_string": b"tg_vid=q"}, send) is None
    assert trackgate.asgi.prepare(config, scope([*cookie, (b"sec-gpc", b"1")]), send) is None
    assert trackgate.asgi.prepare(config, {**scope([]), "path": "/_tg/health"}, send) is None
    assert trackgate.asgi.prepare(config, {**scope([]), "type": "websocket"}, send) is None
