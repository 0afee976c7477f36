"""Visitor identity as an app and a browser see it through both shells: the cookie and its attributes,
returning visitors, the query-parameter override, hostile cookie values, consent and GPC, finding the
visitor from any request object, and the shells' WSGI/ASGI manners (pass-through, file_wrapper, close())."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.validate import validator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request as StarletteRequest
from starlette.testclient import TestClient
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Request as WerkzeugRequest

import trackgate
import trackgate.asgi

CODE = re.compile(r"[a-z0-9]{16}\Z")
VALID = "[A-Za-z0-9._:-]"


def _no_events(event: Any) -> None:
    """Events are not this file's subject; keep the background dispatcher out of it."""


# --- the apps: report what trackgate told them, and grant or withdraw consent on request -----------------


def _visitor_json(visitor: trackgate.Visitor | None) -> bytes:
    if visitor is None:
        return b'{"visitor": null}'
    return json.dumps({"code": visitor.code, "is_new": visitor.is_new, "consent": visitor.consent}).encode()


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/grant":
        trackgate.set_consent(environ)
    elif path == "/withdraw":
        trackgate.set_consent(environ, False)
    body = _visitor_json(trackgate.get_visitor(environ))
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    request = StarletteRequest(scope, receive)
    if scope["path"] == "/grant":
        trackgate.set_consent(request)
    elif scope["path"] == "/withdraw":
        trackgate.set_consent(request, False)
    body = _visitor_json(trackgate.get_visitor(request))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Answer:
    status: int
    set_cookies: list[str]
    body: dict[str, Any]


Get = Callable[..., Answer]


def _wsgi_get(path: str, *, headers: dict[str, str] | None = None, https: bool = False, **options: Any) -> Answer:
    middleware = trackgate.WSGIMiddleware(LintMiddleware(wsgi_app), secret_key="k", emit=_no_events, **options)
    client = Client(validator(middleware), use_cookies=False)
    response = client.get(path, headers=headers or {}, base_url="https://localhost" if https else "http://localhost")
    try:
        return Answer(response.status_code, response.headers.getlist("Set-Cookie"), json.loads(response.get_data()))
    finally:
        response.close()


def _asgi_get(path: str, *, headers: dict[str, str] | None = None, https: bool = False, **options: Any) -> Answer:
    middleware = trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events, **options)
    client = TestClient(middleware, base_url="https://testserver" if https else "http://testserver")
    response = client.get(path, headers=headers or {})  # no `with`: the shell's lifespan is not the subject
    return Answer(response.status_code, response.headers.get_list("set-cookie"), response.json())


