"""The pytracking drop-in, side by side with the real pytracking 0.2.2: same tokens, fixed bugs."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import pytracking as real
import pytracking.html as real_html
import pytracking.webhook as real_webhook
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st
from sinks import WebhookReceiver

from trackgate import BadToken, BadURL
from trackgate.adapters import pytracking as facade
from trackgate.adapters.pytracking import webhook as facade_webhook

OPEN_BASE = "https://t.example.org/open/"
CLICK_BASE = "https://t.example.org/click/"
KEY = Fernet.generate_key()
BASES = {"base_open_tracking_url": OPEN_BASE, "base_click_tracking_url": CLICK_BASE}

urls = st.builds(
    lambda host, path: f"https://{host}/{path}",
    st.from_regex(r"[a-z]{1,10}\.(org|example|de)", fullmatch=True) | st.just("bücher.example"),
    # Without backslashes: browsers read one as "/", so no link to such a URL is made (BadURL, tested below).
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), max_size=30),
)
metadata = st.dictionaries(
    st.text(max_size=8), st.none() | st.integers() | st.text(max_size=12) | st.lists(st.booleans()), max_size=4
)


def test_same_public_names_as_pytracking() -> None:
    assert set(facade.__all__) == set(real.__all__)
    assert facade.TRACKING_PIXEL == real.TRACKING_PIXEL
    assert (facade.PNG_MIME_TYPE, facade.DEFAULT_TIMEOUT_SECONDS) == (real.PNG_MIME_TYPE, real.DEFAULT_TIMEOUT_SECONDS)
    assert facade.get_open_tracking_pixel() == real.get_open_tracking_pixel()


@given(url=urls, data=metadata)
@settings(max_examples=100, deadline=None)
def test_plain_links_are_identical_and_decode_with_either(url: str, data: dict[str, Any]) -> None:
    ours = facade.get_click_tracking_url(url, data, **BASES)
    theirs = real.get_click_tracking_url(url, data, **BASES)
    assert ours == theirs
    for decode in (facade.get_click_tracking_result, real.get_click_tracking_result):
        result = decode(ours, request_data={"user_agent": "ua"}, **BASES)
        assert (result.tracked_url, result.metadata, result.is_click_tracking) == (url, data, True)
    assert facade.get_open_tracking_url(data, **BASES) == real.get_open_tracking_url(data, **BASES)


@given(url=urls, data=metadata)
@settings(max_examples=50, deadline=None)
def test_fernet_links_decode_with_either(url: str, data: dict[str, Any]) -> None:
    options = {**BASES, "encryption_bytestring_key": KEY}
    for make in (facade.get_click_tracking_url, real.get_click_tracking_url):
        link = make(url, data, **options)
        for decode in (facade.get_click_tracking_result, real.get_click_tracking_result):
            result = decode(link, **options)
            assert (result.tracked_url, result.metadata) == (url, data)
    for make_open in (facade.get_open_tracking_url, real.get_open_tracking_url):
        link = make_open(data, **options)
        for decode_open in (facade.get_open_tracking_result, real.get_open_tracking_result):
            assert decode_open(link, **options).metadata == data


def test_configuration_objects_and_default_metadata_behave_alike() -> None:
    options = {**BASES, "default_metadata": {"site": "a"}, "webhook_url": "https://hook.example/"}
    for include in (False, True):
        ours_config = facade.Configuration(**options, include_default_metadata=include)
        real_config = real.Configuration(**options, include_default_metadata=include)
        link = facade.get_click_tracking_url("https://e.org/", {"r": 1}, configuration=ours_config)
        assert link == real.get_click_tracking_url("https://e.org/", {"r": 1}, configuration=real_config)
        ours = facade.get_click_tracking_result(link, configuration=ours_config)
        theirs = real.get_click_tracking_result(link, configuration=real_config)
        assert ours.to_json_dict() | {"timestamp": 0} == theirs.to_json_dict()._asdict() | {"timestamp": 0}
    assert facade.get_click_tracking_url_path(link, **BASES) == real.get_click_tracking_url_path(link, **BASES)
    assert facade.get_open_tracking_url_path(OPEN_BASE + "abc", **BASES) == "abc"


def test_append_slash_given_to_configuration_is_honoured() -> None:
    """pytracking 0.2 ignores Configuration(append_slash=True) (it only works as a keyword of a call)."""
    assert not real.Configuration(append_slash=True).append_slash
    configuration = facade.Configuration(append_slash=True, **BASES)
    link = facade.get_click_tracking_url("https://e.org/", configuration=configuration)
    assert link == real.get_click_tracking_url("https://e.org/", append_slash=True, **BASES)
    assert link.endswith("/")
    assert facade.get_click_tracking_result(link, configuration=configuration).tracked_url == "https://e.org/"


def test_to_json_dict_is_a_dict() -> None:
    result = facade.get_open_tracking_result(facade.get_open_tracking_url({"r": 1}, **BASES), **BASES)
    data = result.to_json_dict()
    assert type(data) is dict
    assert json.loads(json.dumps(data))["metadata"] == {"r": 1}


@pytest.mark.parametrize(
    "token", ["!!!", "e30x", "W10=", "bm90IGpzb24=", "gAAAAABfake", "\u00e9\u00e9", ""], ids=str
)
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "fernet"])
def test_decode_errors_are_only_bad_token(token: str, encrypted: bool) -> None:
    options = {"encryption_bytestring_key": KEY} if encrypted else {}
    with pytest.raises(BadToken):
        facade.get_click_tracking_result(token, **options)


def test_a_webhook_in_a_plain_token_is_ignored_but_honoured_in_a_fernet_token() -> None:
    forged = real.get_click_tracking_url(
        "https://e.org/", webhook_url="http://169.254.169.254/", include_webhook_url=True, **BASES
    )
    assert real.get_click_tracking_result(forged, include_webhook_url=True, **BASES).webhook_url == "http://169.254.169.254/"
    ours = facade.get_click_tracking_result(
        forged, include_webhook_url=True, webhook_url="https://hook.example/", **BASES
    )
    assert ours.webhook_url == "https://hook.example/"
    sealed = facade.get_click_tracking_url(
        "https://e.org/", webhook_url="https://a.example/", include_webhook_url=True, encryption_bytestring_key=KEY
    )
    result = facade.get_click_tracking_result(sealed, include_webhook_url=True, encryption_bytestring_key=KEY)
    assert result.webhook_url == "https://a.example/"


@pytest.mark.timeout(30)
def test_send_webhook_posts_what_pytracking_posts() -> None:
    with WebhookReceiver() as hook:
        link = real.get_click_tracking_url("https://e.org/", {"r": 1}, **BASES)
        options = {"request_data": {"user_ip": "1.2.3.4"}, "webhook_url": hook.url, **BASES}
        ours = facade.get_click_tracking_result(link, **options)
        theirs = real.get_click_tracking_result(link, **options)
        response = facade_webhook.send_webhook(ours)
        assert (response.status_code, response.ok, response.json()) == (200, True, {"ok": True})
        assert response.headers["content-type"].startswith("application/json")  # case-insensitive, as requests'
        response.raise_for_status()
        real_webhook.send_webhook(theirs).close()
        first, second = hook.payloads()
        assert first == second | {"timestamp": first["timestamp"]}
        assert first["tracked_url"] == "https://e.org/" and first["metadata"] == {"r": 1}


@pytest.mark.timeout(30)
def test_send_webhook_sends_the_urls_credentials_as_pytracking_did() -> None:
    # A webhook URL with basic-auth credentials is the receiver's login, not a link's disguise.
    with WebhookReceiver() as hook:
        url = hook.url.replace("http://", "http://hookuser:s3cret@")
        result = facade.TrackingResult(is_open_tracking=True, webhook_url=url, metadata={"a": 1}, timestamp=1)
        assert facade_webhook.send_webhook(result).status_code == 200
        [received] = hook.received
    assert received.headers["Authorization"] == "Basic " + base64.b64encode(b"hookuser:s3cret").decode()


@pytest.mark.parametrize("url", ["ftp://u:s3cret@h.example/", "http://u:s3cret@/hook", "https://u:s3cret@h.example:x/"])
def test_send_webhook_refuses_what_is_no_http_url_without_showing_its_password(url: str) -> None:
    result = facade.TrackingResult(is_open_tracking=True, webhook_url=url, timestamp=1)
    with pytest.raises(BadURL) as refused:
        facade_webhook.send_webhook(result)
    assert "s3cret" not in str(refused.value)


def test_send_webhook_fails_as_requests_fails() -> None:
    import requests

    result = facade.get_click_tracking_result(
        real.get_click_tracking_url("https://e.org/", **BASES), webhook_url="http://127.0.0.1:9/", **BASES
    )
    with pytest.raises(requests.RequestException):  # what code written for pytracking catches
        facade_webhook.send_webhook(result)


# --- Django views -------------------------------------------------------------------------------------------


@pytest.fixture
def django_settings() -> Iterator[Any]:
    from django.conf import settings as django_conf

    if not django_conf.configured:
        django_conf.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="test", ROOT_URLCONF=[])
    from django.test import override_settings

    with override_settings(PYTRACKING_CONFIGURATION=dict(BASES)):
        yield django_conf


@pytest.fixture
def rf(django_settings: Any) -> Any:
    from django.test import RequestFactory

    return RequestFactory()


def _path(link: str, base: str) -> str:
    return link.removeprefix(base)


def test_django_open_view_serves_an_uncached_pixel(rf: Any) -> None:
    from trackgate.adapters.pytracking.django import OpenTrackingView

    seen: list[facade.TrackingResult] = []

    class View(OpenTrackingView):
        def notify_tracking_event(self, tracking_result: facade.TrackingResult) -> None:
            seen.append(tracking_result)

    link = real.get_open_tracking_url({"r": 5}, **BASES)
    response = View.as_view()(rf.get("/", HTTP_USER_AGENT="Mail"), path=_path(link, OPEN_BASE))
    assert (response.status_code, response["Content-Type"], response.content) == (200, "image/png", real.TRACKING_PIXEL)
    assert response["Cache-Control"] == "no-store, no-cache, must-revalidate, private"
    assert (response["Pragma"], response["Expires"]) == ("no-cache", "0")
    assert seen[0].metadata == {"r": 5} and seen[0].request_data == {"user_agent": "Mail", "user_ip": "127.0.0.1"}


def test_django_click_view_redirects_and_refuses_bad_links(rf: Any) -> None:
    from django.http import Http404

    from trackgate.adapters.pytracking.django import ClickTrackingView

    errors: list[Exception] = []

    class View(ClickTrackingView):
        def notify_decoding_error(self, exception: Exception, request: Any) -> None:
            errors.append(exception)

    from django.test import override_settings

    link = real.get_click_tracking_url("https://e.org/x", **BASES)
    with override_settings(PYTRACKING_REDIRECT_ALLOWED_HOSTS=["e.org"]):
        response = View.as_view()(rf.get("/"), path=_path(link, CLICK_BASE))
    assert (response.status_code, response["Location"]) == (302, "https://e.org/x")
    for path in ("garbage", _path(real.get_click_tracking_url("javascript:alert(1)", **BASES), CLICK_BASE)):
        with pytest.raises(Http404):
            View.as_view()(rf.get("/"), path=path)
    assert len(errors) == 2


@pytest.mark.parametrize("allowed", [None, "shop.example", ["shop.example", ".partner.example"]])
def test_django_click_view_redirects_a_plain_link_only_to_an_allowed_host(rf: Any, allowed: Any) -> None:
    # Anyone can write a plain pytracking link: followed anywhere, the view is an open redirect under the
    # site's name. An encrypted link is the sender's own, and goes anywhere http(s).
    from django.http import Http404
    from django.test import override_settings

    from trackgate.adapters.pytracking.django import ClickTrackingView

    def follow(url: str, key: bytes | None = None) -> int:
        options = {"encryption_bytestring_key": key} if key else {}
        link = real.get_click_tracking_url(url, **BASES, **options)
        hosts = {} if allowed is None else {"PYTRACKING_REDIRECT_ALLOWED_HOSTS": allowed}
        with override_settings(PYTRACKING_CONFIGURATION={**BASES, **options}, **hosts):
            try:
                return int(ClickTrackingView.as_view()(rf.get("/"), path=_path(link, CLICK_BASE)).status_code)
            except Http404:
                return 404

    assert follow("https://evil.example/") == 404
    assert follow("https://shop.example/sale") == (404 if allowed is None else 302)
    assert follow("https://www.partner.example/") == (302 if isinstance(allowed, list) else 404)
    assert follow("https://evil.example/", key=KEY) == 302


def test_django_request_data_trusts_x_forwarded_for_only_when_told(rf: Any, django_settings: Any) -> None:
    from django.test import override_settings

    from trackgate.adapters.pytracking.django import get_request_data

    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5", REMOTE_ADDR="10.0.0.1")
    assert get_request_data(request)["user_ip"] == "10.0.0.1"
    with override_settings(PYTRACKING_TRUSTED_PROXIES=1):
        assert get_request_data(request)["user_ip"] == "203.0.113.5"


# --- adapt_html -----------------------------------------------------------------------------------------------

EMAIL = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>News &amp; more</title></head>
<body>
<p>Caf&eacute; &#233; {{first_name}}</p>
<a href="https://shop.example/sale?a=1&amp;b=2">Sale</a>
<a href="http://partner.example/ü">Partner</a>
<a href="mailto:team@example.org">Mail</a>
<a href="#top">Top</a>
<a href="/relative">Relative</a>
</body></html>
"""


