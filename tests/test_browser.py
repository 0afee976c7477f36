"""A real browser (Debian's chromium through Playwright) on the real servers: the visitor cookie is set,
the page-view pixel and the click on a rewritten link reach the webhook receiver as events carrying the
visitor's code, and the click lands on the signed destination."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import serve
from sinks import WEBHOOK_SECRET, WebhookReceiver

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.server,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/setup installs it)"),
]


class _PartnerPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!DOCTYPE html><title>Partner</title><p id='partner'>Partner site</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def partner() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PartnerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # "localhost" is another host than the shop's 127.0.0.1, so the link counts as outbound.
    yield f"http://localhost:{server.server_address[1]}/welcome"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    ("server", "app"),
    [("uvicorn", "apps_browser:asgi_app"), ("gunicorn", "apps_browser:wsgi_app")],
    ids=["asgi-uvicorn", "wsgi-gunicorn"],
)
def test_a_visit_and_a_click_in_chromium_become_events(server: str, app: str, partner: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with WebhookReceiver(secret=WEBHOOK_SECRET) as hook:
        env = {
            "TRACKGATE_SECRET_KEY": "browser-test-key",
            "TRACKGATE_SINKS": "webhook",
            "TRACKGATE_WEBHOOK_URL": hook.url,
            "TRACKGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TRACKGATE_SPOOL_PATH": str(tmp_path / f"{server}-spool.sqlite3"),
            "DEST_URL": partner,
        }
        with serve(server, app, env=env) as base, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context()
                page = context.new_page()
                page.goto(base + "/", referer="https://search.example/?q=cafe")

                cookies = {c["name"]: c for c in context.cookies()}
                code = cookies["tg_vid"]["value"]
                assert page.text_content("#visitor") == code
                assert cookies["tg_vid"]["httpOnly"] and cookies["tg_vid"]["sameSite"] == "Lax"
                assert page.get_attribute("#out", "href").startswith(base + "/_tg/c/")  # type: ignore[union-attr]
                assert page.get_attribute("#in", "href") == "/about"
                assert page.get_attribute("#mail", "href") == "mailto:shop@example.org"

                assert hook.wait_delivered(1, timeout=20), "the page-view pixel produced no event"
                pageview = hook.payloads()[0]
                assert pageview["kind"] == "pageview"
                assert pageview["visitor"] == code
                assert pageview["url"] == base + "/"
                assert pageview["title"] == "Shop & Co"  # the page's <title>, as Matomo's action_name
                # Where the page was reached from; the pixel's own request named the page itself.
                assert pageview["referrer"] == "https://search.example/?q=cafe"

                page.click("#out")
                page.wait_for_selector("#partner")
                assert page.url == partner + "?ref=shop&lang=fr"
                assert hook.wait_delivered(2, timeout=20), "the click produced no event"
                click = hook.payloads()[1]
                assert click["kind"] == "click"
                assert click["is_click_tracking"] is True
                assert click["tracked_url"] == partner + "?ref=shop&lang=fr"
                assert click["visitor"] == code
                assert not hook.duplicates()
            finally:
                browser.close()


def test_a_host_only_cookie_left_from_before_a_cookie_domain_is_cleared_and_the_code_settles(
    tmp_path: Path,
) -> None:
    """TRACKGATE_COOKIE_DOMAIN set after visitors got host-only cookies: the browser sends two codes. The
    first response clears the host-only copy, and from then on the domain cookie's code is the visitor's."""
    from playwright.sync_api import sync_playwright

    env = {
        "TRACKGATE_SECRET_KEY": "browser-test-key",
        "TRACKGATE_SINKS": "console",
        "TRACKGATE_COOKIE_DOMAIN": "shop.test",
        "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "DEST_URL": "http://partner.test/",
    }
    with serve("uvicorn", "apps_browser:asgi_app", env=env) as base, sync_playwright() as playwright:
        port = base.rsplit(":", 1)[1]
        site = f"http://www.shop.test:{port}/"
        # The shop's names resolve to the loopback server: a domain cookie needs a name, not an address.
        args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP *.shop.test 127.0.0.1"]
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            context = browser.new_context()
            context.add_cookies(
                [
                    {"name": "tg_vid", "value": "leftover.host-only", "url": site},
                    {"name": "tg_vid", "value": "current.domain", "domain": ".shop.test", "path": "/"},
                ]
            )
            page = context.new_page()
            page.goto(site)
            assert page.text_content("#visitor") not in ("leftover.host-only", "current.domain")  # neither trusted
            jar = [(c["value"], c["domain"]) for c in context.cookies() if c["name"] == "tg_vid"]
            assert jar == [("current.domain", ".shop.test")]
            page.goto(site)
            assert page.text_content("#visitor") == "current.domain"
            page.goto(site)
            assert page.text_content("#visitor") == "current.domain"
        finally:
            browser.close()
