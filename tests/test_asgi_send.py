"""The ASGI shell's compiled start and send (middleware/_asgi_send.c) against its pure-Python code: for any
request, configuration and response, the app sees the same visitor and the server gets the same messages."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from http import HTTPStatus
from typing import Any

import pytest
import shell_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackgate
import trackgate.asgi

pytestmark = pytest.mark.skipif(trackgate.asgi.prepare is None, reason="the compiled shell is not built")

_COOKIES = shell_cases.COOKIES
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
_SETTINGS = shell_cases.SETTINGS


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


_CASE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
        "config": _SETTINGS,
        "cookie": _COOKIES,
        "gpc": st.sampled_from([None, b"1", b"0"]),
        "query": _QUERIES,
        "where": _PATHS,
        "scheme": st.sampled_from(["http", "https"]),
        "with_state": st.booleans(),
        "content_type": _CONTENT_TYPES,
        "opt_out": st.sampled_from([None, b"off", b"on"]),
        "status": st.sampled_from([200, 304, 302, HTTPStatus.NOT_MODIFIED, 2**70]),
        "if_none_match": st.sampled_from([None, b'W/"abc"', b'"abc"']),
        "etag": st.sampled_from([None, b'"abc"']),
        "as_tuple": st.booleans(),
        "action": shell_cases.ACTIONS,
}
_CASES = st.fixed_dictionaries(_CASE_FIELDS)
# The requests the compiled start decides (a first visit or a known returning one, in the default set-up).
_DECIDED = shell_cases.decided(
    _CASE_FIELDS,
    query=st.sampled_from([b"", None, b"a=1", b"tg_vid=q"]),
    where=st.sampled_from([("/", ""), ("/page", ""), ("/_tgx", "")]),
    status=st.sampled_from([200, 304, 302]),
    if_none_match=st.sampled_from([None, b'W/"abc"']),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_CASES)
def test_the_compiled_shell_does_what_the_python_shell_does(case: dict[str, Any]) -> None:
    _compare(case)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_DECIDED)
def test_the_responses_the_compiled_start_begins_are_what_the_python_shell_sends(case: dict[str, Any]) -> None:
    served_by_python = _compare(case)
    decided = not case["cookie"] or not case["query"]  # (a query string makes a returning visit the Python code's)
    decided = decided and b"tg_vid=" not in (case["query"] or b"")
    assert served_by_python == [not decided, True]


def _compare(case: dict[str, Any]) -> list[bool]:
    """Serves the case both ways and compares; whether the Python code (_serve) served it, each way."""
    config, cookie, gpc, query = case["config"], case["cookie"], case["gpc"], case["query"]
    content_type, opt_out, as_tuple = case["content_type"], case["opt_out"], case["as_tuple"]
    path, root = case["where"]
    request_headers = [(b"host", b"example.org")]
    if cookie is not None:
        request_headers.append((b"cookie", cookie.encode()))
    if gpc is not None:
        request_headers.append((b"sec-gpc", gpc))
    if case["if_none_match"] is not None:
        request_headers.append((b"if-none-match", case["if_none_match"]))
    response_headers = [(b"content-length", b"20")]
    if case["etag"] is not None:
        response_headers.append((b"etag", case["etag"]))
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
    served_by_python = []
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
        calls: list[Any] = []
        serve = trackgate.asgi.ASGIMiddleware._serve

        async def counted(self: Any, *args: Any, serve: Any = serve, calls: list[Any] = calls) -> None:
            calls.append(args)
            await serve(self, *args)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trackgate.asgi.ASGIMiddleware, "_serve", counted)
            sent = _served(compiled, config, scope, _app(case["action"], start, body, seen))
        served_by_python.append(bool(calls))
        results.append((_normalised(sent, seen), [(v.is_new, v.consent) if v else None for v in seen]))
        assert start["headers"] == (tuple(response_headers) if as_tuple else response_headers)  # never edited
    assert results[0] == results[1]
    return served_by_python


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


def _start_of(headers: Any) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": headers}


def _scope(headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "path": "/", "root_path": "", "query_string": b"", "headers": headers or [], **extra}


# Run in a child process: a memory fault there is a failed test, not a crashed test run.
_LIST_CHANGED_MID_START = """
import asyncio, gc, sys
import trackgate