@pytest.fixture(params=["wsgi", "asgi", "asgi-python"])
def get(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Get:
    if request.param == "asgi-python":  # the ASGI shell without its compiled start and send (_asgi_send.c)
        for name in ("prepare", "Responder", "request_headers"):
            monkeypatch.setattr(trackgate.asgi, name, None)
    return _wsgi_get if request.param == "wsgi" else _asgi_get


def _attributes(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    first, *rest = (part.strip() for part in set_cookie.split(";"))
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return name, value, attributes


# --- new and returning visitors ------------------------------------------------------------------------


def test_new_visitor_gets_one_cookie_with_the_code_the_app_saw(get: Get) -> None:
    answer = get("/")
    assert answer.status == 200
    assert len(answer.set_cookies) == 1
    name, value, attributes = _attributes(answer.set_cookies[0])
    assert name == "tg_vid"
    assert CODE.match(value)
    assert answer.body == {"code": value, "is_new": True, "consent": True}
    assert attributes["max-age"] == str(395 * 86400)
    assert attributes["path"] == "/"
    assert attributes["samesite"] == "Lax"
    assert "httponly" in attributes
    assert "secure" not in attributes
    assert "domain" not in attributes


def test_https_request_gets_a_secure_cookie(get: Get) -> None:
    _, _, attributes = _attributes(get("/", https=True).set_cookies[0])
    assert "secure" in attributes


def test_behind_proxy_fix_a_forwarded_https_request_gets_a_secure_cookie() -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    middleware = ProxyFix(trackgate.WSGIMiddleware(wsgi_app, secret_key="k", emit=_no_events), x_proto=1)
    response = Client(middleware, use_cookies=False).get("/", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in _attributes(response.headers["Set-Cookie"])[2]


def test_configured_cookie_attributes(get: Get) -> None:
    answer = get("/", cookie_domain="example.org", cookie_max_age="90m", cookie_name="vid", cookie_secure=True)
    name, _, attributes = _attributes(answer.set_cookies[0])
    assert name == "vid"
    assert attributes["domain"] == "example.org"
    assert attributes["max-age"] == "5400"
    assert "secure" in attributes


def test_returning_visitor_gets_no_cookie_and_the_same_code(get: Get) -> None:
    answer = get("/", headers={"Cookie": "other=1; tg_vid=Returning.Code:42-x"})
    assert answer.set_cookies == []
    assert answer.body == {"code": "Returning.Code:42-x", "is_new": False, "consent": True}


def test_request_cookies_are_never_echoed(get: Get) -> None:
    answer = get("/", headers={"Cookie": "session=secret123; tg_vid=bad value!"})
    assert len(answer.set_cookies) == 1
    assert "secret123" not in answer.set_cookies[0]
    assert "bad" not in answer.set_cookies[0]


def test_query_parameter_overrides_and_stores(get: Get) -> None:
    answer = get("/?x=1&tg_vid=from-email.42", headers={"Cookie": "tg_vid=oldcode"})
    assert answer.body["code"] == "from-email.42"
    assert [_attributes(c)[:2] for c in answer.set_cookies] == [("tg_vid", "from-email.42")]


def test_same_code_in_query_and_cookie_sets_no_cookie(get: Get) -> None:
    answer = get("/?tg_vid=samecode", headers={"Cookie": "tg_vid=samecode"})
    assert answer.body["code"] == "samecode"
    assert answer.set_cookies == []


@pytest.mark.parametrize("domain", [None, "example.org"])
def test_two_different_visitor_cookies_get_a_fresh_code_and_the_host_only_copy_cleared(
    get: Get, domain: str | None
) -> None:
    # Most often a host-only cookie left from before TRACKGATE_COOKIE_DOMAIN was set: storing a new code
    # under the configured domain would leave both, and every later request would be a new visitor.
    answer = get("/", headers={"Cookie": "tg_vid=aaaa; tg_vid=bbbb"}, cookie_domain=domain)
    assert CODE.match(answer.body["code"]) and answer.body["is_new"] is True
    assert len(answer.set_cookies) == 1
    name, value, attributes = _attributes(answer.set_cookies[0])
    assert (name, value, attributes["max-age"], attributes["path"]) == ("tg_vid", "", "0", "/")
    assert "domain" not in attributes


def test_with_required_consent_two_copies_still_count_as_a_grant_and_the_host_only_one_is_cleared(get: Get) -> None:
    # A visitor who consented before TRACKGATE_COOKIE_DOMAIN was set holds both copies: anonymous, nothing
    # would ever clear the host-only one, and every request after would be anonymous too.
    both = get("/", consent="required", cookie_domain="example.org", headers={"Cookie": "tg_vid=aaaa; tg_vid=bbbb"})
    assert both.body["consent"] is True
    [cleared] = both.set_cookies
    name, value, attributes = _attributes(cleared)
    assert (name, value, attributes["max-age"]) == ("tg_vid", "", "0") and "domain" not in attributes
    after = get("/", consent="required", cookie_domain="example.org", headers={"Cookie": "tg_vid=bbbb"})
    assert after.body == {"code": "bbbb", "is_new": False, "consent": True}


# --- hostile cookie values, straight into the shells (no client to tidy them up) ----------------------------

_BAD_CHARS = st.sampled_from([*"\r\n\x00\x7f é€ (),/<>@[]\\?={}\t", "\r\nSet-Cookie: evil=1"])
_VALID_TEXT = st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=20)
BAD_VALUES = st.one_of(
    st.tuples(_VALID_TEXT, _BAD_CHARS, _VALID_TEXT).map("".join),
    st.just(""),
    st.just("a" * 256),
    st.text(alphabet="abcXYZ019._:-", min_size=256, max_size=400),
)


def _direct_wsgi(cookie_header: str) -> tuple[list[tuple[str, str]], bytes]:
    got: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got.extend(headers)
        return lambda data: None

    environ = _environ()
    environ["HTTP_COOKIE"] = cookie_header.encode().decode("latin-1")  # how a server hands over raw bytes
    middleware = trackgate.WSGIMiddleware(wsgi_app, secret_key="k", emit=_no_events)
    result = middleware(environ, start_response)
    body = b"".join(result)
    getattr(result, "close", lambda: None)()
    return got, body


def _direct_asgi(cookie_header: str) -> tuple[list[tuple[str, str]], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope(headers=[(b"cookie", cookie_header.encode())])
    asyncio.run(trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)(scope, receive, send))
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in sent[0]["headers"]]
    return headers, b"".join(m.get("body", b"") for m in sent[1:])


@settings(max_examples=60, deadline=None)
@given(value=BAD_VALUES, shell=st.sampled_from([_direct_wsgi, _direct_asgi]))
def test_invalid_cookie_values_get_a_fresh_code_and_no_injection(
    value: str, shell: Callable[[str], tuple[list[tuple[str, str]], bytes]]
) -> None:
    assert not re.fullmatch(VALID + "{1,255}", value)
    headers, body = shell(f"tg_vid={value}")
    seen = json.loads(body)
    assert CODE.match(seen["code"]) and seen["is_new"] is True
    cookies = [v for k, v in headers if k.lower() == "set-cookie"]
    assert len(cookies) == 1
    assert cookies[0].startswith(f"tg_vid={seen['code']};")
    assert all("\r" not in k + v and "\n" not in k + v for k, v in headers)
    assert not any(k.lower() == "evil" or "evil" in v for k, v in headers)


@pytest.mark.parametrize("path", ["/", "/_tg/health"])
def test_a_second_visitor_cookie_in_another_charset_gets_a_fresh_code(path: str) -> None:
    # werkzeug reads cookie values as UTF-8: with a Latin-1 "é" beside a valid code, which code was meant
    # cannot be told, and reading them must fail neither the page nor the endpoints (which read it too).
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope(path, headers=[(b"cookie", b"tg_vid=\xe9; tg_vid=abc123")])
    asyncio.run(trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)(scope, receive, send))
    assert sent[0]["status"] == 200
    if path == "/":
        seen = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert CODE.match(seen["code"]) and seen["is_new"] is True