def _hrefs(html: str) -> list[str]:
    from selectolax.lexbor import LexborHTMLParser

    return [str(node.attributes["href"]) for node in LexborHTMLParser(html).css("a[href]")]


def _pixels(html: str) -> list[str]:
    from selectolax.lexbor import LexborHTMLParser

    return [str(node.attributes["src"]) for node in LexborHTMLParser(html).css("img[src]")]


def test_adapt_html_tracks_like_pytracking_and_keeps_the_bytes() -> None:
    from trackgate.adapters.pytracking.html import adapt_html

    ours = adapt_html(EMAIL, {"r": 1}, **BASES)
    theirs = real_html.adapt_html(EMAIL, {"r": 1}, **BASES)
    assert ours.startswith("<!DOCTYPE html>") and not theirs.startswith("<!DOCTYPE html>")
    assert "Caf&eacute; &#233; {{first_name}}" in ours
    assert _hrefs(ours) == _hrefs(theirs)  # same pytracking links, in the same places
    for href in _hrefs(ours)[:2]:
        result = real.get_click_tracking_result(href, **BASES)
        assert result.metadata == {"r": 1}
    assert [real.get_click_tracking_result(h, **BASES).tracked_url for h in _hrefs(ours)[:2]] == [
        "https://shop.example/sale?a=1&b=2",
        "http://partner.example/ü",
    ]
    [pixel] = _pixels(ours)
    assert real.get_open_tracking_result(pixel, **BASES).metadata == {"r": 1}


