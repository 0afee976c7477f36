"""trackgate.record / identify / set_properties / track_conversion."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, wait_until_serving
from sinks import WebhookReceiver

import trackgate
from trackgate import Event, Visitor
from trackgate.dispatch.spool import Spool
from trackgate.lookup import EMIT_KEY


@pytest.fixture
def emitted() -> list[Event]:
    return []


@pytest.fixture
def environ(emitted: list[Event]) -> dict[str, object]:
    """An environ whose shell left its emit behind, as a middleware's request would have."""
    return {"wsgi.version": (1, 0), EMIT_KEY: emitted.append}


@pytest.mark.parametrize(
    "holder",
    ["v-code-1", Visitor(code="v-code-1", is_new=False, consent=True)],
    ids=["code-string", "visitor"],
)
def test_helpers_accept_a_code_or_a_visitor(holder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Event] = []
    monkeypatch.setattr("trackgate.dispatch.submit", sent.append)
    event = trackgate.record(holder, "clicked-buy", {"color": "red"})
    assert sent == [event]
    assert (event.kind, event.name, event.visitor, dict(event.properties)) == (
        "custom", "clicked-buy", "v-code-1", {"color": "red"}
    )


def test_each_helper_makes_its_kind_of_event() -> None:
    code = Visitor(code="abc", is_new=False, consent=True)
    for made in (
        trackgate.set_properties(code, {"plan": "pro"}),
        trackgate.identify(code, "user-9"),
        trackgate.track_conversion(code, "checkout", revenue=30),
    ):
        assert made.visitor == "abc"
    kinds = [(e.kind, e.name, e.user_id, e.revenue) for e in _sent]
    assert kinds == [("set", "set", None, None), ("identify", "identify", "user-9", None),
                     ("conversion", "checkout", None, 30.0)]


_sent: list[Event] = []


@pytest.fixture(autouse=True)
def _capture_default_submit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _sent.clear()
    monkeypatch.setattr("trackgate.dispatch.submit", _sent.append)
    yield


def test_an_environ_with_a_shells_emit_uses_it(environ: dict[str, object], emitted: list[Event]) -> None:
    from trackgate.lookup import STATE_KEY

    environ[STATE_KEY] = _state("from-environ")
    event = trackgate.record(environ, "viewed-pricing")
    assert emitted == [event]
    assert event.visitor == "from-environ"
    assert _sent == []