# --- consent and Global Privacy Control ----------------------------------------------------------------


def test_required_consent_sets_no_cookie_until_granted(get: Get) -> None:
    answer = get("/", consent="required")
    assert answer.set_cookies == []
    assert answer.body["consent"] is False
    granted = get("/grant", consent="required")
    assert granted.body["consent"] is True
    assert [_attributes(c)[:2] for c in granted.set_cookies] == [("tg_vid", granted.body["code"])]


def test_granted_visitor_is_recognised_afterwards(get: Get) -> None:
    answer = get("/", consent="required", headers={"Cookie": "tg_vid=knownvisitor1"})
    assert answer.body == {"code": "knownvisitor1", "is_new": False, "consent": True}
    assert answer.set_cookies == []


@pytest.mark.parametrize(
    ("consent_cookie", "cookie", "granted"),
    [
        ("cc", "cc=1", True),
        ("cc", "cc=yes", True),
        ("cc", "cc=0", False),
        ("cc", "cc=denied", False),
        ("cc", "unrelated=1", False),
        ("cc=all", "cc=all", True),
        ("cc=all", "cc=1", False),
    ],
)
def test_consent_cookie_forms(get: Get, consent_cookie: str, cookie: str, granted: bool) -> None:
    answer = get("/", consent="required", consent_cookie=consent_cookie, headers={"Cookie": cookie})
    assert answer.body["consent"] is granted
    assert len(answer.set_cookies) == (1 if granted else 0)


def test_with_a_consent_cookie_configured_only_it_grants_on_later_requests(get: Get) -> None:
    # A visitor cookie may be older than the consent manager (stored while consent was implicit) or outlive
    # its answer: it is no grant by itself. The code an app's grant stored goes on once the consent cookie grants.
    granted = get("/grant", consent="required", consent_cookie="cc")
    [stored] = granted.set_cookies
    code = _attributes(stored)[1]
    alone = get("/", consent="required", consent_cookie="cc", headers={"Cookie": f"tg_vid={code}"})
    assert alone.body["consent"] is False and alone.body["code"] != code
    with_it = get("/", consent="required", consent_cookie="cc", headers={"Cookie": f"tg_vid={code}; cc=yes"})
    assert with_it.body == {"code": code, "is_new": False, "consent": True}


