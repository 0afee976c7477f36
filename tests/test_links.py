"""TrackingLinks: making and reading links, what may be a destination, legacy pytracking links."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
import pytracking
from hypothesis import given, settings
from hypothesis import strategies as st

import trackgate.links as links_module
from trackgate import BadToken, BadURL, ConfigError, ForeignToken, Settings, TokenExpired, TrackingLinks
from trackgate.links import MAX_URL_CHARS, TrackingResult, location_header
from trackgate.tokens import TokenCodec

BASE = "https://t.example.org"
SETTINGS = Settings.from_environ({}, secret_key="link-key", base_url=BASE)
LINKS = TrackingLinks(SETTINGS)
SEALED_LINKS = TrackingLinks(SETTINGS.replace(encryption_key="enc-key"))

hosts = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,8}){0,2}\.[a-z]{2,6}", fullmatch=True) | st.sampled_from(
    ["bücher.example", "例え.テスト", "127.0.0.1:8080", "[::1]:443"]
)
path_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\\x85\x9f#?"), max_size=40
)
urls = st.builds(
    lambda scheme, host, path, query: f"{scheme}://{host}/{path}" + (f"?{query}" if query else ""),
    st.sampled_from(["http", "https", "HTTPS"]),
    hosts,
    path_text,
    path_text,
)
metadata = st.dictionaries(
    st.text(max_size=10),
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=20) | st.lists(st.text(max_size=5)),
    max_size=5,
)


@pytest.mark.parametrize("links", [LINKS, SEALED_LINKS], ids=["signed", "encrypted"])
@given(url=urls, data=metadata)
@settings(max_examples=150, deadline=None)
def test_click_links_round_trip_unicode_urls_and_metadata(
    links: TrackingLinks, url: str, data: dict[str, Any]
) -> None:
    link = links.click_url(url, data)
    assert link.startswith(BASE + "/_tg/c/")
    assert link.isascii()
    result = links.decode(link, {"user_agent": "ua"})
    assert (result.kind, result.tracked_url, dict(result.metadata)) == ("click", url, data)
    assert result.is_click_tracking and not result.is_open_tracking
    assert result.request_data == {"user_agent": "ua"}
    assert len(result.event_id) == 32
    assert location_header(url).isascii()


@given(url=urls, data=metadata)
@settings(max_examples=150, deadline=None)
def test_a_documents_click_maker_makes_exactly_the_links_click_url_makes(url: str, data: dict[str, Any]) -> None:
    # The rewriter encodes an email's metadata once; the links must not differ by a byte.
    assert LINKS.clicks_for(data)(url) == LINKS.click_url(url, data)
    page_maker = LINKS.for_page("https://shop.example/p", "https://shop.example").clicks_for(data)
    assert page_maker(url) == "https://shop.example" + LINKS.click_path(url, data or None)


@given(url=urls, data=metadata)
@settings(max_examples=50, deadline=None)
def test_an_encrypted_documents_click_maker_decodes_like_click_url(url: str, data: dict[str, Any]) -> None:
    made = SEALED_LINKS.decode(SEALED_LINKS.clicks_for(data)(url))
    assert (made.tracked_url, dict(made.metadata)) == (url, data)


def test_a_click_maker_refuses_what_click_url_refuses() -> None:
    maker = LINKS.clicks_for({"recipient": "r-1"})
    for bad in ("javascript:alert(1)", "//evil.example/", "https://a.example/\\evil", "https://a.example/\ud800"):
        with pytest.raises(BadURL):
            maker(bad)
    with pytest.raises(ValueError):
        LINKS.clicks_for({"n": float("nan")})
    without_base = TrackingLinks(Settings.from_environ({}, secret_key="k")).clicks_for({"recipient": "r-1"})
    with pytest.raises(ConfigError):
        without_base("https://a.example/")


@pytest.mark.parametrize("links", [LINKS, SEALED_LINKS], ids=["signed", "encrypted"])
@given(data=metadata)
@settings(max_examples=50, deadline=None)
def test_open_links_round_trip_metadata(links: TrackingLinks, data: dict[str, Any]) -> None:
    result = links.decode(links.open_url(data))
    assert (result.kind, result.tracked_url, dict(result.metadata)) == ("open", None, data)
    assert result.is_open_tracking and not result.is_click_tracking


UNSAFE = {
    "javascript": "javascript:alert(1)",
    "javascript-case": "JaVaScRiPt:alert(1)",
    "data": "data:text/html,<script>alert(1)</script>",
    "protocol-relative": "//evil.example/",
    "backslashes": "\\\\evil.example\\",
    "backslash-host": "https:\\\\evil.example",
    "backslash-in-authority": "https://good.example\\@evil.example/",
    "slash-backslash": "https:/\\evil.example",
    "triple-slash": "https:///evil.example",
    "newline": "https://good.example/\nLocation: https://evil.example",
    "tab-in-scheme": "ht\ttps://evil.example",
    "nul": "https://good.example/\x00",
    "c1-control": "https://good.example/\x85",
    "leading-space": " https://evil.example",
    "space-in-host": "https://evil .example",
    "credentials": "https://good.example@evil.example/",
    "ftp": "ftp://files.example/",
    "relative": "/local/path",
    "empty": "",
    "too-long": "https://example.org/" + "a" * MAX_URL_CHARS,
}


@pytest.mark.parametrize("url", UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_destinations_are_refused_at_encode(url: str) -> None:
    with pytest.raises(BadURL) as caught:
        LINKS.click_url(url)
    assert caught.value.url == url and caught.value.reason


@pytest.mark.parametrize("url", UNSAFE.values(), ids=UNSAFE.keys())
def test_unsafe_destinations_are_refused_at_decode_even_when_signed(url: str) -> None:
    """A token carrying such a URL (say, made by an old version with our key) still never redirects."""
    token = TokenCodec(SETTINGS.signing_keys).dumps({"u": url}, "click")
    with pytest.raises(BadToken, match="destination refused"):
        LINKS.decode(f"/_tg/c/{token}")


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("https://example.org/a?b=c#d", "https://example.org/a?b=c#d"),
        ("https://bücher.example/ä?q=ü#ö", "https://xn--bcher-kva.example/%C3%A4?q=%C3%BC#%C3%B6"),
        ("https://[::1]:8443/ä", "https://[::1]:8443/%C3%A4"),
        ("http://127.0.0.1:8080/a b", "http://127.0.0.1:8080/a%20b"),
        ("https://example.org/%C3%A4/ü", "https://example.org/%C3%A4/%C3%BC"),
    ],
)
def test_location_header_is_ascii_and_keeps_the_destination(url: str, location: str) -> None:
    assert location_header(url) == location


def test_the_longest_allowed_url_is_accepted() -> None:
    url = "https://example.org/" + "a" * (MAX_URL_CHARS - len("https://example.org/"))
    assert LINKS.decode(LINKS.click_url(url)).tracked_url == url


def test_tokens_stay_close_to_pytrackings_length() -> None:
    url = "https://shop.example.org/collections/summer-sale/products/linen-shirt-blue-xl?utm_source=newsletter&utm_medium=email&utm_campaign=july"
    assert len(url) == 134
    meta = {"recipient": "r-1042", "campaign": 7}
    plain = pytracking.get_click_tracking_url(url, meta, base_click_tracking_url=BASE + "/c/")
    ours = LINKS.click_url(url, meta).rsplit("/", 1)[1]
    assert len(ours) <= len(plain.rsplit("/", 1)[1]) + 50


def test_an_open_token_is_not_a_click_token() -> None:
    token = LINKS.open_url({"r": 1}).rsplit("/", 1)[1]
    with pytest.raises(ForeignToken):
        LINKS.decode(f"/_tg/c/{token}")


@pytest.mark.parametrize(
    "shape",
    ["{link}", "{path}", "{link}?utm=1", "{link}#frag", "{link}/", "{token}", "https://other.host{path}"],
    ids=["url", "path", "query", "fragment", "trailing-slash", "bare-token", "other-host"],
)
def test_decode_accepts_urls_paths_and_bare_tokens(shape: str) -> None:
    link = LINKS.click_url("https://example.org/x", {"k": "v"})
    path = link.removeprefix(BASE)
    text = shape.format(link=link, path=path, token=path.rsplit("/", 1)[1])
    assert LINKS.decode(text).tracked_url == "https://example.org/x"
    bare_open = LINKS.open_url({"k": "v"}).rsplit("/", 1)[1]
    assert LINKS.decode(bare_open).kind == "open"


@pytest.mark.parametrize(
    "text", ["/_tg/x/abc", "/_tg/c/", "/_tg/c/a/b", "/elsewhere/abc", "", "https://t.example.org/_tg/o/"]
)
def test_decode_of_non_links_is_bad_token(text: str) -> None:
    with pytest.raises(BadToken):
        LINKS.decode(text)


def test_links_need_a_base_url() -> None:
    links = TrackingLinks(Settings.from_environ({}, secret_key="k"))
    with pytest.raises(ConfigError, match="TRACKGATE_BASE_URL"):
        links.click_url("https://example.org/")
    with pytest.raises(ConfigError, match="TRACKGATE_BASE_URL"):
        links.open_url()
    assert TrackingLinks(links.settings, base_url="https://b.example/").open_url().startswith("https://b.example/_tg/o/")


def test_base_url_with_a_path_and_custom_prefix() -> None:
    links = TrackingLinks(Settings.from_environ({}, secret_key="k", base_url="https://x.org/app/", path_prefix="/t"))
    link = links.click_url("https://example.org/")
    assert link.startswith("https://x.org/app/t/c/")
    assert links.is_tracking_url(link) and links.is_tracking_url(link.removeprefix("https://x.org"))
    assert links.decode(link).tracked_url == "https://example.org/"


def test_expiry() -> None:
    link = LINKS.click_url("https://example.org/", expires_in=3600)
    assert LINKS.decode(link).tracked_url == "https://example.org/"
    stale = TokenCodec(SETTINGS.signing_keys).dumps({"u": "https://example.org/"}, "click", expires_at=1)
    with pytest.raises(TokenExpired) as caught:
        LINKS.decode(f"/_tg/c/{stale}")
    assert isinstance(caught.value.payload, TrackingResult)
    assert caught.value.payload.tracked_url == "https://example.org/"
    with pytest.raises(ValueError, match="positive"):
        LINKS.click_url("https://example.org/", expires_in=0)


def test_keys_rotate_without_breaking_sent_links() -> None:
    sent = LINKS.click_url("https://example.org/")
    rotated = TrackingLinks(SETTINGS.replace(secret_key=["newer-key", "link-key"]))
    assert rotated.decode(sent).tracked_url == "https://example.org/"
    with pytest.raises(ForeignToken):  # new links are signed with the newest key only
        LINKS.decode(rotated.click_url("https://e.org/"))


def test_signed_links_still_decode_after_encryption_is_turned_on() -> None:
    sent = LINKS.click_url("https://example.org/")
    assert SEALED_LINKS.decode(sent).tracked_url == "https://example.org/"


def test_is_tracking_url() -> None:
    assert LINKS.is_tracking_url(LINKS.click_url("https://example.org/"))
    assert LINKS.is_tracking_url("/_tg/o/abc")
    assert not LINKS.is_tracking_url("https://other.example/_tg/o/abc")
    assert not LINKS.is_tracking_url("https://t.example.org/_tgx/o/abc")
    assert not LINKS.is_tracking_url("https://example.org/")


def test_to_json_dict_is_a_plain_json_ready_dict() -> None:
    result = LINKS.decode(LINKS.click_url("https://example.org/", {"k": [1, 2]}), {"user_ip": "203.0.113.0"})
    data = result.to_json_dict()
    assert type(data) is dict
    assert json.loads(json.dumps(data)) == data
    assert data["tracked_url"] == "https://example.org/" and data["metadata"] == {"k": [1, 2]}
    assert data["is_click_tracking"] is True and data["request_data"] == {"user_ip": "203.0.113.0"}


class TestPageLinks:
    def test_click_links_resolve_relative_urls_and_use_the_pages_origin(self) -> None:
        page = LINKS.for_page("https://shop.example/a/b?x=1", "https://shop.example")
        for href, expected in [
            ("https://out.example/p", "https://out.example/p"),
            ("/about", "https://shop.example/about"),
            ("c", "https://shop.example/a/c"),
            ("//cdn.example/f", "https://cdn.example/f"),
        ]:
            link = page.click_url(href)
            assert link.startswith("https://shop.example/_tg/c/")
            assert page.is_tracking_url(link)
            result = LINKS.decode(link)
            assert (result.tracked_url, result.visitor) == (expected, None)

    def test_click_links_are_cached_per_origin_and_destination(self) -> None:
        links = TrackingLinks(SETTINGS)
        first = links.for_page("https://a.example/", "https://a.example").click_url("https://out.example/")
        again = links.for_page("https://a.example/x", "https://a.example").click_url("https://out.example/")
        other = links.for_page("https://b.example/", "https://b.example").click_url("https://out.example/")
        assert first is again
        assert other.startswith("https://b.example/")

    def test_cached_links_are_safe_across_threads(self) -> None:
        links = TrackingLinks(SETTINGS)
        made: list[str] = []

        def work(n: int) -> None:
            page = links.for_page("https://a.example/", "https://a.example")
            made.extend(page.click_url(f"https://out.example/{i % 50}") for i in range(n, n + 500))

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(made) == 2000
        assert len(set(made)) == 50
        assert {links.decode(link).tracked_url for link in set(made)} == {f"https://out.example/{i}" for i in range(50)}

    def test_the_pixel_records_a_page_view_of_the_page(self) -> None:
        page = LINKS.for_page("https://shop.example/p?q=1", "https://shop.example")
        pixel = page.open_url()
        assert pixel.startswith("https://shop.example/_tg/o/")
        result = LINKS.decode(pixel)
        assert (result.kind, result.tracked_url, result.is_open_tracking) == (
            "pageview",
            "https://shop.example/p?q=1",
            True,
        )
        assert result.title is None
        titled = LINKS.decode(page.open_url(title="Linen shirt · Shop"))
        assert (titled.kind, titled.title) == ("pageview", "Linen shirt · Shop")
        assert titled.to_json_dict()["title"] == "Linen shirt · Shop"
        assert LINKS.decode(LINKS.open_url({"r": 1})).title is None  # an email's pixel has no page
        came_from = LINKS.for_page("https://shop.example/p", "https://shop.example", referrer="https://s.example/")
        assert LINKS.decode(came_from.open_url()).referrer == "https://s.example/"
        # A referrer that would make the pixel's URL too long for a server's request line is left out.
        too_long = LINKS.for_page("https://shop.example/p", "https://shop.example", referrer="https://s/" + "q" * 1100)
        assert LINKS.decode(too_long.open_url()).referrer is None

    @pytest.mark.parametrize("query_chars", [100, 2000, 3000, 4000, 5000])
    def test_a_pixel_stays_short_enough_for_a_server_to_take(self, query_chars: int) -> None:
        # Random base64: compression cannot shorten it much. 5,000 is past what a destination may be at all.
        def noise(chars: int) -> str:
            return base64.urlsafe_b64encode(os.urandom(chars))[:chars].decode()

        page_url, referrer = "https://shop.example/p?q=" + noise(query_chars), "https://s.example/?r=" + noise(900)
        page = LINKS.for_page(page_url, "https://shop.example", referrer=referrer)
        pixel = page.open_url(title="Linen shirt")
        assert len(pixel) <= 4000  # gunicorn's request line takes 4,094 bytes
        result = LINKS.decode(pixel)
        whole = result.tracked_url == page_url
        assert result.tracked_url in (page_url, "https://shop.example/p")
        # What goes first when it does not fit: the referrer, then the title, then the query.
        assert result.referrer in (referrer, None) and result.title in ("Linen shirt", None)
        assert (result.referrer is None or result.title is not None) and (result.title is None or whole)
        if query_chars == 100:
            assert (result.referrer, result.title, whole) == (referrer, "Linen shirt", True)
        if query_chars == 5000:
            assert (result.referrer, result.title, whole) == (None, None, False)

    def test_unsafe_hrefs_are_refused(self) -> None:
        page = LINKS.for_page("https://shop.example/", "https://shop.example")
        with pytest.raises(BadURL):
            page.click_url("javascript:alert(1)")


def _plain_pytracking_token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


class TestLegacyPytrackingLinks:
    legacy = SETTINGS.replace(legacy_pytracking=True, redirect_allowed_hosts=["shop.example", "*.partner.example"])

    @pytest.mark.parametrize(
        ("url", "allowed"),
        [
            ("https://shop.example/sale", True),
            ("https://SHOP.example/sale", True),
            ("https://www.partner.example/", True),
            ("https://partner.example/", True),
            ("https://evil.example/", False),
            ("https://shop.example.evil.example/", False),
            ("https://evilpartner.example/", False),
        ],
    )
    def test_unsigned_click_links_redirect_only_to_allowed_hosts(self, url: str, allowed: bool) -> None:
        link = pytracking.get_click_tracking_url(url, {"r": 1}, base_click_tracking_url=BASE + "/_tg/c/")
        links = TrackingLinks(self.legacy)
        if allowed:
            result = links.decode(link)
            assert (result.tracked_url, dict(result.metadata), result.legacy) == (url, {"r": 1}, True)
        else:
            with pytest.raises(BadToken, match="TRACKGATE_REDIRECT_ALLOWED_HOSTS"):
                links.decode(link)

    def test_without_legacy_mode_pytracking_links_are_bad(self) -> None:
        link = pytracking.get_click_tracking_url("https://shop.example/", base_click_tracking_url=BASE + "/_tg/c/")
        with pytest.raises(BadToken):
            LINKS.decode(link)

    def test_open_links_and_fernet_links_with_the_old_key(self) -> None:
        from cryptography.fernet import Fernet

        key = Fernet.generate_key().decode()
        links = TrackingLinks(self.legacy.replace(legacy_pytracking_key=key))
        opened = pytracking.get_open_tracking_url({"r": 2}, base_open_tracking_url=BASE + "/_tg/o/")
        assert dict(links.decode(opened).metadata) == {"r": 2}
        # Fernet links are authentic: any http(s) host, even one not in the allowed list.
        sealed = pytracking.get_click_tracking_url(
            "https://anywhere.example/", base_click_tracking_url=BASE + "/_tg/c/", encryption_bytestring_key=key
        )
        assert links.decode(sealed).tracked_url == "https://anywhere.example/"

    def test_legacy_destinations_are_still_checked(self) -> None:
        token = _plain_pytracking_token({"url": "javascript:alert(1)"})
        with pytest.raises(BadToken, match="destination refused"):
            TrackingLinks(self.legacy).decode(f"/_tg/c/{token}")

    def test_embedded_webhooks_are_ignored(self) -> None:
        token = _plain_pytracking_token({"url": "https://shop.example/", "webhook": "http://169.254.169.254/"})
        assert TrackingLinks(self.legacy).decode(f"/_tg/c/{token}").webhook_url is None


class TestCommandLine:
    @staticmethod
    def run(*args: str, base_url: str | None = BASE) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")}
        env["TRACKGATE_SECRET_KEY"] = "link-key"
        if base_url:
            env["TRACKGATE_BASE_URL"] = base_url
        return subprocess.run(
            [sys.executable, "-m", "trackgate.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    def test_link_then_decode(self) -> None:
        made = self.run("link", "https://exämple.org/ä", "--metadata", '{"r": "ü"}', "--expires", "30d")
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip()
        assert LINKS.decode(link).tracked_url == "https://exämple.org/ä"
        shown = self.run("decode", link)
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert (data["tracked_url"], data["metadata"], data["kind"], data["expired"]) == (
            "https://exämple.org/ä",
            {"r": "ü"},
            "click",
            False,
        )

    def test_open_link(self) -> None:
        made = self.run("link", "--open", "--metadata", '{"r": 1}')
        assert made.returncode == 0, made.stderr
        assert LINKS.decode(made.stdout.strip()).kind == "open"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("link", "javascript:alert(1)"), "only http:// and https://"),
            (("link",), "either a URL or --open"),
            (("link", "https://e.org/", "--open"), "either a URL or --open"),
            (("link", "https://e.org/", "--metadata", "[1]"), "JSON object"),
            (("link", "https://e.org/", "--metadata", "{"), "not JSON"),
            (("link", "https://e.org/", "--expires", "soon"), "--expires"),
            (("decode", "https://t.example.org/_tg/c/forged.token"), "not a valid tracking link"),
            (("link", "https://e.org/", "--metadata", '{"x": NaN}'), "NaN is not JSON"),
            (("link", "https://e.org/", "--metadata", json.dumps({"x": "y" * 70000})), "at most 65536 bytes"),
            (("link", "https://e.org/", "--expires", "1" + "0" * 400 + "d"), "positive number of seconds"),
        ],
        ids=[
            "unsafe-url", "nothing", "both", "metadata-list", "metadata-json", "expires", "forged", "nan",
            "too-large", "expires-past-any-float",
        ],
    )
    def test_bad_input_is_exit_2_with_a_message(self, args: tuple[str, ...], message: str) -> None:
        result = self.run(*args)
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr

    def test_missing_base_url_is_a_configuration_error(self) -> None:
        result = self.run("link", "https://e.org/", base_url=None)
        assert result.returncode == 1
        assert "TRACKGATE_BASE_URL" in result.stderr


# --- hosts as the redirect spells them -------------------------------------------------------------------

# IDNA applies NFKC: a fullwidth "\" (or "/") becomes an ASCII one in the Location header, which browsers
# read as the end of the host: https://evil.example\.partner.example/ goes to evil.example.
DISGUISED_HOSTS = [
    "https://evil.example\uff3c.partner.example/",
    "https://evil.example\ufe68.partner.example/",
    "https://evil.example\uff0f.partner.example/",
    "https://\xa0.partner.example/",
    "https://[x.partner.example/",
    "https://a.partner.example:99999/\u00e9",
    "https://a.example:99999/",
]


@pytest.mark.parametrize("url", DISGUISED_HOSTS)
def test_a_host_the_redirect_would_spell_otherwise_is_refused(url: str) -> None:
    with pytest.raises(BadURL, match="invalid host"):
        LINKS.click_url(url)


@pytest.mark.parametrize("url", DISGUISED_HOSTS)
def test_a_legacy_link_to_such_a_host_is_a_bad_token_never_a_redirect_or_an_error(url: str) -> None:
    legacy = TrackingLinks(
        Settings.from_environ({}, secret_key="k", base_url=BASE, legacy_pytracking=True,
                              redirect_allowed_hosts=".partner.example")
    )
    token = base64.urlsafe_b64encode(json.dumps({"url": url}).encode()).decode()
    with pytest.raises(BadToken):
        legacy.decode_token(token, "click")


def test_unicode_hosts_ports_and_ip_literals_still_make_links() -> None:
    for url, location in [
        ("https://b\u00fccher.example/x", "https://xn--bcher-kva.example/x"),
        ("http://localhost:8000/a", "http://localhost:8000/a"),
        ("https://[::1]:8443/\u00e9", "https://[::1]:8443/%C3%A9"),
    ]:
        result = LINKS.decode(LINKS.click_url(url))
        assert (result.tracked_url, location_header(result.tracked_url or "")) == (url, location)


@pytest.mark.parametrize(
    ("url", "location"),
    [
        # Browsers (UTS #46, non-transitional) keep ß, final sigma and the joiners that IDNA 2003 maps away:
        # fass.de, not faß.de, would be another site.
        ("https://fa\u00df.de/angebot", "https://xn--fa-hia.de/angebot"),
        ("https://\u03b2\u03cc\u03bb\u03bf\u03c2.gr/", "https://xn--nxasmm1c.gr/"),
        ("https://\u0dc1\u0dca\u200d\u0dbb\u0dd3.lk/", "https://xn--10cl1a0b660p.lk/"),
        ("https://FA\u00df.DE/", "https://xn--fa-hia.de/"),
        ("https://\u2603.net/", "https://xn--n3h.net/"),  # a symbol IDNA 2008 refuses and browsers accept
    ],
)
def test_a_redirect_goes_to_the_host_a_browser_would_have_gone_to(url: str, location: str) -> None:
    result = LINKS.decode(LINKS.click_url(url))
    assert location_header(result.tracked_url or "") == location
    legacy = Settings.from_environ({}, redirect_allowed_hosts="xn--fa-hia.de")
    assert links_module.host_allowed("https://fa\u00df.de/", legacy.redirect_allowed_hosts)
    assert not links_module.host_allowed("https://fass.de/", legacy.redirect_allowed_hosts)


def test_blank_keys_given_in_code_are_dropped_as_the_environment_drops_them() -> None:
    settings = Settings.from_environ({}, secret_key=("new", "", "  "))
    assert settings.signing_keys == ("new",)
    with pytest.raises(ConfigError, match="TRACKGATE_SECRET_KEY"):
        Settings.from_environ({}, env="production", secret_key=("",))


def test_a_link_too_large_to_be_read_back_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match=r"read back|at most"):
        LINKS.click_url("https://a.example/", {"blob": base64.b64encode(os.urandom(12_500)).decode()})
    with pytest.raises(ValueError, match="at most"):
        LINKS.click_url("https://a.example/", {"blob": "a" * 70_000})


def test_a_short_lifetime_is_never_cut_short_and_odd_ones_are_refused() -> None:
    link = LINKS.click_url("https://a.example/", expires_in=0.3)
    assert LINKS.decode(link).tracked_url == "https://a.example/"  # not expired the moment it is made
    for odd in (float("inf"), float("nan"), -1):
        with pytest.raises(ValueError, match="positive number of seconds"):
            LINKS.click_url("https://a.example/", expires_in=odd)


def test_a_bare_pytracking_click_token_refused_is_not_read_as_an_open() -> None:
    # decode() of a bare token tries click then open: a refused legacy click must not come back as an
    # "open" naming the forged destination.
    legacy = TrackingLinks(
        Settings.from_environ({}, secret_key="k", base_url=BASE, legacy_pytracking=True,
                              redirect_allowed_hosts="shop.example")
    )
    forged = base64.urlsafe_b64encode(json.dumps({"url": "https://evil.example/"}).encode()).decode()
    with pytest.raises(BadToken, match="REDIRECT_ALLOWED_HOSTS"):
        legacy.decode(forged)
    allowed = base64.urlsafe_b64encode(json.dumps({"url": "https://shop.example/"}).encode()).decode()
    assert legacy.decode(allowed).kind == "click"
    opened = base64.urlsafe_b64encode(json.dumps({"metadata": {"r": 1}}).encode()).decode()
    assert (legacy.decode(opened).kind, legacy.decode(opened).metadata) == ("open", {"r": 1})


@pytest.mark.parametrize(
    "expires_in", [10**400, float("inf"), float("nan"), 0, -5], ids=["past-any-float", "inf", "nan", "zero", "negative"]
)
def test_an_expiry_no_link_can_have_is_a_value_error(expires_in: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        LINKS.click_url("https://e.org/", expires_in=expires_in)
