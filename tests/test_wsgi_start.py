"""The WSGI shell's compiled start (WSGICall and WSGIStart in middleware/_asgi_send.c) against its pure-Python
code: for any request, configuration and app, the app sees the same visitor and the server gets the same
start_response calls and body."""

from __future__ import annotations

import gc
import re
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import shell_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

import trackgate
import trackgate._boundary
import trackgate.wsgi

pytestmark = pytest.mark.skipif(trackgate.wsgi.WSGICall is None, reason="the compiled shell is not built")

_COOKIES = shell_cases.COOKIES
_QUERIES = st.sampled_from(["", "a=1", "tg_vid=fromquery", "tg_vid=abc123", "tg_vid=", "x=tg_vid=q", None])
_PATHS = st.sampled_from(["/", "/page", "/_tg/health", "/_tg", "/_tgx", None])
_CONTENT_TYPES = st.sampled_from(
    [None, "text/plain", "text/html; charset=utf-8", "TEXT/HTML", "application/json", "application/xhtml+xml",
     "text/plain; x=\u00e9", "text/html; x=\u0100"]
)
_SETTINGS = shell_cases.SETTINGS
_CASE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
        "config": _SETTINGS,
        "cookie": _COOKIES,
        "gpc": st.sampled_from([None, "1", "0"]),
        "query": _QUERIES,
        "path": _PATHS,
        "scheme": st.sampled_from(["http", "https"]),
        "content_type": _CONTENT_TYPES,
        "type_name": st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"]),
        "opt_out": st.sampled_from([None, "off", "on"]),
        "opt_out_name": st.sampled_from(["X-Trackgate", "x-trackgate"]),
        "status": st.sampled_from(["200 OK", "304 Not Modified", "302 Found", "404 Not Found"]),
        "if_none_match": st.sampled_from([None, 'W/"abc"', '"abc"']),
        "etag": st.sampled_from([None, '"abc"']),
        "as_tuple": st.booleans(),
        "style": st.sampled_from(["list", "generator", "write", "error", "closing"]),
        "action": shell_cases.ACTIONS,
}
_CASES = st.fixed_dictionaries(_CASE_FIELDS)
# The requests the compiled start decides (a first visit or a known returning one, in the default set-up).
_DECIDED = shell_cases.decided(
    _CASE_FIELDS,
    query=st.sampled_from(["", None]),
    path=st.sampled_from(["/", "/page", "/_tgx", None]),
    if_none_match=st.sampled_from([None, 'W/"abc"']),
    # (text of wider characters than latin-1: no byte-wise reading of it may miss the "html")
    content_type=st.sampled_from([None, "text/plain", "text/html", "text/plain; x=\u00e9", "text/html; x=\u0100"]),
    # (the Kelvin sign lower()s to k: a name Python reads as the opt-out header)
    opt_out_name=st.sampled_from(["X-Trackgate", "x-trackgate", "X-Trac\u212agate"]),
)

_BODY = b"<html><body><a href='https://e.org/'>x</a></body></html>"


class _Closing:
    """A body with close(), as frameworks return: the server must get close() through whatever wraps it."""

    def __init__(self, parts: list[bytes], closed: list[bool]) -> None:
        self._parts = parts
        self._closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._parts)

    def close(self) -> None:
        self._closed.append(True)


def _app(case: dict[str, Any], headers: Any, seen: list[Any], closed: list[bool], seen_starts: list[str]) -> Any:
    style, status = case["style"], case["status"]

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen_starts.append(type(start_response).__name__)
        if case["action"] == "grant":
            trackgate.set_consent(environ, True)
        elif case["action"] == "withdraw":
            trackgate.set_consent(environ, False)
        seen.append(trackgate.get_visitor(environ))
        if style == "generator":
            def body() -> Iterator[bytes]:
                start_response(status, headers)
                yield _BODY[:20]
                yield _BODY[20:]

            return body()
        write = start_response(status, headers)
        if style == "write":
            write(_BODY[:20])
            return [_BODY[20:]]
        if style == "error":
            try:
                raise ValueError("late")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            return [b"error"]
        if style == "closing":
            return _Closing([_BODY[:20], _BODY[20:]], closed)
        return [_BODY]

    return app


def _environ(case: dict[str, Any]) -> dict[str, Any]:
    environ = EnvironBuilder(path="/", base_url=f"{case['scheme']}://example.org/").get_environ()
    if case["path"] is None:
        del environ["PATH_INFO"]
    else:
        environ["PATH_INFO"] = case["path"]
    if case["query"] is None:
        environ.pop("QUERY_STRING", None)
    else:
        environ["QUERY_STRING"] = case["query"]
    for key, value in (("HTTP_COOKIE", case["cookie"]), ("HTTP_SEC_GPC", case["gpc"]),
                       ("HTTP_IF_NONE_MATCH", case["if_none_match"])):
        if value is not None:
            environ[key] = value
    return environ