@pytest.mark.parametrize("consent", ["implicit", "required"])
def test_a_refusal_in_the_consent_cookie_deletes_the_visitor_cookie(get: Get, consent: str) -> None:
    # Otherwise the cookie stays on the device for its 13 months, and tracks again once the consent cookie goes.
    answer = get("/", consent=consent, consent_cookie="cc", headers={"Cookie": "tg_vid=knownvisitor1; cc=0"})
    assert answer.body["consent"] is False and answer.body["code"] != "knownvisitor1"
    [deleted] = answer.set_cookies
    assert _attributes(deleted)[:2] == ("tg_vid", "") and _attributes(deleted)[2]["max-age"] == "0"
    nothing_held = get("/", consent=consent, consent_cookie="cc", headers={"Cookie": "cc=0"})
    assert nothing_held.set_cookies == []


def test_a_refusal_clears_two_copies_of_the_visitor_cookie_one_request_at_a_time(get: Get) -> None:
    # One Set-Cookie a response: the host-only copy first, then (the next request sends one) the other.
    both = get("/", consent_cookie="cc", cookie_domain="example.org", headers={"Cookie": "tg_vid=aa; tg_vid=bb; cc=0"})
    [first] = both.set_cookies
    assert _attributes(first)[:2] == ("tg_vid", "") and "domain" not in _attributes(first)[2]
    one = get("/", consent_cookie="cc", cookie_domain="example.org", headers={"Cookie": "tg_vid=bb; cc=0"})
    [second] = one.set_cookies
    assert _attributes(second)[:2] == ("tg_vid", "") and _attributes(second)[2]["domain"] == "example.org"


@pytest.mark.parametrize("cookie", ["cc=0; cc=1", "cc=1; cc=0"])
def test_of_two_consent_cookies_a_refusal_wins(get: Get, cookie: str) -> None:
    # A parent domain's and the site's: the last one sent must not overrule a refusal.
    answer = get("/", consent="required", consent_cookie="cc", headers={"Cookie": cookie})
    assert answer.body["consent"] is False and answer.set_cookies == []


def test_withdrawing_consent_deletes_the_cookie(get: Get) -> None:
    answer = get("/withdraw", headers={"Cookie": "tg_vid=knownvisitor1"})
    assert answer.body["consent"] is False
    assert answer.body["code"] != "knownvisitor1"
    assert len(answer.set_cookies) == 1
    name, value, attributes = _attributes(answer.set_cookies[0])
    assert (name, value, attributes["max-age"]) == ("tg_vid", "", "0")


def test_withdrawing_consent_under_gpc_still_deletes_the_cookie(get: Get) -> None:
    # The request had no consent already (Sec-GPC), but the client holds a cookie that would track the next
    # request sent without the header: the refusal deletes it.
    answer = get("/withdraw", headers={"Cookie": "tg_vid=knownvisitor1", "Sec-GPC": "1"})
    assert answer.body["consent"] is False
    [cookie] = answer.set_cookies
    name, value, attributes = _attributes(cookie)
    assert (name, value, attributes["max-age"]) == ("tg_vid", "", "0")
    nothing_held = get("/withdraw", headers={"Sec-GPC": "1"})
    assert nothing_held.set_cookies == []


def test_granting_consent_stores_a_code_from_the_query_parameter(get: Get) -> None:
    answer = get("/grant?tg_vid=from.email-7", consent="required")
    assert answer.body == {"code": "from.email-7", "is_new": False, "consent": True}
    assert [_attributes(c)[:2] for c in answer.set_cookies] == [("tg_vid", "from.email-7")]
    held = get("/grant?tg_vid=from.email-7", consent="required", headers={"Cookie": "tg_vid=from.email-7"})
    assert held.set_cookies == []  # the cookie has it already


