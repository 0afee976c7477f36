"""The rewriter with the real TrackingLinks: every rewritten href decodes back to the original destination
(entities decoded as a browser decodes them) with the email's metadata, the pixel decodes to an open, and a
second pass changes nothing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from trackgate import ConfigError, Settings, TrackingLinks, rewrite_html
from trackgate.htmlchars import sniff_charset

METADATA = {"recipient": "r-1042", "campaign": 7}


@pytest.fixture
def links() -> TrackingLinks:
    settings = Settings.from_environ({}, secret_key="test-secret", base_url="https://t.example.org")
    return TrackingLinks(settings)


EMAIL = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sale &amp; more</title></head>
<body><table><tr><td>
<a href="https://shop.example/?a=1&amp;currency=USD&lang=fr">shop</a>
<a href='https://shop.example/caf\u00e9?q=cr\u00e8me'>caf\u00e9</a>
<a href=http://plain.example/p>plain</a>
<a href="//cdn.example/f">protocol-relative: https in an email</a>
<a href="mailto:help@shop.example">mail</a>
<a href="https://shop.example/*|EMAIL|*">merge</a>
<!--[if mso]><a href="https://outlook.example/">o</a><![endif]-->
</td></tr></table></body></html>"""


def test_every_rewritten_link_decodes_to_its_destination_with_the_metadata(links: TrackingLinks) -> None:
    out = rewrite_html(EMAIL, links, metadata=METADATA)
    found = [node.attributes.get("href") or "" for node in LexborHTMLParser(out).css("a")]
    decoded = [links.decode(href) for href in found if links.is_tracking_url(href)]
    assert [result.tracked_url for result in decoded] == [
        "https://shop.example/?a=1&currency=USD&lang=fr",
        "https://shop.example/caf\u00e9?q=cr\u00e8me",
        "http://plain.example/p",
        "https://cdn.example/f",
    ]
    assert all(result.metadata == METADATA and result.kind == "click" for result in decoded)
    assert "mailto:help@shop.example" in found and "https://shop.example/*|EMAIL|*" in found
    assert '<a href="https://outlook.example/">' in out  # inside the MSO conditional comment


def test_the_pixel_decodes_to_an_open_with_the_metadata(links: TrackingLinks) -> None:
    out = rewrite_html(EMAIL, links, metadata=METADATA)
    pixel = re.search(r'<img src="([^"]+)"[^>]*>\s*</body>', out)
    assert pixel is not None
    result = links.decode(pixel[1].replace("&amp;", "&"))
    assert (result.kind, result.metadata) == ("open", METADATA)


def test_a_second_pass_with_real_links_changes_nothing(links: TrackingLinks) -> None:
    once = rewrite_html(EMAIL, links, metadata=METADATA, open_tracking=False)
    assert rewrite_html(once, links, metadata=METADATA, open_tracking=False) == once


def test_outbound_scope_on_a_page_keeps_same_host_links(links: TrackingLinks) -> None:
    page = links.for_page("https://shop.example/cart", "https://shop.example")
    doc = '<a href="https://shop.example/checkout">in</a><a href="https://partner.example/">out</a>'
    out = rewrite_html(doc, page, scope="outbound", page_host="shop.example", open_tracking=False)
    assert '<a href="https://shop.example/checkout">' in out
    tracked = re.findall(r'href="(https://shop\.example/_tg/c/[^"]+)"', out)
    assert [links.decode(href).tracked_url for href in tracked] == ["https://partner.example/"]


@pytest.mark.parametrize("pixel", [True, False])
def test_email_links_without_a_base_url_are_a_clear_error_not_an_untracked_email(pixel: bool) -> None:
    unplaced = TrackingLinks(Settings.from_environ({}, secret_key="test-secret"))
    with pytest.raises(ConfigError, match="TRACKGATE_BASE_URL"):
        rewrite_html(EMAIL, unplaced, metadata={"recipient": "r-1"}, open_tracking=pixel)


def test_an_emails_pixel_carries_its_title_when_asked(links: TrackingLinks) -> None:
    out = rewrite_html(EMAIL, links, metadata=METADATA, page_title=True)
    [pixel] = re.findall(r'<img src="([^"]+)"', out)
    opened = links.decode(pixel.replace("&amp;", "&"))
    assert (opened.kind, opened.title, opened.metadata) == ("open", "Sale & more", METADATA)
    untitled = links.decode(re.findall(r'<img src="([^"]+)"', rewrite_html(EMAIL, links))[0])
    assert untitled.title is None


@given(
    text=st.text(alphabet=st.sampled_from("aé日ü €<>&\"'= /?#x"), max_size=30),
    charset=st.sampled_from(["utf-8", "iso-8859-1", "windows-1252", "shift_jis"]),
)
@settings(max_examples=150, deadline=None)
def test_a_str_is_rewritten_as_its_bytes_in_the_charset_it_is_sent_in(text: str, charset: str) -> None:
    # charset= named the email's charset for the query's encoding, but a str was read as UTF-8 bytes with
    # it: non-ASCII destinations were signed as mojibake.
    links = TrackingLinks(Settings.from_environ({}, secret_key="test-secret", base_url="https://t.example.org"))
    document = f'<p>{text}</p><a href="https://shop.example/{text}?q={text}">{text}</a>'
    codec = sniff_charset(charset, b"")  # (as browsers read the label: iso-8859-1 is windows-1252)
    assert codec is not None
    as_bytes = document.encode(codec, "xmlcharrefreplace")
    expected = rewrite_html(as_bytes, links, charset=charset).decode(codec)
    assert rewrite_html(document, links, charset=charset) == expected


def test_a_str_sent_in_latin_1_signs_the_destination_a_browser_would_follow() -> None:
    links = TrackingLinks(Settings.from_environ({}, secret_key="test-secret", base_url="https://t.example.org"))
    out = rewrite_html('<a href="https://shop.example/café?q=été">x</a>', links, charset="iso-8859-1")
    [href] = re.findall(r'href="([^"]+)"', out)
    assert links.decode(href).tracked_url == "https://shop.example/café?q=%E9t%E9"


@pytest.mark.parametrize("charset", ["utf_8", "utf-16"])
def test_a_str_is_rewritten_whatever_charset_it_names(charset: str) -> None:
    # (a str is text: a charset no byte scan reads still has its links tracked, their queries in UTF-8)
    links = TrackingLinks(Settings.from_environ({}, secret_key="test-secret", base_url="https://t.example.org"))
    out = rewrite_html('<a href="https://shop.example/?q=é">x</a>', links, charset=charset, open_tracking=False)
    [href] = re.findall(r'href="([^"]+)"', out)
    assert links.decode(href).tracked_url == "https://shop.example/?q=é"
