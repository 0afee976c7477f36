"""HTML responses rewritten by the middleware on real servers: gzip bodies decoded and encoded again with a
true Content-Length, streamed bodies without one, fragments without a page-view pixel, and HEAD, 304, downloads
and opted-out responses untouched."""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from apps_rewriting import PAGE, STATIC_PAGE
from servers import serve

from trackgate import Settings, TrackingLinks

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

ENV = {"TRACKGATE_SECRET_KEY": "rewrite-test-key", "TRACKGATE_SINKS": "console"}


@pytest.fixture(scope="module")
def asgi() -> Iterator[str]:
    with serve("uvicorn", "apps_rewriting:asgi_app", env=ENV) as base:
        yield base


def raw_get(url: str, method: str = "GET") -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.request(method, url, headers={"Accept-Encoding": "gzip"})


def test_a_gzip_page_is_rewritten_and_stays_gzip(asgi: str) -> None:
    with httpx.Client(timeout=10) as client, client.stream("GET", asgi + "/", headers={"Accept-Encoding": "gzip"}) as r:
        wire = b"".join(r.iter_raw())
        headers = r.headers
    assert headers["content-encoding"] == "gzip"
    if "content-length" in headers:
        assert int(headers["content-length"]) == len(wire)
    page = gzip.decompress(wire).decode()
    assert page.startswith("<!DOCTYPE html><html><head><title>Shop</title></head><body>")
    assert '<a href="http://127.0.0.1:' in page and "/_tg/c/" in page  # the partner link is tracked
    assert '<a href="/about">about</a>' in page  # same-site link untouched (outbound scope)
    assert page.count("/_tg/o/") == 1 and page.endswith("/></body></html>")


def test_a_streamed_page_is_rewritten_without_content_length(asgi: str) -> None:
    response = raw_get(asgi + "/streamed")
    assert "content-length" not in response.headers
    assert "/_tg/c/" in response.text and "/_tg/o/" in response.text


@pytest.mark.parametrize(("method", "path", "status"), [("HEAD", "/", 200), ("GET", "/not-modified", 304)])
def test_head_and_304_pass_through(asgi: str, method: str, path: str, status: int) -> None:
    response = raw_get(asgi + path, method)
    assert response.status_code == status
    assert response.content == b""


def test_the_head_of_a_rewritten_page_announces_no_stale_length(asgi: str) -> None:
    # The app's Content-Length is that of the page before rewriting: a GET gets another one.
    get, head = raw_get(asgi + "/"), raw_get(asgi + "/", "HEAD")
    assert "content-length" in get.headers  # recomputed for the rewritten body
    assert "content-length" not in head.headers
    assert head.headers["content-type"] == get.headers["content-type"]


def test_a_fragment_gets_tracked_links_but_no_page_view_pixel(asgi: str) -> None:
    fragment = raw_get(asgi + "/fragment", "GET").text
    assert fragment.startswith('<li><a href="http://127.0.0.1:') and "/_tg/c/" in fragment
    assert "/_tg/o/" not in fragment and fragment.endswith(">item 7</a></li>")
    # The protocol-relative link takes the page's scheme (http here), as the browser would resolve it.
    links = TrackingLinks(Settings.from_environ({}, secret_key=ENV["TRACKGATE_SECRET_KEY"]))
    hrefs = re.findall(r'href="([^"]+)"', fragment)
    assert [links.decode(href).tracked_url for href in hrefs] == [
        "http://partner.example/item/6",
        "https://partner.example/item/7",
    ]


def test_an_opted_out_page_is_left_alone_and_the_header_removed(asgi: str) -> None:
    response = raw_get(asgi + "/off")
    assert "x-trackgate" not in response.headers
    assert "/_tg/" not in response.text
    assert 'href="https://partner.example/deal?a=1&amp;b=2"' in response.text


def test_a_rewritten_page_s_etag_becomes_weak(asgi: str) -> None:
    # The tag named the app's bytes, not ours: weak, If-Range can never mix the two.
    assert raw_get(asgi + "/tagged").headers["etag"] == 'W/"shop-v1"'
    assert raw_get(asgi + "/tagged", "HEAD").headers["etag"] == 'W/"shop-v1"'  # as its GET has it


def test_nothing_lets_a_client_join_the_apps_bytes_onto_a_rewritten_page(asgi: str) -> None:
    # A resumed download (Range with If-Range: <Last-Modified>) was answered with the app's bytes from the
    # offset of the rewritten ones; and a 304 gave the client's rewritten copy the app's strong ETag back.
    page = raw_get(asgi + "/revalidated")
    assert page.headers["etag"] == 'W/"shop-v2"' and "/_tg/c/" in page.text
    assert "last-modified" not in page.headers and page.headers["accept-ranges"] == "none"
    # (identity: starlette's GZipMiddleware would gzip the 304's empty body, which uvicorn refuses to send)
    with httpx.Client(timeout=10, headers={"Accept-Encoding": "identity"}) as client:
        again = client.get(asgi + "/revalidated", headers={"If-None-Match": page.headers["etag"]})
        theirs = client.get(asgi + "/revalidated", headers={"If-None-Match": '"shop-v2"'})  # the app's own copy
    assert again.status_code == 304 and again.headers["etag"] == 'W/"shop-v2"'
    assert "last-modified" not in again.headers
    assert theirs.status_code == 304 and theirs.headers["etag"] == '"shop-v2"'  # not ours to change