def test_global_privacy_control_means_no_consent(get: Get) -> None:
    answer = get("/", headers={"Sec-GPC": "1"})
    assert answer.body["consent"] is False
    assert answer.set_cookies == []
    returning = get("/", headers={"Sec-GPC": " 1 ", "Cookie": "tg_vid=knownvisitor1"})
    assert returning.body["consent"] is False and returning.body["code"] != "knownvisitor1"


def test_a_global_privacy_control_header_other_than_1_refuses_nothing(get: Get) -> None:
    answer = get("/", headers={"Sec-GPC": "0", "Cookie": "tg_vid=knownvisitor1"})
    assert answer.body["consent"] is True and answer.body["code"] == "knownvisitor1"


def test_global_privacy_control_can_be_ignored(get: Get) -> None:
    answer = get("/", headers={"Sec-GPC": "1"}, respect_gpc="false")
    assert answer.body["consent"] is True
    assert len(answer.set_cookies) == 1


# --- get_visitor on whatever the app holds ---------------------------------------------------------------


def _environ(path: str = "/") -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }


def _seen_through_wsgi(make: Callable[[dict[str, Any]], Any]) -> tuple[Any, str]:
    """What trackgate.get_visitor gives for make(environ) inside a wrapped WSGI app, and the cookie's code."""
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(trackgate.get_visitor(make(environ)))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    response = Client(trackgate.WSGIMiddleware(app, secret_key="k", emit=_no_events)).get("/")
    code = _attributes(response.headers["Set-Cookie"])[1]
    response.close()
    return seen[0], code


def test_get_visitor_on_a_wsgi_environ_and_a_werkzeug_request() -> None:
    for make in (lambda environ: environ, WerkzeugRequest):
        visitor, code = _seen_through_wsgi(make)
        assert isinstance(visitor, trackgate.Visitor) and visitor.code == code


def test_get_visitor_on_an_asgi_scope_and_a_starlette_request() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.extend([trackgate.get_visitor(scope), trackgate.get_visitor(StarletteRequest(scope, receive))])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    response = TestClient(trackgate.ASGIMiddleware(app, secret_key="k", emit=_no_events)).get("/")
    code = _attributes(response.headers["set-cookie"])[1]
    assert [v.code for v in seen] == [code, code]


def test_get_visitor_on_a_flask_request() -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)

    @app.route("/")
    def index() -> dict[str, Any]:
        visitor = trackgate.get_visitor(flask.request)
        return {"code": visitor.code if visitor else None}

    app.wsgi_app = trackgate.WSGIMiddleware(app.wsgi_app, secret_key="k", emit=_no_events)  # type: ignore[method-assign]
    response = app.test_client().get("/")
    assert response.get_json()["code"] == _attributes(response.headers["Set-Cookie"])[1]


def test_get_visitor_on_a_django_request() -> None:
    pytest.importorskip("django")
    from django.conf import settings as django_settings

    if not django_settings.configured:
        django_settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="test", USE_TZ=True)
    from django.core.handlers.wsgi import WSGIRequest

    visitor, code = _seen_through_wsgi(WSGIRequest)
    assert visitor is not None and visitor.code == code


def test_get_visitor_outside_trackgate_is_none() -> None:
    assert trackgate.get_visitor(_environ()) is None
    assert trackgate.get_visitor(_scope()) is None
    with pytest.raises(LookupError):
        trackgate.set_consent(_environ())


# --- health and the shells' manners ----------------------------------------------------------------------


def test_health_answers_on_both_shells() -> None:
    wsgi = Client(trackgate.WSGIMiddleware(wsgi_app, secret_key="k", emit=_no_events)).get("/_tg/health")
    asgi = TestClient(trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)).get("/_tg/health")
    for status, body in ((wsgi.status_code, wsgi.get_json()), (asgi.status_code, asgi.json())):
        assert status == 200
        assert body["status"] == "ok"
        assert body["version"] == trackgate.__version__
    wsgi.close()


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
def test_non_http_scopes_pass_through_untouched(kind: str) -> None:
    got: list[tuple[Any, Any, Any]] = []

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        got.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": f"{kind}.connect"}

    async def send(message: Any) -> None:
        pass

    scope: dict[str, Any] = {"type": kind, "asgi": {"version": "3.0"}, "path": "/ws", "headers": []}
    before = dict(scope)
    asyncio.run(trackgate.ASGIMiddleware(raw, secret_key="k", emit=_no_events)(scope, receive, send))
    assert len(got) == 1
    assert got[0][0] is scope and got[0][1] is receive and got[0][2] is send
    assert scope == before