def _state(code: str) -> object:
    from trackgate.identity import VisitorState

    return VisitorState(Visitor(code=code, is_new=False, consent=True), None, code)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: trackgate.record({"not": "a request"}, "x"), LookupError),
        (lambda: trackgate.record("", "x"), LookupError),
        (lambda: trackgate.identify("abc", ""), ValueError),
        (lambda: trackgate.track_conversion("abc", "goal", revenue="12"), TypeError),  # type: ignore[arg-type]
        (lambda: trackgate.record("abc", "x", ["not", "a", "mapping"]), TypeError),  # type: ignore[arg-type]
    ],
    ids=["no-visitor", "empty-code", "empty-user-id", "revenue-not-number", "properties-not-mapping"],
)
def test_bad_arguments_raise_clear_errors(call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()  # type: ignore[operator]
    assert _sent == []


@pytest.mark.parametrize("shell", ["wsgi", "asgi"])
def test_an_event_recorded_with_a_request_keeps_that_request(shell: str) -> None:
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient
    from werkzeug.test import Client
    from werkzeug.wrappers import Request as WSGIRequest
    from werkzeug.wrappers import Response as WSGIResponse

    recorded: list[Event] = []

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        trackgate.track_conversion(WSGIRequest(environ), "checkout", revenue=9.5)
        return WSGIResponse("ok")(environ, start_response)

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        trackgate.track_conversion(Request(scope, receive), "checkout", revenue=9.5)
        await PlainTextResponse("ok")(scope, receive, send)

    options: dict[str, Any] = {"secret_key": "k", "emit": recorded.append, "anonymize_ip": 1, "trusted_proxies": 1}
    headers = {
        "User-Agent": "Shop/2.0", "Accept-Language": "de", "Referer": "https://shop.example/cart",
        "X-Forwarded-For": "198.51.100.23",
    }
    url = "/checkout?tg_vid=from.email-1&step=2"  # the visitor parameter carries one visitor's code
    if shell == "wsgi":
        Client(trackgate.WSGIMiddleware(wsgi_app, **options)).get(url, headers=headers)
    else:
        TestClient(trackgate.ASGIMiddleware(asgi_app, **options)).get(url, headers=headers)
    [event] = recorded
    assert (event.kind, event.visitor, event.revenue) == ("conversion", "from.email-1", 9.5)
    assert event.url == ("http://localhost" if shell == "wsgi" else "http://testserver") + "/checkout?step=2"
    assert (event.user_agent, event.language, event.referrer) == ("Shop/2.0", "de", "https://shop.example/cart")
    assert event.ip == "198.51.100.0"


def test_an_event_recorded_with_a_code_keeps_no_request() -> None:
    event = trackgate.record("v-code-1", "x")
    assert (event.url, event.user_agent, event.ip, event.language, event.referrer) == (None,) * 5


@pytest.mark.server
@pytest.mark.timeout(60)
def test_helpers_in_an_app_behind_the_middleware_reach_the_receiver(tmp_path: Path) -> None:
    from servers import TESTS_DIR

    with WebhookReceiver() as hook:
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin", "PYTHONPATH": str(TESTS_DIR), "TRACKGATE_SINKS": "webhook",
            "TRACKGATE_WEBHOOK_URL": hook.url, "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
            "TRACKGATE_ANONYMIZE_IP": "1",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "dispatch_apps:helpers_app()", "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(port, process)
            response = httpx.get(
                f"http://127.0.0.1:{port}/signup?plan=pro",
                headers={"User-Agent": "HelperTest/1.0", "Accept-Language": "fr-CH, fr;q=0.9",
                         "Referer": "https://search.example/"},
                timeout=10,
            )
            assert response.status_code == 200
            visitor = response.text
            assert visitor
            assert hook.wait_delivered(3, 30)
        finally:
            process.terminate()
            process.wait(20)
            if process.stdout:
                process.stdout.close()
        got = sorted((p["kind"], p["name"], p["visitor"], p.get("user_id"), p.get("revenue"))
                     for p in hook.payloads())
        assert got == [
            ("conversion", "checkout", visitor, None, 12.5),
            ("custom", "signed-up", visitor, None, None),
            ("identify", "identify", visitor, "user-1", None),
        ]
        # Each keeps the request it was recorded with, as the middleware's own events do.
        for payload in hook.payloads():
            assert payload["url"] == f"http://127.0.0.1:{port}/signup?plan=pro"
            assert (payload["user_agent"], payload["language"]) == ("HelperTest/1.0", "fr-CH")
            assert (payload["referrer"], payload["ip"]) == ("https://search.example/", "127.0.0.0")
        assert Spool(tmp_path / "spool.sqlite3").backlog() == 0


def test_helpers_inside_an_app_reach_that_middlewares_destination() -> None:
    """Two middlewares in one process, each with its own destination: the app's events follow its own."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient
    from werkzeug.test import Client
    from werkzeug.wrappers import Request as WSGIRequest
    from werkzeug.wrappers import Response as WSGIResponse

    wsgi_events: list[Event] = []
    asgi_events: list[Event] = []

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        trackgate.record(WSGIRequest(environ), "signup", {"plan": "pro"})
        return WSGIResponse("ok")(environ, start_response)

    async def asgi_view(request: Request) -> PlainTextResponse:
        trackgate.track_conversion(request, "purchase", revenue=12.5)
        return PlainTextResponse("ok")

    wsgi = Client(trackgate.WSGIMiddleware(wsgi_app, secret_key="k", emit=wsgi_events.append))
    response = wsgi.get("/")
    code = response.headers["Set-Cookie"].split(";")[0].split("=")[1]
    response.close()
    asgi = TestClient(
        trackgate.ASGIMiddleware(Starlette(routes=[Route("/", asgi_view)]), secret_key="k", emit=asgi_events.append)
    )
    asgi_code = asgi.get("/").cookies["tg_vid"]

    assert [(e.kind, e.name, e.visitor, dict(e.properties)) for e in wsgi_events] == [
        ("custom", "signup", code, {"plan": "pro"})
    ]
    assert [(e.kind, e.visitor, e.revenue) for e in asgi_events] == [("conversion", asgi_code, 12.5)]


@pytest.mark.server
@pytest.mark.timeout(60)
def test_events_recorded_with_a_visitor_or_a_code_go_where_a_keyword_configured_middleware_sends(
    tmp_path: Path,
) -> None:
    # No TRACKGATE_SINKS in the environment: these went to the environment's default, the local store.
    from servers import TESTS_DIR

    with WebhookReceiver() as hook:
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin", "PYTHONPATH": str(TESTS_DIR), "HOOK_URL": hook.url,
            "HOOK_SPOOL": str(tmp_path / "spool.sqlite3"), "XDG_DATA_HOME": str(tmp_path / "data"),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "dispatch_apps:keyword_configured_app()", "--bind",
             f"127.0.0.1:{port}", "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            wait_until_serving(port, process)
            visitor = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
            assert hook.wait_delivered(2, 30), hook.payloads()
        finally:
            process.terminate()
            process.wait(20)
            if process.stdout:
                process.stdout.close()
    assert sorted((p["name"], p["visitor"]) for p in hook.payloads()) == [("by-code", visitor), ("by-visitor", visitor)]
    assert not (tmp_path / "data").exists()  # nothing went to a local store


def test_a_middleware_loads_its_sinks_at_start_up_not_in_the_first_request_that_records() -> None:
    # The first request to record an event waited for aiohttp and the adapters to import (about 0.15 s).
    code = (
        "import sys, trackgate\n"
        "trackgate.WSGIMiddleware(lambda environ, start: [], sinks='store,webhook', webhook_url='http://127.0.0.1:9/')\n"
        "print(all(m in sys.modules for m in ('aiohttp', 'trackgate.adapters.store', 'trackgate.adapters.webhook')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "True", result.stderr