headers = [(b"content-type", b"text/plain")] + [(b"x-%d" % i, b"v") for i in range(50)]
start = {"type": "http.response.start", "status": 200}

def change_it(phase, info):
    if phase != "start":
        return
    if sys.argv[2] == "empty":
        headers.clear()
    elif isinstance(start.get("headers"), list):  # the message held the only reference to its list
        start["headers"] = [(b"x-late", b"1")]

async def app(scope, receive, send):
    pairs = [(i, -i) for i in range(5000)]  # no free 2-tuples left: making one reaches the collector
    start["headers"] = headers if sys.argv[2] == "empty" else list(headers)
    gc.callbacks.append(change_it)
    gc.set_threshold(1)
    try:
        await send(start)
    finally:
        gc.callbacks.remove(change_it)
        gc.set_threshold(700)
    await send({"type": "http.response.body", "body": b""})

sent = []

async def send(message):
    sent.append(message)

async def receive():
    return {"type": "http.request"}

middleware = trackgate.ASGIMiddleware(app, secret_key="k", emit=lambda event: None)
cookie = [(b"cookie", b"tg_vid=abc123")] if sys.argv[1] == "returning" else []
scope = {"type": "http", "path": "/", "root_path": "", "query_string": b"", "headers": cookie}
asyncio.run(middleware(scope, receive, send))
gc.collect()
print([name.decode() for name, _ in sent[0]["headers"]])
"""

_STATE_DROPPED_MID_START = """
import gc
import trackgate
import trackgate.asgi

middleware = trackgate.ASGIMiddleware(lambda *args: None, secret_key="k", emit=lambda event: None)

async def send(message):
    return None

for attempt in range(20):
    scope = {"type": "http", "path": "/", "root_path": "", "query_string": b"", "headers": []}

    class DropsTheState:
        def __del__(self, scope=scope):
            scope.pop("state", None)

    scope["state"] = {"trackgate.state": DropsTheState(), "pad%d" % attempt: 1}
    responder = trackgate.asgi.prepare(middleware._visit_config, scope, send)
    assert responder is not None
gc.collect()
print("served")
"""


def _child(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.mark.parametrize("change", ["empty", "replace"])
@pytest.mark.parametrize("visitor", ["new", "returning"])
def test_an_app_list_changed_by_a_collection_mid_start_is_sent_as_it_was_read(visitor: str, change: str) -> None:
    """Python code run by a garbage collection (a finalizer, a gc callback) may change the app's header list,
    or replace it in the message, while the compiled send allocates: no crash, and what goes out is what was
    read (or, when the list changed before it was read, what the Python code reads)."""
    names = _child(_LIST_CHANGED_MID_START, visitor, change)
    late = ("['x-late']", "['x-late', 'set-cookie']")
    assert names in ("[]", "['set-cookie']", *late) or names.startswith("['content-type', 'x-0'")


def test_a_finalizer_that_drops_the_scope_state_does_not_crash_the_compiled_start() -> None:
    """Storing the visitor replaces what the state held; that value's finalizer may drop the state itself."""
    assert _child(_STATE_DROPPED_MID_START) == "served"


def test_a_keyboard_interrupt_inside_the_compiled_start_is_not_swallowed() -> None:
    """prepare() leaves faults to the Python code, which catches Exception only: what is not one goes on."""
    middleware = trackgate.ASGIMiddleware(_app(None, {}, b"", []), secret_key="k", emit=lambda event: None)
    config = list(middleware._visit_config or ())
    assert config

    def interrupted(header: str) -> None:
        raise KeyboardInterrupt

    config[config.index(middleware.gate.identity.returning_visitor)] = interrupted

    async def send(message: Any) -> None:
        return None

    with pytest.raises(KeyboardInterrupt):
        trackgate.asgi.prepare(tuple(config), _scope([(b"cookie", b"tg_vid=abc123")]), send)  # type: ignore[misc]


