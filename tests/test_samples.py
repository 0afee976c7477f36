"""The sample apps run as documented: each, imported from its file, serves a page with the visitor cookie,
the visitor code shown, a tracked partner link and an untouched internal link; /signup records an event."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
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