def _served(compiled: bool, config: dict[str, Any], environ: dict[str, Any], app: Any) -> tuple[list[Any], bytes]:
    """The start_response calls (status, headers, with exc_info or not) and the body the server gets."""
    calls: list[Any] = []
    out: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        calls.append((status, list(headers), exc_info is not None))
        return out.append

    with pytest.MonkeyPatch.context() as patch:
        if not compiled:
            patch.setattr(trackgate.wsgi, "WSGICall", None)
        middleware = trackgate.WSGIMiddleware(app, secret_key="k", emit=lambda event: None, **config)
    assert (middleware._fast is not None) == compiled
    result = middleware(environ, start_response)
    try:
        out.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return calls, b"".join(out)


def _normalised(served: Any, seen: list[Any]) -> str:
    """A new visitor's random code (and a rewritten page's signed links) made comparable."""
    text = repr(served)
    for visitor in seen:
        if visitor is not None and visitor.is_new:
            text = text.replace(visitor.code, "<new code>")
    return re.sub(r"/_tg/[oc]/[A-Za-z0-9_.-]+", "/_tg/<token>", text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_CASES)
def test_the_compiled_start_does_what_the_python_shell_does(case: dict[str, Any]) -> None:
    _compare(case)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_DECIDED)
def test_the_responses_the_compiled_start_begins_are_what_the_python_shell_sends(case: dict[str, Any]) -> None:
    starts = _compare(case)
    assert starts == [["WSGIStart"], ["method"]]  # (the compiled start's, and the Python _Responder's)


def _compare(case: dict[str, Any]) -> list[list[str]]:
    """Serves the case both ways and compares; the types of start_response the app got each way."""
    response_headers = [("Content-Length", str(len(_BODY)))]
    if case["etag"] is not None:
        response_headers.append(("ETag", case["etag"]))
    if case["content_type"] is not None:
        response_headers.append((case["type_name"], case["content_type"]))
    if case["opt_out"] is not None:
        response_headers.append((case["opt_out_name"], case["opt_out"]))
    headers: Any = tuple(response_headers) if case["as_tuple"] else list(response_headers)
    results = []
    starts = []
    for compiled in (True, False):
        seen: list[Any] = []
        closed: list[bool] = []
        seen_starts: list[str] = []
        served = _served(compiled, case["config"], _environ(case), _app(case, headers, seen, closed, seen_starts))
        visitors = [(v.is_new, v.consent) if v else None for v in seen]
        results.append((_normalised(served, seen), visitors, closed))
        starts.append(seen_starts)
        assert headers == (tuple(response_headers) if case["as_tuple"] else response_headers)  # never edited
    assert results[0] == results[1]
    if case["style"] == "closing" and results[0][1]:  # (the app served it: it was not a tracking path)
        assert results[0][2] == [True]
    return starts