def test_adapt_html_is_idempotent_and_takes_fragments_and_bytes() -> None:
    from trackgate.adapters.pytracking.html import adapt_html

    once = adapt_html(EMAIL, None, open_tracking=False, **BASES)
    assert adapt_html(once, None, open_tracking=False, **BASES) == once
    fragment = adapt_html('<a href="https://e.org/">x</a>', None, open_tracking=False, **BASES)
    assert _hrefs(fragment)[0].startswith(CLICK_BASE)
    assert adapt_html(EMAIL.encode(), None, click_tracking=False, **BASES).count("<img") == 1


def test_adapt_html_makes_no_link_its_click_view_would_refuse(rf: Any) -> None:
    """pytracking tracked //host links (kept: the view sends them to https) and any other destination (a
    user name, ftp:): the view refuses those, so they stay as they were instead of becoming dead links."""
    from django.http import Http404
    from django.test import override_settings

    from trackgate import BadURL
    from trackgate.adapters.pytracking.django import ClickTrackingView
    from trackgate.adapters.pytracking.html import adapt_html

    with override_settings(PYTRACKING_REDIRECT_ALLOWED_HOSTS=["shop.example", "e.org"]):
        doc = '<a href="//shop.example/x">a</a> <a href="https://user@shop.example/">b</a> <a href="ftp://f.example/">c</a>'
        out = adapt_html(doc, None, open_tracking=False, **BASES)
        [tracked] = [href for href in _hrefs(out) if href.startswith(CLICK_BASE)]
        assert '<a href="https://user@shop.example/">b</a> <a href="ftp://f.example/">c</a>' in out
        response = ClickTrackingView.as_view()(rf.get("/"), path=_path(tracked, CLICK_BASE))
        assert (response.status_code, response["Location"]) == (302, "https://shop.example/x")
        with pytest.raises(BadURL):
            facade.get_click_tracking_url("ftp://f.example/", **BASES)
        # A //host link pytracking itself made (and sent) redirects too.
        theirs = real.get_click_tracking_url("//shop.example/y", **BASES)
        assert ClickTrackingView.as_view()(rf.get("/"), path=_path(theirs, CLICK_BASE))["Location"] == (
            "https://shop.example/y"
        )
        with pytest.raises(Http404):  # and what it made for a user-name destination stays refused
            named = real.get_click_tracking_url("https://u@e.org/", **BASES)
            ClickTrackingView.as_view()(rf.get("/"), path=_path(named, CLICK_BASE))


