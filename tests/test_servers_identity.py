"""Visitor identity on real servers as a real HTTP client sees it: the wrapped Starlette app under uvicorn
and the wrapped WSGI app under gunicorn, httpx without a cookie jar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from servers import get, serve

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

CODE = re.compile(r"[a-z0-9]{16}\Z")
SERVERS = [("uvicorn", "apps_identity:asgi_app"), ("gunicorn", "apps_identity:wsgi_app")]


def _parts(set_cookie: str) -> tuple[str, str, dict[str, str]]:
    first, *rest = (part.strip() for part in set_cookie.split(";"))
    name, _, value = first.partition("=")
    return name, value, {k.lower(): v for k, _, v in (part.partition("=") for part in rest)}


@pytest.mark.parametrize(("kind", "app"), SERVERS, ids=["asgi-uvicorn", "wsgi-gunicorn"])
def test_identity_on_a_real_server(kind: str, app: str) -> None:
    env = {"TRACKGATE_SECRET_KEY": "server-key", "TRACKGATE_COOKIE_DOMAIN": "127.0.0.1"}
    with serve(kind, app, env=env) as base:
        first = get(base + "/")
        assert first.status_code == 200
        cookies = first.headers.get_list("set-cookie")
        assert len(cookies) == 1
        name, code, attributes = _parts(cookies[0])
        assert name == "tg_vid" and CODE.match(code)
        assert first.json() == {"code": code, "is_new": True, "consent": True}
        assert attributes["max-age"] == str(395 * 86400)
        assert attributes["path"] == "/"
        assert attributes["samesite"] == "Lax"
        assert attributes["domain"] == "127.0.0.1"
        assert "httponly" in attributes and "secure" not in attributes

        # Behind a proxy that ends TLS, the server says the request was https (both trust a proxy on
        # loopback by default): the cookie is Secure.
        proxied = get(base + "/", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in _parts(proxied.headers.get_list("set-cookie")[0])[2]

        again = get(base + "/", headers={"Cookie": f"tg_vid={code}"})
        assert again.headers.get_list("set-cookie") == []
        assert again.json() == {"code": code, "is_new": False, "consent": True}

        private = get(base + "/", headers={"Sec-GPC": "1"})
        assert private.headers.get_list("set-cookie") == []
        assert private.json()["consent"] is False
        not_a_refusal = get(base + "/", headers={"Sec-GPC": "0", "Cookie": f"tg_vid={code}"})
        assert not_a_refusal.json() == {"code": code, "is_new": False, "consent": True}

        moved = get(base + "/?tg_vid=from.email-7", headers={"Cookie": f"tg_vid={code}"})
        assert moved.json()["code"] == "from.email-7"
        assert [_parts(c)[:2] for c in moved.headers.get_list("set-cookie")] == [("tg_vid", "from.email-7")]

        hostile = get(base + "/", headers={"Cookie": "tg_vid=a(b)<c>; session=s3cret"})
        assert hostile.status_code == 200
        assert CODE.match(hostile.json()["code"])
        assert all("s3cret" not in c for c in hostile.headers.get_list("set-cookie"))


def test_an_app_reusing_one_start_message_never_hands_a_visitor_anothers_cookie() -> None:
    with serve("uvicorn", "apps_identity:constant_start_app", env={"TRACKGATE_SECRET_KEY": "server-key"}) as base:
        first = get(base + "/").headers.get_list("set-cookie")
        second = get(base + "/").headers.get_list("set-cookie")
        returning = get(base + "/", headers={"Cookie": "tg_vid=returning-visitor"}).headers.get_list("set-cookie")
    assert len(first) == 1 and len(second) == 1
    assert _parts(first[0])[1] != _parts(second[0])[1]  # each new visitor its own code
    assert returning == []


@pytest.mark.parametrize(
    ("kind", "app"),
    [("uvicorn", "apps_identity:consent_asgi_app"), ("gunicorn", "apps_identity:consent_wsgi_app")],
    ids=["asgi-uvicorn", "wsgi-gunicorn"],
)
def test_consent_granted_to_a_code_from_an_email_and_withdrawn_under_gpc(kind: str, app: str) -> None:
    with serve(kind, app, env={"TRACKGATE_SECRET_KEY": "server-key"}) as base:
        granted = get(base + "/grant?tg_vid=from.email-7")
        assert [_parts(c)[:2] for c in granted.headers.get_list("set-cookie")] == [("tg_vid", "from.email-7")]
        withdrawn = get(base + "/withdraw", headers={"Cookie": "tg_vid=from.email-7", "Sec-GPC": "1"})
        [deleted] = withdrawn.headers.get_list("set-cookie")
        assert _parts(deleted)[1] == "" and _parts(deleted)[2]["max-age"] == "0"


@pytest.mark.parametrize(("kind", "app"), SERVERS, ids=["asgi-uvicorn", "wsgi-gunicorn"])
def test_a_consent_managers_cookie_grants_only_its_category(kind: str, app: str) -> None:
    # Cookiebot's cookie as a browser sends it after "allow necessary and marketing only", then after "allow all".
    declined = "{stamp:%27TPRNuY4Z%27%2Cnecessary:true%2Cpreferences:true%2Cstatistics:false%2Cmarketing:true%2Cver:1}"
    accepted = declined.replace("statistics:false", "statistics:true")
    env = {
        "TRACKGATE_SECRET_KEY": "server-key",
        "TRACKGATE_CONSENT": "required",
        "TRACKGATE_CONSENT_COOKIE": "CookieConsent:statistics",
    }
    with serve(kind, app, env=env) as base:
        refused = get(base + "/", headers={"Cookie": f"CookieConsent={declined}"})
        granted = get(base + "/", headers={"Cookie": f"CookieConsent={accepted}"})
    assert refused.json()["consent"] is False and refused.headers.get_list("set-cookie") == []
    assert granted.json()["consent"] is True
    [stored] = granted.headers.get_list("set-cookie")
    assert _parts(stored)[:2] == ("tg_vid", granted.json()["code"])


def _dispatching_env(tmp_path: Path) -> dict[str, str]:
    """The default set-up (events to the background dispatcher), its spool and store in the test's folder."""
    return {
        "TRACKGATE_SECRET_KEY": "server-key",
        "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "TRACKGATE_STORE_URL": f"sqlite:///{tmp_path / 'events.sqlite3'}",
    }


