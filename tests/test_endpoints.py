"""The tracking endpoints: answer() on request facts, then through the WSGI and ASGI shells."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import pytracking
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.datastructures import Headers
from werkzeug.middleware.lint import LintMiddleware
from werkzeug.test import Client

import trackgate
from trackgate import _boundary
from trackgate.endpoints import PIXEL_GIF, answer
from trackgate.events import Event
from trackgate.facts import RequestFacts
from trackgate.gate import Gate
from trackgate.identity import new_code
from trackgate.tokens import TokenCodec

BASE = "https://t.example.org"
PIXEL_HEADERS = {
    "content-type": "image/gif",
    "content-length": str(len(PIXEL_GIF)),
    "cache-control": "no-store, no-cache, must-revalidate, private",
    "pragma": "no-cache",
    "expires": "0",
}


def _settings(**overrides: Any) -> trackgate.Settings:
    return trackgate.Settings.from_environ({}, secret_key="endpoint-key", base_url=BASE, **overrides)


def _facts(
    path: str, *, method: str = "GET", headers: dict[str, str] | None = None, client: str | None = None
) -> RequestFacts:
    return RequestFacts(
        method=method,
        scheme="https",
        host="t.example.org",
        path=path,
        query_string="",
        headers=Headers(headers or {}),
        client_addr=client,
    )


def _path(link: str) -> str:
    return link.removeprefix(BASE)


class _Recorder:
    def __init__(self, settings: trackgate.Settings) -> None:
        self.events: list[Event] = []
        self.gate = Gate(settings, emit=self.events.append)
        self.links = trackgate.TrackingLinks(settings)

    def __call__(self, facts: RequestFacts, visitor: str | None = None) -> tuple[int, dict[str, str], bytes]:
        reply = answer(facts, visitor, self.gate)
        names = [name.lower() for name, _ in reply.headers]
        assert len(names) == len(set(names)), reply.headers
        return reply.status, {name.lower(): value for name, value in reply.headers}, reply.body


@pytest.fixture
def rec() -> _Recorder:
    return _Recorder(_settings(anonymize_ip=1))


class TestAnswer:
    def test_pixel_is_a_never_cached_gif_and_records_an_open(self, rec: _Recorder) -> None:
        status, headers, body = rec(
            _facts(
                _path(rec.links.open_url({"recipient": "r-1"})),
                headers={"User-Agent": "Mail/1.0", "Accept-Language": "de-CH;q=0.8, fr;q=0.9", "Referer": "x"},
                client="203.0.113.77",
            )
        )
        assert (status, headers, body) == (200, PIXEL_HEADERS, PIXEL_GIF)
        assert body.startswith(b"GIF89a\x01\x00\x01\x00")
        [event] = rec.events
        assert (event.kind, event.url, dict(event.metadata)) == ("open", None, {"recipient": "r-1"})
        assert (event.user_agent, event.ip, event.language, event.referrer) == ("Mail/1.0", "203.0.113.0", "fr", "x")

    @pytest.mark.parametrize("came_from", ["https://search.example/?q=linen", None])
    def test_a_page_view_s_referrer_is_the_page_s_not_the_pixel_s(self, rec: _Recorder, came_from: str | None) -> None:
        page = rec.links.for_page("https://shop.example/linen", BASE, referrer=came_from)
        pixel = page.open_url(title="Linen")
        # The browser asks for the pixel with the page itself as the Referer.
        rec(_facts(_path(pixel), headers={"Referer": "https://shop.example/linen"}))
        [event] = rec.events
        assert (event.kind, event.url, event.title) == ("pageview", "https://shop.example/linen", "Linen")
        assert event.referrer == came_from

    def test_a_click_s_referrer_is_its_page_as_that_page_s_views_record_it(self, rec: _Recorder) -> None:
        link = rec.links.click_url("https://partner.example/")
        rec(_facts(_path(link), headers={"Referer": "https://shop.example/p?tg_vid=from.email-1&ref=nl#top"}))
        assert rec.events[0].referrer == "https://shop.example/p?ref=nl#top"  # one visitor's code left out

    def test_head_answers_the_same_headers_and_records_nothing(self, rec: _Recorder) -> None:
        status, headers, _ = rec(_facts(_path(rec.links.open_url()), method="HEAD"))
        assert (status, headers) == (200, PIXEL_HEADERS)
        status, headers, _ = rec(_facts(_path(rec.links.click_url("https://example.org/")), method="HEAD"))
        assert (status, headers["location"]) == (302, "https://example.org/")
        assert rec.events == []

    def test_click_redirects_and_records_the_visitor(self, rec: _Recorder) -> None:
        code = new_code()
        link = rec.links.click_url("https://exämple.org/päth?q=ü", {"r": 7})
        status, headers, body = rec(_facts(_path(link), client="2001:db8:1:2:3:4:5:6"), code)
        assert (status, body) == (302, b"")
        assert headers == {
            "location": "https://xn--exmple-cua.org/p%C3%A4th?q=%C3%BC",
            "cache-control": "no-store",
            "content-length": "0",
        }
        [event] = rec.events
        assert (event.kind, event.url, event.visitor, dict(event.metadata)) == (
            "click",
            "https://exämple.org/päth?q=ü",
            code,
            {"r": 7},
        )
        assert event.ip == "2001:db8:1:2::"

    @pytest.mark.parametrize(
        ("header", "language"),
        [("fr-CH, fr;q=0.9, en;q=0.8", "fr-CH"), ("*", None), ("x" * 300, None), ("en-US;q=0.5, de", "de"), ("", None)],
    )
    def test_language_is_the_preferred_well_formed_tag(self, rec: _Recorder, header: str, language: str | None) -> None:
        rec(_facts(_path(rec.links.open_url()), headers={"Accept-Language": header}))
        assert rec.events[0].language == language

    def test_event_id_is_the_decoded_results(self, rec: _Recorder) -> None:
        rec(_facts(_path(rec.links.click_url("https://example.org/"))))
        rec(_facts(_path(rec.links.click_url("https://example.org/"))))
        assert len({event.id for event in rec.events}) == 2

    def test_page_pixel_records_a_page_view(self, rec: _Recorder) -> None:
        pixel = rec.links.for_page("https://shop.example/p", "https://shop.example").open_url()
        status, _, _ = rec(_facts(pixel.removeprefix("https://shop.example")), "v")
        [event] = rec.events
        assert (status, event.kind, event.url) == (200, "pageview", "https://shop.example/p")

    def test_expired_click_still_redirects_and_records_nothing(self, rec: _Recorder) -> None:
        codec = TokenCodec(rec.gate.settings.signing_keys)
        click = codec.dumps({"u": "https://example.org/old"}, "click", expires_at=1)
        status, headers, _ = rec(_facts(f"/_tg/c/{click}"))
        assert (status, headers["location"]) == (302, "https://example.org/old")
        opened = codec.dumps({}, "open", expires_at=1)
        assert rec(_facts(f"/_tg/o/{opened}"))[0] == 200
        assert rec.events == []
        assert rec.gate.counters["expired_token"] == 2

    @pytest.mark.parametrize(
        "path",
        ["/_tg/c/nonsense", "/_tg/o/nonsense", "/_tg/c/", "/_tg/c/a.b", "/_tg/o/%00", "/_tg/c/" + "A" * 20000],
        ids=["click", "open", "empty", "forged", "nul", "huge"],
    )
    def test_bad_tokens_are_404_without_an_event(self, rec: _Recorder, path: str) -> None:
        status, headers, body = rec(_facts(path))
        assert (status, body) == (404, b"Not found\n")
        assert headers["content-length"] == str(len(body))
        assert rec.events == []
        assert rec.gate.counters["bad_token"] == 1

    def test_tampered_and_cross_purpose_tokens_are_404(self, rec: _Recorder) -> None:
        link = _path(rec.links.click_url("https://example.org/"))
        tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
        opened = _path(rec.links.open_url()).replace("/o/", "/c/")
        for path in (tampered, opened, link[:-1]):
            assert rec(_facts(path))[0] == 404
        assert rec.events == []

    def test_unknown_paths_are_404_and_other_methods_405(self, rec: _Recorder) -> None:
        assert rec(_facts("/_tg/x/abc"))[0] == 404
        assert rec(_facts("/_tg"))[0] == 404
        assert rec.gate.counters["not_found"] == 2
        status, headers, _ = rec(_facts(_path(rec.links.open_url()), method="POST"))
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert rec.events == []

    def test_a_failing_emit_never_costs_the_visitor_the_redirect(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def broken(event: Event) -> None:
            raise RuntimeError("sink down")

        monkeypatch.setattr(_boundary, "RAISE_INTERNAL", False)
        gate = Gate(_settings(), emit=broken)
        link = _path(gate.links.click_url("https://example.org/"))
        reply = answer(_facts(link), None, gate)
        assert reply.status == 302
        assert gate.counters["emit_failed"] == 1


@given(tail=st.text(max_size=300), method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS"]))
@settings(max_examples=300, deadline=None)
def test_any_path_under_the_prefix_gets_a_plain_answer_and_no_event(tail: str, method: str) -> None:
    rec = _Recorder(_settings())
    for path in (f"/_tg/{tail}", f"/_tg/c/{tail}", f"/_tg/o/{tail}"):
        status, _, _ = rec(_facts(path, method=method))
        assert status in (404, 405)
    assert rec.events == []


def _pytracking_click(url: str) -> str:
    return _path(pytracking.get_click_tracking_url(url, {"r": 1}, base_click_tracking_url=BASE + "/_tg/c/"))


class TestLegacyLinks:
    def test_a_forged_pytracking_token_is_404(self, rec: _Recorder) -> None:
        assert rec(_facts(_pytracking_click("https://evil.example/")))[0] == 404

    def test_legacy_mode_redirects_only_to_allowed_hosts(self) -> None:
        rec = _Recorder(_settings(legacy_pytracking=True, redirect_allowed_hosts="shop.example"))
        status, headers, _ = rec(_facts(_pytracking_click("https://shop.example/sale")))
        assert (status, headers["location"]) == (302, "https://shop.example/sale")
        assert rec(_facts(_pytracking_click("https://evil.example/")))[0] == 404
        [event] = rec.events
        assert (event.kind, event.url, dict(event.metadata)) == ("click", "https://shop.example/sale", {"r": 1})

    def test_legacy_links_with_pytracking_append_slash_or_a_protocol_relative_destination_redirect(self) -> None:
        rec = _Recorder(_settings(legacy_pytracking=True, redirect_allowed_hosts="shop.example"))
        slashed = pytracking.get_click_tracking_url(
            "https://shop.example/sale", append_slash=True, base_click_tracking_url=BASE + "/_tg/c/"
        )
        assert slashed.endswith("/")
        status, headers, _ = rec(_facts(_path(slashed)))
        assert (status, headers["location"]) == (302, "https://shop.example/sale")
        status, headers, _ = rec(_facts(_pytracking_click("//shop.example/x")))
        assert (status, headers["location"]) == (302, "https://shop.example/x")
        assert rec(_facts(_pytracking_click("//evil.example/x")))[0] == 404
        assert [e.url for e in rec.events] == ["https://shop.example/sale", "https://shop.example/x"]

    def test_a_legacy_link_to_a_disguised_host_is_a_404_not_a_redirect_or_a_500(self) -> None:
        # A fullwidth backslash: IDNA's NFKC makes it "\\" in the Location, and browsers end the host there.
        rec = _Recorder(_settings(legacy_pytracking=True, redirect_allowed_hosts=".partner.example"))
        for url in ("https://evil.example\uff3c.partner.example/", "https://[x.partner.example/"):
            assert rec(_facts(_pytracking_click(url)))[0] == 404
        assert rec.events == []

    def test_legacy_open_pixels_record_opens(self) -> None:
        rec = _Recorder(_settings(legacy_pytracking=True))
        link = pytracking.get_open_tracking_url({"r": 2}, base_open_tracking_url=BASE + "/_tg/o/")
        assert rec(_facts(_path(link)))[0] == 200
        assert [dict(e.metadata) for e in rec.events] == [{"r": 2}]


# --- through the shells ---------------------------------------------------------------------------------


def _wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


async def _asgi_home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("app")


Fetch = Callable[..., tuple[int, dict[str, str], bytes]]


@pytest.fixture(params=["wsgi", "asgi"])
def shell(request: pytest.FixtureRequest) -> Iterator[tuple[Fetch, list[Event], trackgate.Settings]]:
    settings = _settings(trusted_proxies=1, anonymize_ip=2)
    events: list[Event] = []
    if request.param == "wsgi":
        middleware = trackgate.WSGIMiddleware(_wsgi_app, settings, emit=events.append)
        # The shell leaves the body out of HEAD answers (servers would drop it), which LintMiddleware
        # reads as a Content-Length mismatch; every other request goes through the linter.
        linted, plain = Client(LintMiddleware(middleware)), Client(middleware)

        def fetch(method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
            client = plain if method == "HEAD" else linted
            headers = dict(headers or {})
            cookie = headers.pop("Cookie", None)
            if cookie is not None:  # the test client sends its own cookie jar, not a Cookie header
                name, _, value = cookie.partition("=")
                client.set_cookie(name, value)
            response = client.open(path, method=method, headers=headers)
            try:
                return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.get_data()
            finally:
                response.close()

        yield fetch, events, settings
    else:
        app = trackgate.ASGIMiddleware(Starlette(routes=[Route("/", _asgi_home)]), settings, emit=events.append)
        with TestClient(app, base_url="https://t.example.org", follow_redirects=False) as client:

            def fetch(
                method: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
                response = client.request(method, path, headers=headers or {})
                return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content

            yield fetch, events, settings


def test_shell_pixel_click_head_and_bad_token(shell: tuple[Fetch, list[Event], trackgate.Settings]) -> None:
    fetch, events, settings = shell
    links = trackgate.TrackingLinks(settings)
    status, headers, body = fetch("GET", _path(links.open_url({"r": 1})), {"X-Forwarded-For": "203.0.113.50"})
    assert (status, body) == (200, PIXEL_GIF)
    assert {k: headers[k] for k in PIXEL_HEADERS} == PIXEL_HEADERS
    status, headers, body = fetch("HEAD", _path(links.open_url()))
    assert (status, body, headers["cache-control"]) == (200, b"", PIXEL_HEADERS["cache-control"])
    code = new_code()
    status, headers, _ = fetch(
        "GET", _path(links.click_url("https://example.org/x", {"r": 2})), {"Cookie": f"tg_vid={code}"}
    )
    assert (status, headers["location"], headers["cache-control"]) == (302, "https://example.org/x", "no-store")
    assert fetch("GET", "/_tg/c/forged.token")[0] == 404
    assert fetch("DELETE", _path(links.open_url()))[0] == 405
    opened, clicked = events
    assert (opened.kind, opened.ip, dict(opened.metadata)) == ("open", "203.0.0.0", {"r": 1})
    assert (clicked.kind, clicked.url, clicked.visitor) == ("click", "https://example.org/x", code)
    assert json.loads(fetch("GET", "/_tg/health")[2])["status"] == "ok"
    assert fetch("GET", "/")[2] == b"app"


def test_shell_refuses_a_forged_pytracking_redirect(shell: tuple[Fetch, list[Event], trackgate.Settings]) -> None:
    fetch, events, _ = shell
    forged = base64.urlsafe_b64encode(json.dumps({"url": "https://evil.example/"}).encode()).decode()
    assert fetch("GET", f"/_tg/c/{forged}")[0] == 404
    assert events == []


PAGE = b'<!DOCTYPE html><html><body><a id="out" href="https://partner.example/p?a=1&amp;b=2">x</a></body></html>'


def _wsgi_page(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


async def _asgi_page(request: Any) -> Any:
    from starlette.responses import HTMLResponse

    return HTMLResponse(PAGE)


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_links_of_a_rewritten_page_record_a_page_view_and_a_click(kind: str) -> None:
    import re

    settings = trackgate.Settings.from_environ({}, secret_key="endpoint-key")
    events: list[Event] = []
    if kind == "wsgi":
        client: Any = Client(trackgate.WSGIMiddleware(_wsgi_page, settings, emit=events.append))
        page = client.get("/shop", base_url="https://shop.example").get_data(as_text=True)
    else:
        app = trackgate.ASGIMiddleware(Starlette(routes=[Route("/shop", _asgi_page)]), settings, emit=events.append)
        client = TestClient(app, base_url="https://shop.example", follow_redirects=False)
        page = client.get("/shop").text
    href = re.search(r'href="([^"]+)"', page)[1]  # type: ignore[index]
    src = re.search(r'<img[^>]*src="([^"]+)"', page)[1]  # type: ignore[index]
    assert href.startswith("https://shop.example/_tg/c/") and src.startswith("https://shop.example/_tg/o/")
    # Both clients keep the visitor cookie set with the page, for the same origin.
    extra = {"base_url": "https://shop.example"} if kind == "wsgi" else {}
    pixel = client.get(src.removeprefix("https://shop.example"), **extra)
    click = client.get(href.removeprefix("https://shop.example"), **extra)
    assert (pixel.status_code, click.status_code) == (200, 302)
    assert click.headers["Location"] == "https://partner.example/p?a=1&b=2"
    for response in (pixel, click):
        if hasattr(response, "close"):
            response.close()
    assert [(e.kind, e.url) for e in events] == [
        ("pageview", "https://shop.example/shop"),
        ("click", "https://partner.example/p?a=1&b=2"),
    ]
    assert events[0].visitor is not None and events[0].visitor == events[1].visitor


def test_language_headers_are_read_once_within_a_bound() -> None:
    from trackgate.requestfacts import _cached_language, preferred_language

    _cached_language.cache_clear()
    assert [preferred_language(f"en-a{i}, fr;q=0.5") for i in range(2000)][-1] == "en-a1999"
    assert _cached_language.cache_info().currsize == 1024  # the oldest are forgotten
    assert preferred_language("fr, " + "y" * 300) == "fr" and _cached_language.cache_info().currsize == 1024
    preferred_language("de-CH, de;q=0.9")
    preferred_language("de-CH, de;q=0.9")
    assert _cached_language.cache_info().hits >= 1


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("https://s.example/p", "https://s.example/p"),
        ("https://s.example/p?tg_vid=a", "https://s.example/p"),
        ("https://s.example/p?a=1&tg_vid=b&c=2#x", "https://s.example/p?a=1&c=2#x"),
        ("https://s.example/p?tg_vidx=1", "https://s.example/p?tg_vidx=1"),  # another parameter
        ("https://s.example/p#f?tg_vid=a", "https://s.example/p#f?tg_vid=a"),  # in the fragment: not a parameter
    ],
)
def test_urls_are_recorded_without_the_visitor_parameter(url: str, recorded: str) -> None:
    assert Gate(_settings()).without_visitor_param(url) == recorded


def test_a_middleware_outside_that_adds_headers_adds_them_once_per_reply() -> None:
    """The pixel's and the 404's headers are encoded once; each reply still gets a list of its own, so an
    outer middleware that appends to it in place changes one reply."""
    inner = trackgate.ASGIMiddleware(
        Starlette(routes=[Route("/", _asgi_home)]), secret_key="endpoint-key", emit=lambda event: None
    )

    async def stamping(scope: Any, receive: Any, send: Any) -> None:
        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"].append((b"x-stamp", b"1"))
            await send(message)

        await inner(scope, receive, stamped)

    with TestClient(stamping) as client:
        pixel = trackgate.TrackingLinks(_settings(), base_url="http://testserver").open_url()
        for path in (_path(pixel), _path(pixel), "/_tg/nothing", "/_tg/nothing"):
            response = client.get(path)
            assert response.headers.get_list("x-stamp") == ["1"]


def test_the_asgi_shell_reads_header_names_in_any_case_and_joins_repeated_lines() -> None:
    """ASGI asks servers for lower-case header names; one that sends the event's headers as the client spelt
    them (or repeats a line) still gets the event they describe, and the visitor of its split Cookie (read as
    the shell reads it for every request: lower-case names, as ASGI says)."""
    events: list[Event] = []
    settings = _settings(trusted_proxies=1)
    app = trackgate.ASGIMiddleware(_wsgi_app, settings, emit=events.append)  # (never called: our path)
    known = new_code()
    link = trackgate.TrackingLinks(settings).click_url("https://shop.example/p")
    headers = [
        (b"User-Agent", b"Browser/1.0"),
        (b"Accept-Language", b"de-CH, de;q=0.9"),
        (b"X-Forwarded-For", b"198.51.100.7"),
        (b"x-forwarded-for", b"203.0.113.5"),  # the trusted proxy's line: the client is its entry
        (b"cookie", f"tg_vid={known}".encode()),
        (b"cookie", b"theme=dark"),
        (b"Referer", b"https://mail.example/inbox"),
    ]
    path = _path(link)
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"",
             "headers": headers, "client": ("10.0.0.1", 5000), "server": ("t.example.org", 443), "scheme": "https"}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 302
    assert dict(sent[0]["headers"])[b"location"] == b"https://shop.example/p"
    [event] = events
    assert (event.user_agent, event.language, event.ip) == ("Browser/1.0", "de-CH", "203.0.113.5")
    assert (event.visitor, event.referrer) == (known, "https://mail.example/inbox")