def test_servers_and_adapters_that_inspect_the_middleware_take_it_for_an_asgi3_app() -> None:
    """hypercorn, uvicorn and asgiref choose between ASGI 2 and 3 by asking whether ``app.__call__`` is a
    coroutine function; calling that serves a request as calling the app does."""
    import inspect

    import uvicorn
    from asgiref.compatibility import guarantee_single_callable

    middleware = trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)
    assert inspect.iscoroutinefunction(middleware.__call__)
    assert asyncio.iscoroutinefunction(middleware.__call__)
    assert guarantee_single_callable(middleware) is middleware
    config = uvicorn.Config(middleware)
    config.load()
    assert config.interface == "asgi3"

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    for call in (middleware, middleware.__call__):
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        asyncio.run(call(_scope(), receive, send))
        headers = dict(sent[0]["headers"])
        assert CODE.match(headers[b"set-cookie"].decode().split(";")[0].removeprefix("tg_vid="))
        assert json.loads(sent[1]["body"])["is_new"] is True


def _first_visit_through(call: Callable[..., Any], **by_keyword: Any) -> bool:
    """Whether a first visit served by ``call`` got a visitor cookie and the app a new visitor."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def served() -> None:
        if by_keyword:
            await call(scope=_scope(), receive=receive, send=send)
        else:
            await call(_scope(), receive, send)

    asyncio.run(served())
    cookie = dict(sent[0]["headers"]).get(b"set-cookie", b"").decode()
    return bool(CODE.match(cookie.split(";")[0].removeprefix("tg_vid="))) and json.loads(sent[1]["body"])["is_new"]


def test_the_middleware_is_called_by_keyword_through_a_subclass_and_unbound_as_it_is_positionally() -> None:
    middleware = trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)
    assert _first_visit_through(middleware, by_keyword=True)
    assert _first_visit_through(functools.partial(trackgate.ASGIMiddleware.__call__, middleware))
    assert _first_visit_through(middleware.__call__)

    calls: list[str] = []

    class Counted(trackgate.ASGIMiddleware):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # type: ignore[override]
            calls.append(scope["path"])
            await super().__call__(scope, receive, send)

    counted = Counted(asgi_app, secret_key="k", emit=_no_events)
    assert _first_visit_through(counted) and _first_visit_through(counted.__call__)
    assert calls == ["/", "/"]


def test_tools_that_wrap_middleware_classes_call_find_a_method_they_can_wrap() -> None:
    """Error trackers and tracers (sentry-sdk's Starlette integration, for one) read the name of a middleware
    class's __call__ and replace it with a wrapper calling the old one with the middleware first."""
    import inspect

    class Wrapped(trackgate.ASGIMiddleware):
        pass

    old_call = Wrapped.__call__
    assert old_call.__name__ == "__call__" and old_call.__qualname__.endswith("__call__")
    assert list(inspect.signature(old_call).parameters)[-3:] == ["scope", "receive", "send"]
    assert list(inspect.signature(Wrapped(asgi_app, secret_key="k", emit=_no_events)).parameters) == [
        "scope", "receive", "send"
    ]
    wrapped: list[str] = []

    async def traced_call(app: Any, scope: Any, receive: Any, send: Any) -> None:
        wrapped.append(old_call.__name__)
        await old_call(app, scope, receive, send)

    Wrapped.__call__ = traced_call  # type: ignore[method-assign,assignment]
    assert _first_visit_through(Wrapped(asgi_app, secret_key="k", emit=_no_events)) and wrapped == ["__call__"]


def test_a_middleware_nothing_refers_to_is_freed_at_once() -> None:
    """It holds no reference to itself, so it and its app go without waiting for the cycle collector."""
    import gc
    import weakref

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asgi_app(scope, receive, send)

    middleware = trackgate.ASGIMiddleware(app, secret_key="k", emit=_no_events)
    assert _first_visit_through(middleware)
    gone, app_gone = weakref.ref(middleware), weakref.ref(app)
    gc.disable()
    try:
        del middleware, app
        assert gone() is None and app_gone() is None
    finally:
        gc.enable()


def test_a_compiled_start_configuration_the_call_cannot_read_leaves_the_request_to_the_python_code() -> None:
    middleware = trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)
    middleware._fast = ("not", "a", "configuration")
    assert _first_visit_through(middleware)


