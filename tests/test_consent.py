"""TRACKGATE_CONSENT_COOKIE's three forms read from what consent managers really write: Cookiebot's
``CookieConsent``, CookieYes's ``cookieyes-consent`` and OneTrust's ``OptanonConsent`` hold every answer,
refusals too, so only the configured category's answer may grant."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trackgate
from trackgate.consent import ConsentCookie

COOKIEBOT_CATEGORIES = ("necessary", "preferences", "statistics", "marketing")
ONETRUST_GROUPS = ("C0001", "C0002", "C0003", "C0004", "C0005")
COOKIEYES_CATEGORIES = ("necessary", "functional", "analytics", "performance", "advertisement")


def cookiebot_value(answers: dict[str, bool], stamp: str = "TPRNuY4ZNU2GZc5bqO1n7Q==") -> str:
    """CookieConsent as Cookiebot's script stores it: a JavaScript-ish object, percent-encoded."""
    items = [f"stamp:'{stamp}'"] + [f"{name}:{str(answers[name]).lower()}" for name in COOKIEBOT_CATEGORIES]
    items += ["method:'explicit'", "ver:1", "utc:1732945200000", "region:'de'"]
    return quote("{" + ",".join(items) + "}", safe="{}:")


def onetrust_value(answers: dict[str, bool]) -> str:
    """OptanonConsent: a query string whose ``groups`` lists ``C000n:0|1`` (in the order given), percent-encoded."""
    groups = ",".join(f"{group}:{int(answer)}" for group, answer in answers.items())
    return (
        "isGpcEnabled=0&datestamp=" + quote("Sat Nov 30 2026 10:00:00 GMT+0100", safe="")
        + "&version=202409.1.0&isIABGlobal=false&hosts=&consentId=3f1c&interactionCount=1&landingPath=NotLandingPage"
        + "&groups=" + quote(groups, safe="")
    )


def cookieyes_value(answers: dict[str, bool]) -> str:
    parts = ["consentid:SEJwVjZvUm9", "consent:yes", "action:yes"]
    return ",".join(parts + [f"{name}:{'yes' if answers[name] else 'no'}" for name in COOKIEYES_CATEGORIES])


@given(st.fixed_dictionaries({name: st.booleans() for name in COOKIEBOT_CATEGORIES}))
def test_cookiebot_statistics_answer_decides(answers: dict[str, bool]) -> None:
    assert ConsentCookie("CookieConsent:statistics").decide(cookiebot_value(answers)) is answers["statistics"]
    assert ConsentCookie("CookieConsent:marketing").decide(cookiebot_value(answers)) is answers["marketing"]


@given(st.permutations(ONETRUST_GROUPS).flatmap(lambda order: st.fixed_dictionaries({g: st.booleans() for g in order})))
def test_onetrust_group_answer_decides(answers: dict[str, bool]) -> None:
    # (in any order: the first group follows "groups=", not a comma)
    assert ConsentCookie("OptanonConsent:C0002").decide(onetrust_value(answers)) is answers["C0002"]
    assert ConsentCookie("OptanonConsent:c0004").decide(onetrust_value(answers)) is answers["C0004"]


@given(st.fixed_dictionaries({name: st.booleans() for name in COOKIEYES_CATEGORIES}))
def test_cookieyes_category_answer_decides(answers: dict[str, bool]) -> None:
    # "consent:yes" says the banner was answered, not what: it must not grant analytics.
    assert ConsentCookie("cookieyes-consent:analytics").decide(cookieyes_value(answers)) is answers["analytics"]


@given(st.text())
def test_any_value_is_read_without_error(value: str) -> None:
    for setting in ("cc", "cc=all", "cc:statistics"):
        assert ConsentCookie(setting).decide(value) in (True, False, None)


@pytest.mark.parametrize(
    ("value", "decided"),
    [
        ("-1", None),  # Cookiebot outside a region that needs consent: no answer, the mode decides
        ("{necessary:true}", None),
        ('{"statistics":true}', True),  # quoted keys (Klaro and JSON-writing managers)
        ("%7B%22statistics%22%3Afalse%7D", False),
        ("%257Bstatistics%253Atrue%257D", True),  # encoded twice
        ("{xstatistics:true,statistics:false}", False),  # a key ending in the name is another key
        ("{statistics:maybe}", False),  # only a yes grants
        ("{stamp:'statistics:true',statistics:false}", False),  # a value quoting the key is no key
    ],
)
def test_category_examples(value: str, decided: bool | None) -> None:
    assert ConsentCookie("cc:statistics").decide(value) is decided


def _visitor(settings: dict[str, str], cookie: str) -> trackgate.Visitor:
    middleware = trackgate.WSGIMiddleware(lambda environ, start: [], secret_key="k", emit=lambda e: None, **settings)
    return middleware.gate.identity.resolve(cookie, "", None).visitor


@pytest.mark.parametrize("consent", ["implicit", "required"])
def test_a_declined_category_withholds_consent_in_either_mode(consent: str) -> None:
    declined = cookiebot_value(dict.fromkeys(COOKIEBOT_CATEGORIES, True) | {"statistics": False})
    settings = {"consent": consent, "consent_cookie": "CookieConsent:statistics"}
    assert _visitor(settings, f"CookieConsent={declined}").consent is False
    # Read by its name alone, the same cookie counted as a grant: the bug this form is for.
    assert _visitor({"consent": consent, "consent_cookie": "CookieConsent"}, f"CookieConsent={declined}").consent


def test_a_cookie_without_the_category_leaves_it_to_the_mode() -> None:
    setting = {"consent_cookie": "CookieConsent:statistics"}
    assert _visitor({"consent": "implicit", **setting}, "CookieConsent=-1").consent is True
    assert _visitor({"consent": "required", **setting}, "CookieConsent=-1").consent is False


@pytest.mark.parametrize("setting", ["CookieConsent:statistics", "OptanonConsent:C0002", "cc:a.b_c-d"])
def test_category_settings_are_accepted(setting: str) -> None:
    assert trackgate.Settings.from_environ({"TRACKGATE_CONSENT_COOKIE": setting}).consent_cookie == setting


@pytest.mark.parametrize("setting", ["cc:", ":statistics", "cc:stat istics", "cc:a;b", "cc:a:b"])
def test_bad_category_settings_name_the_variable(setting: str) -> None:
    with pytest.raises(trackgate.ConfigError, match="TRACKGATE_CONSENT_COOKIE"):
        trackgate.Settings.from_environ({"TRACKGATE_CONSENT_COOKIE": setting})