def test_under_uvicorn_with_lifespan_the_commonest_requests_take_the_compiled_start(tmp_path: Path) -> None:
    """uvicorn runs lifespan by default, and its startup starts the dispatcher before any request: the
    compiled start must still be taken then (it once was only when a request started the dispatcher)."""
    import trackgate.asgi

    if trackgate.asgi.prepare is None:
        pytest.skip("the compiled shell is not built")
    env = _dispatching_env(tmp_path)
    with serve("uvicorn", "apps_identity:dispatching_app", env=env, args=("--factory",)) as base:
        first = get(base + "/")
        code = first.json()["code"]
        assert first.json()["is_new"] is True
        assert [_parts(cookie)[:2] for cookie in first.headers.get_list("set-cookie")] == [("tg_vid", code)]
        assert get(base + "/", headers={"Cookie": f"tg_vid={code}"}).json() == {
            "code": code,
            "is_new": False,
            "consent": True,
        }
        assert get(base + "/fast").json() == {"compiled": True}


def test_under_gunicorn_the_commonest_requests_take_the_wsgi_compiled_start(tmp_path: Path) -> None:
    """The WSGI shell's compiled start, through a real gunicorn and a real client: a first visit (after the
    request that starts the dispatcher) and a returning one take it and get what the Python shell gives;
    a visitor named in the query string is left to the Python shell."""
    import trackgate.wsgi

    if trackgate.wsgi.WSGICall is None:
        pytest.skip("the compiled shell is not built")
    env = _dispatching_env(tmp_path)
    with serve("gunicorn", "apps_identity:start_reporting_wsgi_app", env=env, args=("--workers", "1")) as base:
        assert get(base + "/").json()["start"] == "method"  # this one woke the gate: the Python shell's
        first = get(base + "/")
        code = first.json()["code"]
        assert first.json() == {"code": code, "is_new": True, "consent": True, "start": "WSGIStart"}
        name, value, attributes = _parts(first.headers["set-cookie"])
        assert (name, value) == ("tg_vid", code) and CODE.match(code)
        assert set(attributes) == {"max-age", "httponly", "path", "samesite"}
        again = get(base + "/", headers={"Cookie": f"tg_vid={code}"})
        assert again.json() == {"code": code, "is_new": False, "consent": True, "start": "WSGIStart"}
        assert "set-cookie" not in again.headers
        named = get(base + "/?tg_vid=fromquery")
        assert named.json() == {"code": "fromquery", "is_new": False, "consent": True, "start": "method"}
        assert _parts(named.headers["set-cookie"])[:2] == ("tg_vid", "fromquery")
