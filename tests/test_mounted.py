"""An app mounted below the root (/shop): its page's tracking links and pixel point below the mount, so
they come back through the middleware, on real servers."""

from __future__ import annotations

import re

import httpx
import pytest
from servers import serve

pytestmark = [pytest.mark.timeout(90)]

ENV = {"TRACKGATE_SECRET_KEY": "mounted-key", "TRACKGATE_SINKS": "console", "TRACKGATE_REWRITE": "all"}
ON_BOTH_SERVERS = pytest.mark.parametrize(
    ("kind", "app"),
    [
        pytest.param("uvicorn", "apps_mounted:asgi_app", id="starlette-mount-uvicorn"),
        pytest.param("gunicorn", "apps_mounted:wsgi_app", id="dispatcher-middleware-gunicorn"),
    ],
)


@ON_BOTH_SERVERS
@pytest.mark.server
def test_links_of_a_mounted_app_come_back_through_it(kind: str, app: str) -> None:
    with serve(kind, app, env=ENV) as base, httpx.Client(timeout=10) as client:
        page = client.get(base + "/shop/page").text
        click = re.search(r'href="([^"]+)"', page)
        pixel = re.search(r'<img src="([^"]+)"', page)
        assert click and pixel, page
        assert click[1].startswith(base + "/shop/_tg/c/") and pixel[1].startswith(base + "/shop/_tg/o/")
        redirect = client.get(click[1])
        assert (redirect.status_code, redirect.headers["location"]) == (302, "https://partner.example/deal")
        gif = client.get(pixel[1])
        assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
        health = client.get(base + "/shop/_tg/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert client.get(base + "/_tg/health").status_code == 404  # nothing of ours outside the mount


@ON_BOTH_SERVERS
@pytest.mark.server
def test_a_page_view_records_the_url_the_browser_asked_for(kind: str, app: str) -> None:
    """Servers hand the app a percent-decoded path; the page's URL is the encoded one again (a decoded "?"
    would start a query, a decoded "%" make no URL at all)."""
    from trackgate import Settings, TrackingLinks

    links = TrackingLinks(Settings.from_environ({}, secret_key=ENV["TRACKGATE_SECRET_KEY"]))
    with serve(kind, app, env=ENV) as base, httpx.Client(timeout=10) as client:
        for path in ("/shop/page/caf%C3%A9", "/shop/page/what%3Fnext", "/shop/page/100%25", "/shop/page/a%20b"):
            page = client.get(base + path).text
            pixel = re.search(r'<img src="([^"]+)"', page)
            assert pixel, (path, page)
            result = links.decode(pixel[1].replace("&amp;", "&"))
            assert (result.kind, result.tracked_url) == ("pageview", base + path)


@pytest.mark.parametrize(
    ("path", "root", "below"),
    [("/shop/_tg/o/t", "/shop", "/_tg/o/t"), ("/shop", "/shop", ""), ("/shopping/x", "/shop", "/shopping/x"),
     ("/x", "", "/x"), ("/x", "/shop", "/x"), ("/shop/_tg/o/t", "/shop/", "/_tg/o/t"), ("/x", "/", "/x")],
)
def test_a_path_is_below_a_mount_only_at_a_segment_boundary(path: str, root: str, below: str) -> None:
    from trackgate.facts import below_mount

    assert below_mount(path, root) == below