def test_the_compiled_parts_refuse_a_configuration_they_cannot_read() -> None:
    middleware = trackgate.ASGIMiddleware(_app(None, {}, b"", []), secret_key="k", emit=lambda event: None)
    config = list(middleware._visit_config or ())
    config[-1] = ("too", "short")

    async def send(message: Any) -> None:
        return None

    with pytest.raises(TypeError):
        trackgate.asgi.prepare(tuple(config), _scope(), send)  # type: ignore[misc]
    with pytest.raises(TypeError):
        trackgate.asgi.Responder(("too", "short"), {}, None, send)  # type: ignore[misc]


def test_the_compiled_send_takes_its_message_by_keyword_too() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(message=_start_of([]))
        await send(message={"type": "http.response.body", "body": b""})

    for compiled in (True, False):
        sent = _served(compiled, {}, _scope(), app)
        assert [name for name, _ in sent[0]["headers"]] == [b"set-cookie"]


def test_the_compiled_start_serves_the_app_once_lifespan_has_started_the_dispatcher() -> None:
    """The default set-up (events to the background dispatcher) under a server that runs lifespan: its
    startup wakes the gate before any request does, and the commonest requests still take the compiled
    start."""
    from starlette.testclient import TestClient

    seen: list[Any] = []
    page = _app(None, _start_of([(b"content-type", b"text/plain")]), b"hi", seen)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":  # (lifespan: an app that does not take part; trackgate answers it)
            await page(scope, receive, send)

    middleware = trackgate.ASGIMiddleware(app)
    assert middleware.gate.asleep and middleware._fast is None
    with TestClient(middleware) as client:
        assert not middleware.gate.asleep  # lifespan's startup woke it
        first = client.get("/")
        assert first.headers["set-cookie"].startswith("tg_vid=")
        assert middleware._fast is middleware._visit_config is not None
        again = client.get("/")  # the client's jar sends the cookie back: a returning visitor
        assert "set-cookie" not in again.headers
    assert [visitor.is_new for visitor in seen] == [True, False]