def _plain_app(seen: list[Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(trackgate.get_visitor(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    return app


def _bare_environ(**extra: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "wsgi.url_scheme": "http", **extra}


def test_a_first_visit_and_a_returning_one_take_the_compiled_start() -> None:
    """The two commonest requests do not fall back to the Python code (the point of the compiled start)."""
    middleware = trackgate.WSGIMiddleware(_plain_app([]), secret_key="k", emit=lambda event: None)
    config = middleware._fast
    prepare = trackgate.wsgi.wsgi_prepare
    assert config is not None and prepare is not None
    first = _bare_environ()
    assert prepare(config, first, print) is not None
    code = first["trackgate.visitor"].code
    assert first["trackgate.visitor"] == trackgate.Visitor(code, True, True)
    middleware.gate.identity.resolve(f"tg_vid={code}", "", None)  # what the Python code does the first time
    returning = _bare_environ(HTTP_COOKIE=f"tg_vid={code}")
    assert prepare(config, returning, print) is not None
    assert returning["trackgate.visitor"] == trackgate.Visitor(code, False, True)
    # Anything else is the Python code's to decide.
    cookie = {"HTTP_COOKIE": f"tg_vid={code}"}
    assert prepare(config, _bare_environ(QUERY_STRING="tg_vid=q"), print) is None
    assert prepare(config, _bare_environ(QUERY_STRING="a=1", **cookie), print) is None
    assert prepare(config, _bare_environ(HTTP_SEC_GPC="1"), print) is None
    assert prepare(config, _bare_environ(PATH_INFO="/_tg/health"), print) is None
    assert prepare(config, _bare_environ(HTTP_COOKIE=b"tg_vid=x"), print) is None  # not text: the Python code's


def test_through_a_client_a_new_visitor_gets_one_cookie_and_a_returning_one_none() -> None:
    from werkzeug.test import Client

    seen: list[Any] = []
    middleware = trackgate.WSGIMiddleware(_plain_app(seen), secret_key="k", emit=lambda event: None)
    client = Client(middleware)
    first = client.get("/")
    assert first.headers.getlist("Set-Cookie") == [
        f"tg_vid={seen[0].code}; Max-Age=34128000; HttpOnly; Path=/; SameSite=Lax"
    ]
    again = client.get("/")
    assert "Set-Cookie" not in again.headers
    secure = Client(middleware, use_cookies=False).get("/", base_url="https://localhost/")
    assert secure.headers["Set-Cookie"].endswith("; Secure; HttpOnly; Path=/; SameSite=Lax")
    assert [(v.is_new, v.consent) for v in seen] == [(True, True), (False, True), (True, True)]


def test_the_compiled_start_serves_the_app_once_the_first_request_has_woken_the_gate() -> None:
    """The default set-up (events to the background dispatcher): the first request wakes the gate through
    the Python code, the next take the compiled start."""
    middleware = trackgate.WSGIMiddleware(_plain_app([]), secret_key="k")
    assert middleware.gate.asleep and middleware._fast is None
    from werkzeug.test import Client

    client = Client(middleware)
    assert client.get("/").headers["Set-Cookie"].startswith("tg_vid=")
    assert not middleware.gate.asleep and middleware._fast is middleware._compiled is not None
    assert "Set-Cookie" not in client.get("/").headers


def test_calling_the_middleware_by_keyword_through_a_subclass_or_unbound_serves_alike() -> None:
    class Sub(trackgate.WSGIMiddleware):
        pass

    seen: list[Any] = []
    for middleware in (trackgate.WSGIMiddleware(_plain_app(seen), secret_key="k", emit=lambda event: None),
                       Sub(_plain_app(seen), secret_key="k", emit=lambda event: None)):
        calls: list[Any] = []

        def start_response(status: str, headers: list[Any], exc_info: Any = None, calls: list[Any] = calls) -> Any:
            calls.append(headers)
            return None

        assert list(middleware(_bare_environ(), start_response)) == [b"hi"]
        assert list(middleware(environ=_bare_environ(), start_response=start_response)) == [b"hi"]
        assert list(type(middleware).__call__(middleware, _bare_environ(), start_response)) == [b"hi"]
        assert list(middleware.__call__(_bare_environ(), start_response)) == [b"hi"]
        assert [[name for name, _ in headers] for headers in calls] == [["Content-Type", "Set-Cookie"]] * 4
    assert len({visitor.code for visitor in seen}) == 8
    assert trackgate.WSGIMiddleware.__call__.__qualname__ == "WSGIMiddleware.__call__"


def test_a_start_response_taken_by_keyword_or_with_exc_info_goes_to_the_python_responder() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status="200 OK", headers=[("Content-Type", "text/plain")], exc_info=None)
        return [b"x"]

    environ = _bare_environ()
    calls, body = _served(True, {}, environ, app)
    assert body == b"x"
    assert [[name for name, _ in headers] for _, headers, _ in calls] == [["Content-Type", "Set-Cookie"]]


def test_an_app_that_raises_leaves_its_exception_to_the_server_and_keeps_no_request_alive() -> None:
    class Marker:
        pass

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["marker"] = Marker()
        start_response("200 OK", [])
        raise ValueError("app fault")

    middleware = trackgate.WSGIMiddleware(app, secret_key="k", emit=lambda event: None)
    environ = _bare_environ()
    with pytest.raises(ValueError, match="app fault"):
        middleware(environ, lambda status, headers, exc_info=None: None)
    marker = weakref.ref(environ["marker"])
    del environ
    gc.collect()
    assert marker() is None


def test_a_fault_making_the_cookie_is_the_python_codes_to_report(caplog: pytest.LogCaptureFixture) -> None:
    """A visitor that is not a Visitor (set by another layer, say) is left to the Python responder, which
    logs and swallows what fails (re-raises it in tests): the response still goes out, without the cookie."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["trackgate.state"].visitor = None
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served"]

    for compiled in (True, False):
        with pytest.raises(AttributeError):
            _served(compiled, {}, _bare_environ(), app)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trackgate._boundary, "RAISE_INTERNAL", False)
            caplog.clear()
            calls, body = _served(compiled, {}, _bare_environ(), app)
        assert body == b"served"
        assert [name for name, _ in calls[0][1]] == ["Content-Type"]
        assert "visitor cookie failed" in caplog.text


def test_the_compiled_start_refuses_a_configuration_it_cannot_read() -> None:
    middleware = trackgate.WSGIMiddleware(_plain_app([]), secret_key="k", emit=lambda event: None)
    config = list(middleware._fast or ())
    assert config
    config[-1] = ("too", "short")
    with pytest.raises(TypeError):
        trackgate.wsgi.wsgi_prepare(tuple(config), _bare_environ(), print)  # type: ignore[misc]
    middleware._fast = tuple(config)  # then __call__ leaves every request to the Python code
    calls: list[Any] = []
    assert list(middleware(_bare_environ(), lambda status, headers, exc_info=None: calls.append(headers))) == [b"hi"]
    assert [name for name, _ in calls[0]] == ["Content-Type", "Set-Cookie"]


def test_a_304_that_confirms_a_rewritten_copy_gets_that_copys_headers_either_way() -> None:
    """With rewriting on, a client revalidating a rewritten page sends back its weak ETag; the app's 304 (strong
    ETag, no type) must answer with the rewritten copy's headers, not the app's."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("304 Not Modified", [("ETag", '"abc"')])
        return []

    def headers_sent(compiled: bool, environ: dict[str, Any]) -> list[tuple[str, str]]:
        (call,), _ = _served(compiled, {"rewrite": "all"}, environ, app)
        return [(name, "<code>" if name == "Set-Cookie" else value) for name, value in call[1]]

    for cookie in ({}, {"HTTP_COOKIE": "tg_vid=abc123"}):  # a first visit, and a returning one
        environ = _bare_environ(HTTP_IF_NONE_MATCH='W/"abc"', **cookie)
        sent = headers_sent(True, dict(environ))
        assert sent == headers_sent(False, dict(environ))
        assert ("ETag", 'W/"abc"') in sent and ("Accept-Ranges", "none") in sent


# Run in a child process: a memory fault there is a failed test, not a crashed test run.
_COOKIE_DROPPED_BY_A_KEY = """
import trackgate

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]

middleware = trackgate.WSGIMiddleware(app, secret_key="k", emit=lambda event: None)
middleware.gate.identity.resolve("tg_vid=abc123", "", None)  # a returning visitor the shell knows

class DropsTheCookie:
    # A key that looks up like "QUERY_STRING" and, compared, takes the cookie out of the environ.
    def __init__(self, environ):
        self.environ = environ
    def __hash__(self):
        return hash("QUERY_STRING")
    def __eq__(self, other):
        self.environ.pop("HTTP_COOKIE", None)
        return False

for attempt in range(50):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http",
               "HTTP_COOKIE": "".join(["tg_vid=", "abc123"])}  # held by the environ alone
    environ[DropsTheCookie(environ)] = 1
    assert list(middleware(environ, lambda status, headers, exc_info=None: None)) == [b"served"]
print("served")
"""


def test_an_environ_key_that_drops_the_cookie_mid_lookup_does_not_crash_the_compiled_start() -> None:
    """Any look-up in the environ may run a key's __eq__ (a key of another type with the same hash), which may
    change the environ: what the compiled start read before must still be there."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _COOKIE_DROPPED_BY_A_KEY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "served"


def test_two_threads_sharing_one_start_response_leave_no_responder_behind() -> None:
    """The Python responder the compiled start makes on demand runs Python code while it is made: another
    thread calling the same start_response meanwhile must not leave a second one alive."""
    import threading
    import time

    made: list[weakref.ref[Any]] = []

    class Slow(trackgate.wsgi._Responder):
        __slots__ = ("__weakref__",)

        def __init__(self, *args: Any) -> None:
            made.append(weakref.ref(self))
            time.sleep(0.05)  # the other thread runs meanwhile
            super().__init__(*args)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        headers = (("Content-Type", "text/plain"),)  # a tuple: the compiled start leaves it to the responder
        other = threading.Thread(target=start_response, args=("200 OK", headers))
        other.start()
        start_response("200 OK", headers)
        other.join()
        return [b"x"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trackgate.wsgi, "_Responder", Slow)
        middleware = trackgate.WSGIMiddleware(app, secret_key="k", emit=lambda event: None)
    assert list(middleware(_bare_environ(), lambda status, headers, exc_info=None: None)) == [b"x"]
    gc.collect()
    assert len(made) == 2 and all(ref() is None for ref in made)