def test_adapt_html_reads_bytes_in_the_charset_they_declare() -> None:
    from trackgate.adapters.pytracking.html import adapt_html

    text = "café \u2013 \u201cquote\u201d"  # windows-1252's own characters
    doc = f'<html><head><meta charset="windows-1252"></head><body><p>{text}</p></body></html>'
    out = adapt_html(doc.encode("cp1252"), None, open_tracking=False, **BASES)
    assert f"<p>{text}</p>" in out


def test_adapt_html_tracks_links_to_the_site_whose_root_is_the_tracking_base() -> None:
    from trackgate.adapters.pytracking.html import adapt_html

    bases = {"base_click_tracking_url": "https://example.org/", "base_open_tracking_url": "https://example.org/"}
    out = adapt_html('<a href="https://example.org/about">about</a>', None, open_tracking=False, **bases)
    [href] = _hrefs(out)
    assert real.get_click_tracking_result(href, **bases).tracked_url == "https://example.org/about"
    assert adapt_html(out, None, open_tracking=False, **bases) == out  # and once tracked, not again


def test_decoding_what_is_no_string_is_a_bad_token_and_fernet_errors_stay_invalid_token() -> None:
    from cryptography.fernet import InvalidToken

    for bad in (None, b"bytes", 7):
        with pytest.raises(BadToken):
            facade.get_click_tracking_result(bad, **BASES)  # type: ignore[arg-type]
    with pytest.raises(InvalidToken):  # what code written for pytracking's Fernet links catches
        facade.get_click_tracking_result("gAAAAABfake", encryption_bytestring_key=KEY)
    with pytest.raises(BadToken):
        facade.get_click_tracking_result("gAAAAABfake", encryption_bytestring_key=KEY)


def test_tracking_result_keeps_request_data_and_tracking_result_json_exists() -> None:
    from trackgate.adapters.pytracking.tracking import TrackingResultJSON

    request_data = {"user_agent": "ua"}
    link = real.get_click_tracking_url("https://e.org/", **BASES)
    result = facade.get_click_tracking_result(link, request_data, **BASES)
    assert result.request_data is request_data
    assert TrackingResultJSON._fields == real.tracking.TrackingResultJSON._fields


def test_links_with_large_metadata_decode_both_ways() -> None:
    # Over 16,384 characters of token (the endpoints' bound): pytracking reads them, so the facade does too.
    metadata = {f"field-{n}": "value-" * 3 for n in range(700)}
    for made_by in (real, facade):
        link = made_by.get_click_tracking_url("https://e.org/", metadata, **BASES)
        assert len(link) > 16384
        assert facade.get_click_tracking_result(link, **BASES).metadata == metadata
        assert real.get_click_tracking_result(link, **BASES).metadata == metadata
