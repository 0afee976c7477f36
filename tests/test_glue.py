"""Framework glue as a user writes it: Flask's init_app, Django's wrap_wsgi/wrap_asgi around a real Django
handler, Starlette's middleware entry, each through its own test client; the Starlette one on uvicorn; and
a clear error naming the extra when the framework is missing."""

from __future__ import annotations

import importlib
import json
import re
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from servers import get, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

import trackgate
from trackgate.adapters._extras import MissingExtra

CODE = re.compile(r"[a-z0-9]{16}\Z")


def _drop(event: trackgate.Event) -> None:
    """Events are not this file's subject."""


def _cookie(set_cookie: str) -> tuple[str, str]:
    name, _, value = set_cookie.split(";", 1)[0].partition("=")
    return name, value


# --- Flask ------------------------------------------------------------------------------------------------


def _flask_app() -> Any:
    import flask

    from trackgate.adapters.flask import visitor

    app = flask.Flask(__name__)

    @app.route("/")
    def index() -> dict[str, Any]:
        found = visitor()
        return {"code": found.code if found else None, "consent": found.consent if found else None}

    return app


def test_flask_init_app_reads_app_config_and_keywords_win() -> None:
    from trackgate.adapters.flask import init_app

    app = _flask_app()
    app.config.update(TRACKGATE_COOKIE_NAME="flask_vid", TRACKGATE_CONSENT="required", OTHER="x")
    middleware = init_app(app, emit=_drop, consent="implicit", secret_key="k")
    assert app.wsgi_app is middleware
    assert middleware.settings.cookie_name == "flask_vid"
    client = app.test_client()  # its cookie jar sends the cookie back, like a browser
    response = client.get("/")
    name, code = _cookie(response.headers["Set-Cookie"])
    assert name == "flask_vid"
    assert response.get_json() == {"code": code, "consent": True}
    again = client.get("/")
    assert "Set-Cookie" not in again.headers
    assert again.get_json()["code"] == code


def test_flask_init_app_twice_replaces_its_middleware_instead_of_stacking_two() -> None:
    from trackgate.adapters.flask import init_app

    app = _flask_app()
    original = app.wsgi_app
    init_app(app, emit=_drop, secret_key="k")
    second = init_app(app, emit=_drop, secret_key="k", cookie_name="second_vid")
    assert app.wsgi_app is second and second.app == original  # (a bound method: equal, not identical)
    response = app.test_client().get("/")
    [cookie] = response.headers.getlist("Set-Cookie")  # one visitor cookie, from the second configuration
    assert _cookie(cookie)[0] == "second_vid"


def test_flask_unknown_config_key_is_named() -> None:
    from trackgate.adapters.flask import init_app

    app = _flask_app()
    app.config["TRACKGATE_COOKY_NAME"] = "x"
    with pytest.raises(TypeError, match="cooky_name"):
        init_app(app, emit=_drop)


def test_flask_explicit_settings_skip_app_config() -> None:
    from trackgate.adapters.flask import init_app

    app = _flask_app()
    app.config["TRACKGATE_COOKIE_NAME"] = "ignored"
    middleware = init_app(app, trackgate.Settings(cookie_name="given"), emit=_drop, cookie_max_age="90m")
    assert (middleware.settings.cookie_name, middleware.settings.cookie_max_age) == ("given", 5400)


# --- Django -----------------------------------------------------------------------------------------------


@pytest.fixture
def django_configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="test", USE_TZ=True)
    monkeypatch.setattr(settings, "ROOT_URLCONF", "django_urls", raising=False)
    monkeypatch.setattr(settings, "ALLOWED_HOSTS", ["*"])
    monkeypatch.setattr(settings, "TRACKGATE_COOKIE_NAME", "dj_vid", raising=False)
    django.setup()
    yield settings


def test_django_wrap_wsgi_reads_django_settings(django_configured: Any) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    from trackgate.adapters.django import wrap_wsgi

    application = wrap_wsgi(WSGIHandler(), emit=_drop)
    response = Client(application).get("/")
    name, code = _cookie(response.headers["Set-Cookie"])
    assert name == "dj_vid" and CODE.match(code)
    assert response.get_json() == {"code": code}
    response.close()


def test_django_wrap_asgi_with_a_settings_object(django_configured: Any) -> None:
    from django.core.handlers.asgi import ASGIHandler

    from trackgate.adapters.django import wrap_asgi

    given = types.SimpleNamespace(TRACKGATE_COOKIE_NAME="given_vid", TRACKGATE_COOKIE_MAX_AGE="90m", DEBUG=True)
    application = wrap_asgi(ASGIHandler(), given, emit=_drop)
    assert application.settings.cookie_max_age == 5400
    response = TestClient(application).get("/")
    name, code = _cookie(response.headers["set-cookie"])
    assert name == "given_vid"
    assert response.json() == {"code": code}