def test_scope_without_state_key_works() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope()
    assert "state" not in scope
    asyncio.run(trackgate.ASGIMiddleware(asgi_app, secret_key="k", emit=_no_events)(scope, receive, send))
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert CODE.match(body["code"])


def _call_wsgi(app: Any, environ: dict[str, Any] | None = None) -> tuple[Any, list[Any]]:
    calls: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        calls.append((status, headers, exc_info))
        return lambda data: None

    middleware = trackgate.WSGIMiddleware(app, secret_key="k", emit=_no_events)
    return middleware(environ or _environ(), start_response), calls


class _FileWrapper:
    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike

    def __iter__(self) -> Iterator[bytes]:
        return iter([self.filelike.read()])

    def close(self) -> None:
        self.filelike.close()


def test_file_wrapper_responses_come_back_as_the_same_object() -> None:
    returned: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/pdf")])
        returned.append(environ["wsgi.file_wrapper"](io.BytesIO(b"%PDF")))
        return returned[0]

    environ = _environ() | {"wsgi.file_wrapper": _FileWrapper}
    result, _ = _call_wsgi(app, environ)
    assert result is returned[0]


def test_exc_info_is_forwarded_to_start_response() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error"]

    result, calls = _call_wsgi(app)
    assert b"".join(result) == b"error"
    assert len(calls) == 1
    exc_info = calls[0][2]
    assert exc_info is not None and isinstance(exc_info[1], RuntimeError)


class _Body:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(
    ("content_type", "chunks"),
    [
        ("text/html; charset=utf-8", [b"<html><body><a href='https://x.org/'>x</a></body></html>"]),
        ("application/json", [b'{"a": 1}']),
        ("text/plain", [b"a", b"b"]),
    ],
)
def test_close_of_the_app_iterable_is_called_once(content_type: str, chunks: list[bytes]) -> None:
    body = _Body(chunks)

    def app(environ: dict[str, Any], start_response: Any) -> _Body:
        start_response("200 OK", [("Content-Type", content_type)])
        return body

    result, _ = _call_wsgi(app)
    assert b"".join(result)
    result.close()  # type: ignore[attr-defined]
    assert body.closed == 1


def test_a_cookie_header_read_once_serves_every_request_that_sends_it() -> None:
    from trackgate.identity import Identity

    identity = Identity(trackgate.Settings.from_environ({}, secret_key="k"))
    header = "theme=dark; tg_vid=returning.visitor-1"
    first = identity.resolve(header, "", None)
    second = identity.resolve(header, "", None)
    assert first.visitor == second.visitor == ("returning.visitor-1", False, True)
    assert first is not second  # per-request state is never shared, only the reading of the header
    long_header = "big=" + "x" * 5000 + "; tg_vid=returning.visitor-1"  # read each time, not remembered
    assert identity.resolve(long_header, "", None).visitor.code == "returning.visitor-1"
    assert identity._read_cookies.cache_info().currsize == 1
    duplicated = identity.resolve("tg_vid=a-code; tg_vid=another", "", None)
    assert duplicated.visitor.is_new and duplicated.visitor.code not in ("a-code", "another")


@pytest.mark.parametrize("path", ["/", "/_tg/health", "/_tg/o/sometoken"])
def test_a_cookie_header_werkzeug_cannot_read_never_escapes_the_shell(path: str) -> None:
    # A server or harness handing over decoded text (not PEP 3333's latin-1), with the visitor cookie twice.
    got: list[str] = []
    environ = {**_environ(path), "HTTP_COOKIE": "tg_vid=\u20ac; tg_vid=abc123"}
    middleware = trackgate.WSGIMiddleware(wsgi_app, secret_key="k", emit=_no_events)
    body = b"".join(middleware(environ, lambda status, headers, exc_info=None: got.append(status)))
    assert got[0].split()[0] == ("404" if path.endswith("sometoken") else "200")
    if path == "/":
        assert json.loads(body)["is_new"] is True  # neither code trusted: a fresh visitor
