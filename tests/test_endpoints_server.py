"""The tracking endpoints on real servers (uvicorn for ASGI, gunicorn for WSGI), events to a real webhook.

The apps are made by factories so that importing this module (in the server process) has no side effects.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import get, serve
from sinks import WEBHOOK_SECRET, WebhookReceiver

import trackgate

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

SECRET = "server-test-key"


def make_asgi_app() -> trackgate.ASGIMiddleware:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    return trackgate.ASGIMiddleware(Starlette(routes=[Route("/", home)]))


def make_wsgi_app() -> trackgate.WSGIMiddleware:
    def home(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"home"]

    return trackgate.WSGIMiddleware(home)


SERVERS = [
    ("uvicorn", "test_endpoints_server:make_asgi_app", ("--factory",)),
    ("gunicorn", "test_endpoints_server:make_wsgi_app()", ()),
]


@contextlib.contextmanager
def tracked_server(
    kind: str, app: str, args: tuple[str, ...], tmp_path: Path, **env: str
) -> Iterator[tuple[WebhookReceiver, str, trackgate.TrackingLinks]]:
    """The app on a real server, one trusted proxy hop, events to a real webhook receiver; links for it."""
    with WebhookReceiver(secret=WEBHOOK_SECRET) as hook:
        environment = {
            "TRACKGATE_SECRET_KEY": SECRET,
            "TRACKGATE_SINKS": "webhook",
            "TRACKGATE_WEBHOOK_URL": hook.url,
            "TRACKGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
            "TRACKGATE_TRUSTED_PROXIES": "1",
            **env,
        }
        with serve(kind, app, env=environment, args=args) as base:
            yield (
                hook,
                base,
                trackgate.TrackingLinks(trackgate.Settings.from_environ({}, secret_key=SECRET, base_url=base)),
            )


@pytest.mark.parametrize(("kind", "app", "args"), SERVERS, ids=["asgi-uvicorn", "wsgi-gunicorn"])
def test_pixel_click_and_forgeries_on_a_real_server(kind: str, app: str, args: tuple[str, ...], tmp_path: Path) -> None:
    legacy = {"TRACKGATE_LEGACY_PYTRACKING": "true", "TRACKGATE_REDIRECT_ALLOWED_HOSTS": "shop.example"}
    with tracked_server(kind, app, args, tmp_path, TRACKGATE_ANONYMIZE_IP="1", **legacy) as (hook, base, links):
        opening = links.open_url({"recipient": "r-9"}, title="July news")  # (the email's <title>)
        pixel = get(opening, headers={"X-Forwarded-For": "203.0.113.99"})
        assert pixel.status_code == 200
        assert pixel.headers["content-type"] == "image/gif"
        assert pixel.headers["cache-control"] == "no-store, no-cache, must-revalidate, private"
        assert pixel.content.startswith(b"GIF89a")

        scanned = httpx.head(links.open_url({"recipient": "scanner"}), timeout=10)
        assert (scanned.status_code, scanned.content) == (200, b"")  # answered, not recorded

        click = get(links.click_url("https://example.org/ünïcode?x=1", {"recipient": "r-9"}))
        assert click.status_code == 302
        assert click.headers["location"] == "https://example.org/%C3%BCn%C3%AFcode?x=1"
        assert click.headers["cache-control"] == "no-store"

        evil = base64.urlsafe_b64encode(json.dumps({"url": "https://evil.example/"}).encode()).decode()
        allowed = base64.urlsafe_b64encode(json.dumps({"url": "https://shop.example/"}).encode()).decode()
        assert get(f"{base}/_tg/c/{evil}").status_code == 404
        assert get(f"{base}/_tg/c/{allowed}").headers["location"] == "https://shop.example/"
        assert get(f"{base}/_tg/c/garbage").status_code == 404
        assert get(f"{base}/_tg/o/{'A' * 3000}").status_code == 404

        assert hook.wait_delivered(3, timeout=30), hook.payloads()
        assert get(f"{base}/").text == "home"
        [opened] = [e for e in hook.payloads() if e["kind"] == "open"]
        assert opened["metadata"] == {"recipient": "r-9"} and opened["title"] == "July news"
        assert opened["request_data"]["user_ip"] == "203.0.113.0"
        clicks = sorted(e["tracked_url"] for e in hook.payloads() if e["kind"] == "click")
        assert clicks == ["https://example.org/ünïcode?x=1", "https://shop.example/"]
        assert len(hook.payloads()) == 3
        assert not hook.duplicates()


@pytest.mark.parametrize(("kind", "app", "args"), SERVERS, ids=["asgi-uvicorn", "wsgi-gunicorn"])
def test_repeated_forwarded_for_lines_count_as_one_list(
    kind: str, app: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    # A client sends its own X-Forwarded-For line; the one trusted proxy appends another. The proxy's line is
    # the one hop we trust, whichever server joins (gunicorn) or keeps (uvicorn) the lines.
    with tracked_server(kind, app, args, tmp_path) as (hook, _base, links):
        lines = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "203.0.113.5")]
        assert get(links.open_url({"recipient": "r-1"}), headers=lines).status_code == 200
        assert hook.wait_delivered(1, timeout=30), hook.payloads()
        [opened] = hook.payloads()
        assert opened["request_data"]["user_ip"] == "203.0.113.5"