class _AlwaysEqual(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


class _NeverEqual(str):
    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class _Https:
    """A scheme that is not text but says it is https (as an enum might)."""

    def __eq__(self, other: object) -> bool:
        return other == "https"

    __hash__ = object.__hash__


def _both_ways(app: Any, scope: dict[str, Any]) -> list[Any]:
    results = []
    for compiled in (True, False):
        sent = _served(compiled, {}, dict(scope), app)
        results.append([(str(m["type"]), [n for n, _ in m.get("headers", [])]) for m in sent])
    assert results[0] == results[1]
    return results[0]


def test_a_message_type_is_compared_as_the_python_code_compares_it() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": _AlwaysEqual("x.custom"), "status": 200, "headers": []})
        await send({"type": _NeverEqual("http.response.start"), "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert _both_ways(app, _scope())[0] == ("x.custom", [b"set-cookie"])


@pytest.mark.parametrize("scheme", [_AlwaysEqual("HTTPS"), _Https()])
def test_a_scheme_that_says_https_gets_a_secure_cookie_either_way(scheme: object) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(_start_of([]))
        await send({"type": "http.response.body", "body": b""})

    for compiled in (True, False):
        sent = _served(compiled, {}, _scope(scheme=scheme), app)
        (cookie,) = [value for name, value in sent[0]["headers"] if name == b"set-cookie"]
        assert b"; Secure" in cookie


def test_a_fault_while_making_the_cookie_is_the_python_codes_to_report() -> None:
    """The Python code logs it and sends the start without the cookie (re-raised here, in tests)."""

    class Breaks(str):
        def __hash__(self) -> int:
            return hash("scheme")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("a broken scope key")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(_start_of([]))

    scope = _scope()
    scope[Breaks("odd")] = 1
    for compiled in (True, False):
        with pytest.raises(RuntimeError, match="a broken scope key"):  # from _start's guard, in tests
            _served(compiled, {}, dict(scope), app)


_FORGED_VISITOR_TYPE = """
import gc, os
import trackgate
import trackgate.asgi

middleware = trackgate.ASGIMiddleware(lambda *args: None, secret_key="k", emit=lambda event: None)
config = list(middleware._visit_config)
config[config.index(trackgate.Visitor)] = os.stat_result  # a tuple subtype tuple.__new__ refuses to make

async def send(message):
    return None

for attempt in range(200):
    scope = {"type": "http", "path": "/", "root_path": "", "query_string": b"", "headers": []}
    assert trackgate.asgi.prepare(tuple(config), scope, send) is None
gc.collect()
print("declined")
"""


def test_the_compiled_start_makes_no_visitor_of_a_type_tuple_new_refuses() -> None:
    assert _child(_FORGED_VISITOR_TYPE) == "declined"


def _first_visit_code(config: Any) -> str | None:
    """The code the compiled start gives a first visit, or None when it leaves the visit to the Python code."""

    async def send(message: Any) -> None:
        return None

    scope = _scope()
    if trackgate.asgi.prepare(config, scope, send) is None:  # type: ignore[misc]
        return None
    visitor = scope["state"]["trackgate.visitor"]
    assert visitor.is_new and visitor.consent
    code: str = visitor.code
    return code


def _compiled_config() -> Any:
    middleware = trackgate.ASGIMiddleware(_app(None, {}, b"", []), secret_key="k", emit=lambda event: None)
    assert middleware._visit_config is not None
    return middleware._visit_config


def test_first_visits_through_the_compiled_start_get_distinct_codes_and_a_forked_child_none_of_its_parents() -> None:
    """The compiled start draws codes from its own pool of digits (identity.code_digits), refilled as it runs
    out; a forked child starts with an empty pool, never with what its parent will hand out next."""
    config = _compiled_config()
    parent = [_first_visit_code(config) for _ in range(300)]  # several refills of 64
    assert len(set(parent)) == 300 and all(re.fullmatch(r"[a-z0-9]{16}", str(code)) for code in parent)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first codes go back to the parent
        os.close(reader)
        os.write(writer, " ".join(str(_first_visit_code(config)) for _ in range(64)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent_next = [_first_visit_code(config) for _ in range(64)]
    assert len(child) == 64 and "None" not in child and not set(child) & set(parent_next)


def test_a_code_pool_that_does_not_hold_digits_leaves_the_first_visit_to_the_python_code() -> None:
    """Whatever the pool holds (it is a module's bytearray, open to anyone), the compiled start hands out only
    what the Python code would: 16 of [a-z0-9], else it declines and identity.py draws the code."""
    config = list(_compiled_config())
    pool = bytearray(b"ABCDEFGHIJKLMNO\xff")
    config[config.index(trackgate.identity.code_digits)] = pool
    assert _first_visit_code(tuple(config)) is None
    pool[:] = b"a" * 16
    with memoryview(pool):  # a buffer held on it: it cannot be cut
        assert _first_visit_code(tuple(config)) is None
    assert _first_visit_code(tuple(config)) == "a" * 16 and len(pool) == 0


def test_a_scope_state_the_compiled_start_does_not_write_to_keeps_no_visitor_alive() -> None:
    """A server's own state object (not a dict), or none at all: the compiled start leaves the request to the
    Python code, and lets go of the visitor it made or looked up."""
    import gc

    middleware = trackgate.ASGIMiddleware(_app(None, {}, b"", []), secret_key="k", emit=lambda event: None)
    config = middleware._visit_config
    returning = middleware.gate.identity.returning_visitor("tg_vid=abc123")
    assert returning is not None

    async def send(message: Any) -> None:
        return None

    class ServerState:
        pass

    def live_visitors() -> int:
        gc.collect()
        return sum(1 for thing in gc.get_objects() if type(thing) is trackgate.Visitor)

    for state in (None, ServerState()):
        references, visitors = sys.getrefcount(returning), live_visitors()
        for _ in range(200):
            assert trackgate.asgi.prepare(config, _scope([(b"cookie", b"tg_vid=abc123")], state=state), send) is None
            assert trackgate.asgi.prepare(config, _scope(state=state), send) is None  # type: ignore[misc]
        assert sys.getrefcount(returning) == references and live_visitors() == visitors