@pytest.mark.server
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("server", "app"), [("gunicorn", "django_site:application"), ("uvicorn", "django_site:asgi_application")]
)
def test_django_glue_under_a_real_server(server: str, app: str, tmp_path: Any) -> None:
    # Settings come from the Django project's settings module, not the environment; events go to the real
    # dispatcher (its spool and store under tmp_path).
    env = {"TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"), "TRACKGATE_STORE_URL": f"sqlite:///{tmp_path}/e.db"}
    with serve(server, app, env=env) as base:
        first = get(base + "/")
        name, code = _cookie(first.headers["set-cookie"])
        assert name == "dj_vid" and CODE.match(code)
        assert first.json() == {"code": code}
        again = get(base + "/", headers={"Cookie": f"dj_vid={code}"})
        assert "set-cookie" not in again.headers
        assert again.json() == {"code": code}
        assert get(base + "/_tg/health").json()["status"] == "ok"
        assert get(base + "/_tg/c/forged.token").status_code == 404


# --- Starlette --------------------------------------------------------------------------------------------


def _starlette_app(**overrides: Any) -> Starlette:
    from trackgate.adapters.starlette import middleware, visitor

    async def who(request: Request) -> JSONResponse:
        found = visitor(request)
        return JSONResponse({"code": found.code if found else None})

    return Starlette(routes=[Route("/", who)], middleware=[middleware(emit=_drop, **overrides)])


def test_starlette_middleware_entry() -> None:
    response = TestClient(_starlette_app(cookie_name="st_vid", secret_key="k")).get("/")
    name, code = _cookie(response.headers["set-cookie"])
    assert name == "st_vid"
    assert response.json() == {"code": code}


@pytest.mark.server
@pytest.mark.timeout(90)
def test_starlette_glue_on_uvicorn() -> None:
    with serve("uvicorn", "apps_identity:glue_app", env={"TRACKGATE_SECRET_KEY": "k"}) as base:
        first = get(base + "/")
        name, code = _cookie(first.headers["set-cookie"])
        assert name == "glue_vid" and CODE.match(code)
        assert first.json()["code"] == code
        again = get(base + "/", headers={"Cookie": f"glue_vid={code}"})
        assert "set-cookie" not in again.headers
        assert again.json()["code"] == code


# --- a missing framework ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "framework", "extra"), [("flask", "flask", "flask"), ("django", "django.conf", "django")]
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # how Python marks a module that cannot be imported
    monkeypatch.delitem(sys.modules, f"trackgate.adapters.{module}", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module(f"trackgate.adapters.{module}")
    assert isinstance(info.value, MissingExtra)
    assert f"pip install 'trackgate[{extra}]'" in str(info.value)
    monkeypatch.delitem(sys.modules, f"trackgate.adapters.{module}", raising=False)


@pytest.mark.server
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("server", "app"), [("gunicorn", "django_site:application"), ("uvicorn", "django_site:asgi_application")]
)
def test_pytrackings_django_views_under_a_real_server(server: str, app: str, tmp_path: Any) -> None:
    # The facade's views mounted as a pytracking user mounts them (django_urls.py), links made by the facade
    # with the project's PYTRACKING_CONFIGURATION, a real client.
    import pytracking as real_pytracking

    from trackgate.adapters import pytracking

    log = tmp_path / "tracking.jsonl"
    env = {
        "DJANGO_TRACKING_LOG": str(log),
        "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "TRACKGATE_STORE_URL": f"sqlite:///{tmp_path}/e.db",
    }
    with serve(server, app, env=env) as base:
        bases = {"base_open_tracking_url": f"{base}/open/", "base_click_tracking_url": f"{base}/click/"}
        click = get(
            pytracking.get_click_tracking_url("https://shop.example/sale?a=1", {"r": 7}, **bases),
            headers={"User-Agent": "Mail/1.0"},
        )
        opened = get(pytracking.get_open_tracking_url({"r": 7}, **bases))
        garbage = get(f"{base}/click/not-a-token")
        # Anyone can write a plain link: one to a host the project does not allow is no open redirect.
        elsewhere = get(pytracking.get_click_tracking_url("https://evil.example/", **bases))
        # (pytracking itself makes a link to anything; the facade refuses to, and the view to follow one.)
        unsafe = get(real_pytracking.get_click_tracking_url("javascript:alert(1)", **bases))
    assert (click.status_code, click.headers["location"]) == (302, "https://shop.example/sale?a=1")
    assert click.headers["cache-control"] == "no-store"
    assert (opened.status_code, opened.headers["content-type"]) == (200, "image/png")
    assert opened.headers["cache-control"] == "no-store, no-cache, must-revalidate, private"
    assert (garbage.status_code, unsafe.status_code, elsewhere.status_code) == (404, 404, 404)
    told = [json.loads(line) for line in log.read_text().splitlines()]
    events = [entry["event"] for entry in told if "event" in entry]
    assert [(e["is_click_tracking"], e["tracked_url"], e["metadata"]) for e in events] == [
        (True, "https://shop.example/sale?a=1", {"r": 7}),
        (False, None, {"r": 7}),
    ]
    assert events[0]["request_data"] == {"user_agent": "Mail/1.0", "user_ip": "127.0.0.1"}
    assert [entry["error"] for entry in told if "error" in entry] == ["BadToken", "BadToken", "BadURL"]
