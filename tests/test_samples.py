"""The sample apps run as documented: each, imported from its file, serves a page with the visitor cookie,
the visitor code shown, a tracked partner link and an untouched internal link; /signup records an event."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

import pytest
from servers import TESTS_DIR as TESTS
from servers import get, serve
from sinks import WebhookReceiver
from starlette.testclient import TestClient
from werkzeug.test import Client

import trackgate

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PARTNER = "https://partner.example/offer"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sample_{name}", SAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _get(name: str, path: str) -> tuple[str, str]:
    """(Set-Cookie, page) of one request to the sample's app through the matching test client."""
    app: Any = _load(name).app
    if name == "starlette_app":
        response = TestClient(app).get(path)
        return response.headers["set-cookie"], response.text
    client = app.test_client() if name == "flask_app" else Client(app)
    answer = client.get(path)
    result = answer.headers["Set-Cookie"], answer.get_data(as_text=True)
    answer.close()
    return result


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[trackgate.Event]:
    """What the samples' middlewares emit, caught before the background dispatcher."""
    from trackgate.gate import Gate

    caught: list[trackgate.Event] = []
    original = Gate.__init__

    def init(self: Gate, settings: trackgate.Settings, emit: Any = None) -> None:
        original(self, settings, emit=caught.append)

    monkeypatch.setattr(Gate, "__init__", init)
    return caught


@pytest.mark.parametrize("name", ["starlette_app", "flask_app", "wsgi_app"])
def test_sample_page_has_cookie_code_and_tracked_link(name: str, events: list[trackgate.Event]) -> None:
    set_cookie, page = _get(name, "/")
    code = re.match(r"tg_vid=([a-z0-9]{16});", set_cookie)
    assert code is not None
    assert f"<code>{code[1]}</code>" in page
    assert f'href="{PARTNER}"' not in page
    links = re.findall(r'href="([^"]+)"', page)
    assert "/signup" in links
    assert any("/_tg/" in link for link in links), links


@pytest.mark.parametrize("name", ["starlette_app", "flask_app", "wsgi_app"])
def test_sample_signup_records_an_event(name: str, events: list[trackgate.Event]) -> None:
    set_cookie, _ = _get(name, "/signup")
    code = re.match(r"tg_vid=([a-z0-9]{16});", set_cookie)
    assert code is not None
    signups = [e for e in events if e.name == "signup"]
    assert len(signups) == 1
    assert signups[0].visitor == code[1]


@pytest.mark.server
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("server", "name"), [("uvicorn", "starlette_app"), ("gunicorn", "flask_app"), ("gunicorn", "wsgi_app")]
)
def test_samples_under_a_real_server(server: str, name: str, tmp_path: Path) -> None:
    # Each sample as its docstring runs it, on a real server: the cookie, the tracked partner link that
    # redirects, and the signup event delivered by the background dispatcher to a real webhook receiver.
    with WebhookReceiver() as hook:
        env = {
            "PYTHONPATH": f"{SAMPLES}{os.pathsep}{TESTS}",
            "TRACKGATE_SECRET_KEY": "sample-key",
            "TRACKGATE_SINKS": "webhook",
            "TRACKGATE_WEBHOOK_URL": hook.url,
            "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        }
        with serve(server, f"{name}:app", env=env) as base:
            home = get(base + "/")
            code = re.match(r"tg_vid=([a-z0-9]{16});", home.headers["set-cookie"])
            assert code is not None and f"<code>{code[1]}</code>" in home.text
            [tracked] = [link for link in re.findall(r'href="([^"]+)"', home.text) if "/_tg/c/" in link]
            click = get(urljoin(base + "/", html.unescape(tracked)), headers={"Cookie": f"tg_vid={code[1]}"})
            assert (click.status_code, click.headers["location"]) == (302, PARTNER)
            get(base + "/signup", headers={"Cookie": f"tg_vid={code[1]}"})
            assert hook.wait_delivered(2, 30), hook.payloads()
    delivered = {(payload["kind"], payload.get("name"), payload["visitor"]) for payload in hook.payloads()}
    assert ("custom", "signup", code[1]) in delivered
    assert any(kind == "click" and visitor == code[1] for kind, _, visitor in delivered)