def test_xhtml_is_read_as_xml_would_read_it(asgi: str) -> None:
    page = raw_get(asgi + "/xhtml").text
    assert '<![CDATA[ a > <a href="https://partner.example/in"> ]]>' in page  # text in XML: left alone
    assert 'href="https://partner.example/out"' not in page and "/_tg/c/" in page


@pytest.mark.parametrize(("query", "recorded"), [("?tg_vid=from.email-1&ref=nl", "?ref=nl"), ("?tg_vid=x1", "")])
def test_a_page_view_records_the_page_without_the_visitor_parameter(asgi: str, query: str, recorded: str) -> None:
    page = raw_get(asgi + "/streamed" + query).text
    pixel = re.search(r'<img src="([^"]+)"', page)
    assert pixel, page
    links = TrackingLinks(Settings.from_environ({}, secret_key=ENV["TRACKGATE_SECRET_KEY"]))
    assert links.decode(pixel[1]).tracked_url == asgi + "/streamed" + recorded


@pytest.mark.parametrize(("path", "kept"), [("/", True), ("/cached", False)], ids=["private", "public-cacheable"])
def test_a_page_view_s_referrer_rides_only_in_a_page_no_shared_cache_keeps(asgi: str, path: str, kept: bool) -> None:
    # A cached copy of the page would show one visitor's referrer to every visitor after, and record it
    # for each of their page views.
    with httpx.Client(timeout=10) as client:
        page = client.get(asgi + path, headers={"Referer": "https://search.example/?q=private+words"}).text
    pixel = re.search(r'<img src="([^"]+)"', page)
    assert pixel, page
    links = TrackingLinks(Settings.from_environ({}, secret_key=ENV["TRACKGATE_SECRET_KEY"]))
    expected = "https://search.example/?q=private+words" if kept else None
    assert links.decode(pixel[1]).referrer == expected


def test_a_page_with_a_very_long_query_gets_a_pixel_a_server_takes(asgi: str) -> None:
    query = "?q=" + os.urandom(2600).hex()  # 5,203 characters: no destination may be that long
    page = raw_get(asgi + "/streamed" + query).text
    assert page.endswith("</body></html>")
    pixel = re.search(r'<img src="([^"]+)"', page)
    assert pixel and len(pixel[1]) <= 4000
    links = TrackingLinks(Settings.from_environ({}, secret_key=ENV["TRACKGATE_SECRET_KEY"]))
    assert links.decode(pixel[1]).tracked_url == asgi + "/streamed"  # the page, without its query
    assert raw_get(asgi + pixel[1].removeprefix(asgi)).status_code == 200


def test_headers_an_app_hands_over_as_a_generator_reach_the_client() -> None:
    with serve("uvicorn", "apps_rewriting:generated_headers_app", env=ENV) as base:
        response = raw_get(base + "/")
    assert response.headers["x-app"] == "kept" and response.headers["content-type"].startswith("text/html")
    assert "/_tg/c/" in response.text and len(response.headers.get_list("set-cookie")) == 1


def test_an_html_download_is_left_alone(asgi: str) -> None:
    response = raw_get(asgi + "/export")
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.text == PAGE


def test_wsgi_gzip_body_gets_a_recomputed_content_length_and_its_head_none() -> None:
    with (
        serve("gunicorn", "apps_rewriting:wsgi_app", env=ENV) as base,
        httpx.Client(timeout=10) as client,
        client.stream("GET", base + "/", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        wire = b"".join(response.iter_raw())
        headers = response.headers
        head = client.head(base + "/", headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(wire)
    assert head.status_code == 200 and "content-length" not in head.headers  # the app's would be stale
    assert headers["etag"] == head.headers["etag"] == 'W/"site-v1"'
    page = gzip.decompress(wire).decode()
    assert "/_tg/c/" in page and page.count("/_tg/o/") == 1
    with serve("gunicorn", "apps_rewriting:wsgi_app", env=ENV) as base:
        again = httpx.get(base + "/", headers={"If-None-Match": headers["etag"]}, timeout=10)
    assert again.status_code == 304 and again.headers["etag"] == 'W/"site-v1"'
    assert "last-modified" not in again.headers


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_an_html_file_response_arrives_whole_whoever_sends_it(server: str) -> None:
    """granian offers the pathsend extension, so Starlette hands it the file to send: that page cannot be
    rewritten, but it arrives as it is, after its own headers and with the visitor cookie. uvicorn does
    not, so the file comes as body messages and is rewritten."""
    with serve(server, "apps_rewriting:file_app", env=ENV) as base:
        response = raw_get(base + "/page.html")
    assert response.status_code == 200 and len(response.headers.get_list("set-cookie")) == 1
    if server == "granian":
        assert response.content == STATIC_PAGE.read_bytes()
        assert int(response.headers["content-length"]) == len(response.content)
    else:
        assert "/_tg/c/" in response.text and response.text.count("/_tg/o/") == 1
