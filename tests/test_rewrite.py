"""The HTML rewriter: which links change and how, what never changes, the pixel, charsets, and that the
output is the same however the input is chunked (hypothesis), checked against a real HTML5 parser."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackgate import BadURL, HtmlRewriter, rewrite_html

TRACKER = "https://t.example/_tg/"


class FakeLinks:
    """Deterministic links: the destination and metadata readable back from the tracking URL."""

    def __init__(self) -> None:
        self.clicked: list[tuple[str, Mapping[str, Any] | None]] = []

    def click_url(self, url: str, metadata: Mapping[str, Any] | None = None) -> str:
        if not url.lower().startswith(("http://", "https://", "//")):
            raise BadURL(url, "not http(s)")
        self.clicked.append((url, metadata))
        return f"{TRACKER}c/{hashlib.sha256(url.encode()).hexdigest()[:12]}?n=1&m=2"

    def open_url(self, metadata: Mapping[str, Any] | None = None) -> str:
        return f"{TRACKER}o/pixel"

    def is_tracking_url(self, url: str) -> bool:
        return url.startswith(TRACKER)


def track(url: str) -> str:
    return f"{TRACKER}c/{hashlib.sha256(url.encode()).hexdigest()[:12]}?n=1&amp;m=2"


def rewrite(doc: str, **options: Any) -> str:
    options.setdefault("open_tracking", False)
    return rewrite_html(doc, FakeLinks(), **options)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('<a href="https://x.org/a">', f'<a href="{track("https://x.org/a")}">'),
        ("<A HREF='http://x.org/'>", f"<A HREF='{track('http://x.org/')}'>"),
        ("<a href=https://x.org/p>", f'<a href="{track("https://x.org/p")}">'),
        ('<area shape="rect" href="https://x.org/">', f'<area shape="rect" href="{track("https://x.org/")}">'),
        ('<a href="https://x.org/?a=1&amp;b=2">', f'<a href="{track("https://x.org/?a=1&b=2")}">'),
        ('<a href="https://x.org/?a=1&currency=USD">', f'<a href="{track("https://x.org/?a=1&currency=USD")}">'),
        ('<a href="https://x.org/?q=&eacute;t&eacute;">', f'<a href="{track("https://x.org/?q=été")}">'),
        ('<a href="  https://x.org/\n ">', f'<a href="{track("https://x.org/")}">'),
        # Protocol-relative: the document's scheme, https for an email (rewrite_html's default).
        ('<a href="//cdn.x.org/f">', f'<a href="{track("https://cdn.x.org/f")}">'),
        ('<a\nhref\n=\n"https://x.org/"\n>', f'<a\nhref\n=\n"{track("https://x.org/")}"\n>'),
        (
            '<a title="x" href="https://x.org/" href="https://y.org/">',
            f'<a title="x" href="{track("https://x.org/")}" href="https://y.org/">',
        ),
        (
            '<a title="href=https://no.org/" href="https://x.org/">',
            f'<a title="href=https://no.org/" href="{track("https://x.org/")}">',
        ),
    ],
    ids=[
        "double-quoted",
        "single-quoted-upper-case",
        "unquoted",
        "area",
        "entity-amp",
        "legacy-entity-literal",
        "named-entities",
        "spaces-and-newline",
        "protocol-relative",
        "newlines-in-tag",
        "first-href-wins",
        "href-inside-another-value",
    ],
)
def test_links_are_rewritten_and_nothing_else_changes(before: str, after: str) -> None:
    assert rewrite(f"<p>x</p>{before}text</a>") == f"<p>x</p>{after}text</a>"


@pytest.mark.parametrize(
    "doc",
    [
        '<a href="mailto:a@example.org">',
        '<a href="tel:+15550100">',
        '<a href="sms:+15550100">',
        '<a href="#top">',
        '<a href="/relative">',
        '<a href="page.html">',
        '<a href="javascript:alert(1)">',
        '<a href="data:text/html,hi">',
        '<a href="&currency=USD">',
        f'<a href="{TRACKER}c/abc">',
        '<a data-trackgate="off" href="https://x.org/">',
        '<a href="https://x.org/{{ user.id }}">',
        '<a href="https://x.org/?u={%user%}">',
        '<a href="https://x.org/*|EMAIL|*">',
        '<a href="https://x.org/%%id%%">',
        '<a href="https://x.org/[[id]]">',
        '<!-- <a href="https://x.org/"> -->',
        '<!--[if mso]><a href="https://x.org/">x</a><![endif]-->',
        "<script>document.write(\"<a href='https://x.org/'>\")</script>",
        '<style>a[href="https://x.org/"]{}</style>',
        '<textarea><a href="https://x.org/"></textarea>',
        '<title><a href="https://x.org/"></title>',
        '<![CDATA[<a href="https://x.org/">]]>',
        "<div title=\"<a href='https://x.org/'>\">",
        "<a href>",
        "<a>",
        '<link href="https://x.org/style.css">',
        '<img src="https://x.org/i.png">',
    ],
)
def test_what_is_left_alone(doc: str) -> None:
    assert rewrite(doc) == doc


def test_rewriting_twice_changes_nothing_more() -> None:
    once = rewrite('<a href="https://x.org/">a</a><a href="https://y.org/">b</a>')
    assert rewrite(once) == once


def test_outbound_scope_keeps_links_to_the_page_s_own_host() -> None:
    doc = '<a href="https://shop.example/a">in</a><a href="https://shop.example:8443/b">port</a><a href="https://x.org/">out</a>'
    out = rewrite(doc, scope="outbound", page_host="shop.example")
    assert '<a href="https://shop.example/a">' in out
    assert track("https://shop.example:8443/b") in out
    assert track("https://x.org/") in out


@pytest.mark.parametrize(("scheme", "host"), [("https", "shop.example:443"), ("http", "shop.example:80")])
def test_a_host_with_its_schemes_default_port_is_the_page_s_own(scheme: str, host: str) -> None:
    doc = f'<a href="{scheme}://shop.example/a">in</a><a href="https://x.org/">out</a>'
    out = rewrite(doc, scope="outbound", page_host=host, scheme=scheme)
    assert f'<a href="{scheme}://shop.example/a">' in out
    assert track("https://x.org/") in out


def test_metadata_reaches_every_link() -> None:
    links = FakeLinks()
    rewrite_html('<a href="https://x.org/">', links, metadata={"recipient": "a@example.org"}, open_tracking=False)
    assert links.clicked == [("https://x.org/", {"recipient": "a@example.org"})]


PIXEL = f'<img src="{TRACKER}o/pixel"'


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ("<html><body><p>x</p></body></html>", "<p>x</p><img"),
        ("<BODY>x</BODY >", "x<img"),
        ("<body>a</body><!-- </body> -->", "a<img"),
        ("<body>a</body>b</body>", "b<img"),
        ("<p>fragment</p>", "</p><img"),
    ],
    ids=["before-body-end", "case-insensitive", "not-in-comments", "last-body-end", "fragment-at-end"],
)
def test_the_pixel_goes_before_the_last_body_end_or_at_the_end(doc: str, where: str) -> None:
    out = rewrite(doc, open_tracking=True)
    assert out.count(PIXEL) == 1
    pixel_tag = out[out.index(PIXEL) : out.index("/>", out.index(PIXEL)) + 2]
    assert out.replace(pixel_tag, "<img").count(where) == 1
    assert re.sub(r'<img src="https://t\.example[^>]*/>', "", out) == doc


def test_the_pixel_can_go_right_after_body_start() -> None:
    out = rewrite('<body class="x"><p>long email</p></body>', open_tracking=True, pixel_position="start")
    assert out.startswith(f'<body class="x">{PIXEL}')


@pytest.mark.parametrize(
    ("doc", "pixel"),
    [
        ('<li><a href="https://x.org/">x</a></li>', False),
        ("<p>a</p><!-- <body> --><script>'<html>'</script>", False),
        ("<!DOCTYPE html><title>t</title><p>no body tag", True),
        ("<html lang=en><p>x</p></html>", True),
        ("<body><p>x</p>", True),
        ("<p>x</p></body>", True),
    ],
    ids=["fragment", "only-in-comment-and-script", "doctype", "html", "body-start", "body-end"],
)
def test_without_pixels_in_fragments_only_whole_documents_get_one(doc: str, pixel: bool) -> None:
    out = rewrite(doc, open_tracking=True, pixel_in_fragments=False)
    assert (PIXEL in out) is pixel
    without_pixel = re.sub(re.escape(PIXEL) + "[^>]*>", "", out)
    assert without_pixel == rewrite(doc, open_tracking=False)  # and the links are rewritten either way
    assert "/_tg/c/" in without_pixel or "href" not in doc


def test_an_unfinished_document_gets_no_pixel_inside_its_broken_tag() -> None:
    doc = '<p>x</p><a href="https://x.org/'
    assert rewrite(doc, open_tracking=True) == doc


@pytest.mark.parametrize(
    ("charset", "declared_in"),
    [
        ("windows-1252", "header"),
        ("iso-8859-15", "meta"),
        ("shift_jis", "meta"),
        ("utf-8", "bom"),
        ("utf-8", "http-equiv"),
    ],
)
def test_ascii_compatible_charsets_keep_their_bytes_and_decode_hrefs(charset: str, declared_in: str) -> None:
    text = "café" if charset != "shift_jis" else "日本語"
    head = {
        "meta": f'<meta charset="{charset}">',
        "http-equiv": f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">',
    }.get(declared_in, "")
    doc = f'{head}<p>{text}</p><a href="https://x.org/{text}">{text}</a>'.encode(charset)
    if declared_in == "bom":
        doc = b"\xef\xbb\xbf" + doc
    links = FakeLinks()
    out = rewrite_html(doc, links, charset=charset if declared_in == "header" else None, open_tracking=False)
    assert links.clicked == [(f"https://x.org/{text}", None)]
    assert out == doc.replace(f"https://x.org/{text}".encode(charset), track(f"https://x.org/{text}").encode())


def test_a_commented_out_meta_charset_declares_nothing() -> None:
    text = "café"
    doc = f'<!-- <meta charset="windows-1252"> --><a href="https://x.org/{text}">x</a>'.encode()
    links = FakeLinks()
    rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [(f"https://x.org/{text}", None)]  # read as UTF-8, not as windows-1252
    after = b'<!-- old --><meta charset="windows-1252"><a href="https://x.org/caf\xe9">x</a>'
    links = FakeLinks()
    rewrite_html(after, links, open_tracking=False)
    assert links.clicked == [(f"https://x.org/{text}", None)]


@pytest.mark.parametrize("start", [b"", b"\xef\xbb\xbf", b'<meta charset="utf-8">'], ids=["undeclared", "bom", "meta"])
def test_an_href_that_is_not_utf_8_in_a_utf_8_page_is_read_as_windows_1252(start: bytes) -> None:
    doc = start + b'<a href="https://x.org/caf\xe9">x</a>'
    links = FakeLinks()
    out = rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [("https://x.org/café", None)]
    assert out == start + f'<a href="{track("https://x.org/café")}">x</a>'.encode()


@pytest.mark.parametrize("charset", ["utf-16", "iso-2022-jp", "no-such-charset", "cp037"])
def test_unsafe_or_unknown_charsets_pass_through_unchanged(charset: str) -> None:
    encoding = charset if charset != "no-such-charset" else "ascii"
    doc = '<body><a href="https://x.org/">x</a></body>'.encode(encoding)
    assert rewrite_html(doc, FakeLinks(), charset=charset) == doc


@pytest.mark.parametrize("label", ["base64", "rot13", "punycode", "undefined", "cp037", "zlib"])
@pytest.mark.parametrize("page_title", [False, True])
def test_a_meta_naming_a_codec_that_is_no_web_charset_passes_through(label: str, page_title: bool) -> None:
    # Python knows these names, but they are not text encodings that keep ASCII (or not text at all).
    doc = f'<meta charset="{label}"><title>t</title><body><a href="https://x.org/">x</a></body>'.encode()
    assert rewrite_html(doc, FakeLinks(), page_title=page_title) == doc


@pytest.mark.parametrize(("label", "byte", "text"), [
    ("iso-8859-1", b"\x80", "€"),  # the web reads Latin-1 labels as windows-1252
    ("us-ascii", b"\x80", "€"),
    ("iso-8859-9", b"\x80", "€"),  # windows-1254
    ("shift_jis", b"\x87\x40", "①"),  # the web's Shift_JIS has the NEC row Python's codec lacks
    ("gb2312", b"\x81\x40", "\u4e02"),  # GBK, beyond GB2312
    # Labels of the Encoding Standard that Python's codecs do not know (they passed through untracked):
    ("windows-874", b"\xa1", "\u0e01"),  # Thai
    ("iso-8859-8-i", b"\xe0", "\u05d0"),  # Hebrew, as Outlook labels its mail
    ("x-sjis", b"\x87\x40", "\u2460"),
    ("ks_c_5601-1989", b"\xb0\xa1", "\uac00"),  # Korean, read as windows-949
    ("unicode-1-1-utf-8", "é".encode(), "é"),
    ("x-mac-roman", b"\x8e", "é"),
    ("koi8-ru", b"\xa4", "\u0454"),  # read as KOI8-U
    # ... and Python's own labels that the web's list lacks, as Python apps write them in Content-Type:
    ("latin-1", b"\x80", "€"),
    ("utf_8", "é".encode(), "é"),
    ("cp932", b"\x87\x40", "\u2460"),
])
def test_charset_labels_are_read_as_browsers_read_them(label: str, byte: bytes, text: str) -> None:
    doc = f'<meta charset="{label}"><a href="https://x.org/'.encode() + byte + b'">x</a>'
    links = FakeLinks()
    rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [(f"https://x.org/{text}", None)]


@pytest.mark.parametrize(
    ("charset", "href", "destination"),
    [
        ("shift_jis", "https://x.org/s?q=日本", "https://x.org/s?q=%93%FA%96%7B"),
        ("windows-1252", "https://x.org/café?q=café#café", "https://x.org/café?q=caf%E9#café"),
        ("windows-1252", "https://x.org/?q=日", "https://x.org/?q=%26%2326085%3B"),  # not in windows-1252
        ("windows-1252", "https://x.org/?q=\x81é", "https://x.org/?q=%81%E9"),  # one of its five undefined bytes
        ("utf-8", "https://x.org/?q=café", "https://x.org/?q=café"),  # the redirect encodes it as UTF-8
    ],
)
def test_a_query_is_encoded_in_the_pages_charset_as_browsers_encode_it(
    charset: str, href: str, destination: str
) -> None:
    # The URL standard encodes a query in the document's encoding: the tracked link must lead where the
    # link itself led.
    doc = f'<meta charset="{charset}"><a href="{href}">x</a>'.encode(charset, "xmlcharrefreplace")
    links = FakeLinks()
    rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [(destination, None)]


def test_windows_1252s_undefined_bytes_are_read_as_the_web_reads_them() -> None:
    links = FakeLinks()  # 0x81 is U+0081 in the Encoding Standard's windows-1252 (Python's cp1252 fails)
    rewrite_html(b'<meta charset=iso-8859-1><a href="https://x.org/a\x81b\x80">x</a>', links, open_tracking=False)
    assert links.clicked == [("https://x.org/a\x81b\u20ac", None)]


@pytest.mark.parametrize("value", ['"utf-8&quot;"', '"utf-8 charset"', '"windows-1252; utf-8"'])
def test_a_charset_value_with_trailing_junk_still_names_its_charset(value: str) -> None:
    links = FakeLinks()
    rewrite_html(f'<meta charset={value}><a href="https://x.org/">x</a>'.encode(), links, open_tracking=False)
    assert links.clicked == [("https://x.org/", None)]


def test_only_a_metas_charset_or_http_equiv_content_declares_the_charset() -> None:
    links = FakeLinks()
    doc = '<meta name="description" content="How to set charset=koi8-r"><a href="https://x.org/é">x</a>'.encode()
    rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [("https://x.org/é", None)]  # still UTF-8
    links = FakeLinks()
    doc = b'<!--><meta charset="windows-1251"><!-- --><a href="https://x.org/\xe9">x</a>'  # "<!-->" is whole
    rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [("https://x.org/й", None)]


def test_str_in_str_out_and_bytes_in_bytes_out() -> None:
    assert isinstance(rewrite_html("<a href='https://x.org/'>", FakeLinks()), str)
    assert isinstance(rewrite_html(b"<a href='https://x.org/'>", FakeLinks()), bytes)


def test_an_unterminated_quote_does_not_buffer_forever() -> None:
    rewriter = HtmlRewriter(FakeLinks(), charset="utf-8", open_tracking=False)
    start = b'<div title="never closed '
    out = rewriter.feed(start)
    for _ in range(100):
        out += rewriter.feed(b"x" * 1024)
    assert len(out) >= 100 * 1024 - 64 * 1024  # past the bound it flushes as it came
    assert out + rewriter.close() == start + b"x" * 100 * 1024


# --- property tests ------------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    ["a", "A", "area", "div", "p", "body", "BODY", "html", "script", "style", "title", "textarea", "img", "span"]
)
_URLS = st.sampled_from(
    [
        "https://x.org/",
        "http://y.org/p?a=1&amp;b=2",
        "//cdn.z.org/f",
        "mailto:a@b.c",
        "#frag",
        "/rel",
        "https://x.org/?c=1&currency=USD",
        "javascript:void(0)",
        "https://x.org/{{id}}",
        "HTTPS://UP.ORG/",
    ]
)
_TEXT = st.text(alphabet="ab <>&;=\"'/!-\n", max_size=12)


@st.composite
def _attribute(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(["href", "HREF", "title", "class", "data-trackgate", "x"]))
    others = ["off", "x y", "a>b", "<a href=x>", "", "x><a href='https://in.org/'>"]
    value = draw(_URLS) if name.lower() == "href" else draw(st.sampled_from(others))
    quote = draw(st.sampled_from(['"', "'", ""]))
    if quote == "" and any(c in value for c in " \"'=<>`"):
        quote = '"'
    return f" {name}={quote}{value}{quote}"


@st.composite
def _piece(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(_TEXT)
    if kind == 1:
        return f"<!--{draw(_TEXT).replace('--', '')}-->"
    if kind == 2:
        return f"</{draw(_NAMES)}>"
    if kind == 3:
        return "&amp;&lt;&currency;&#x41;"
    if kind == 4:  # a bogus comment in HTML (it ends at the first ">"), a CDATA section in SVG and MathML
        return f"<![CDATA[{draw(_TEXT)}]]>"
    if kind == 5:
        return draw(st.sampled_from(["<!DOCTYPE html>", "<!doctype html>", "<!DOCTYPE"]))
    return f"<{draw(_NAMES)}{''.join(draw(st.lists(_attribute(), max_size=3)))}>"


_DOCUMENTS = st.lists(_piece(), max_size=25).map("".join)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    doc=_DOCUMENTS,
    cuts=st.lists(st.integers(0, 1500), max_size=16),
    pixel=st.booleans(),
    in_fragments=st.booleans(),
)
def test_any_chunking_gives_the_same_bytes(doc: str, cuts: list[int], pixel: bool, in_fragments: bool) -> None:
    data = doc.encode()
    options: dict[str, Any] = {"charset": "utf-8", "open_tracking": pixel, "pixel_in_fragments": in_fragments}
    whole = rewrite_html(data, FakeLinks(), **options)
    rewriter = HtmlRewriter(FakeLinks(), **options)
    edges = sorted({min(c, len(data)) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *edges], [*edges, len(data)], strict=True)]
    assert b"".join(rewriter.feed(p) for p in parts) + rewriter.close() == whole


_HREF_VALUE = re.compile(r"""(href[\t\n\f\r ]*=[\t\n\f\r ]*)("[^"]*"|'[^']*'|[^\t\n\f\r >]*)""", re.IGNORECASE)


@settings(max_examples=150, deadline=None)
@given(doc=_DOCUMENTS)
def test_outside_rewritten_values_the_bytes_are_the_input_s(doc: str) -> None:
    def masked(html: str) -> str:
        return _HREF_VALUE.sub(r"\1HREF", html)

    assert masked(rewrite(doc)) == masked(doc)


@settings(max_examples=100, deadline=None)
@given(doc=_DOCUMENTS)
def test_a_real_html5_parser_sees_exactly_the_tracked_links(doc: str) -> None:
    assert_a_real_parser_sees_the_tracked_links(doc)


@pytest.mark.parametrize(
    "doc",
    [
        '<p><![CDATA[ a > b ]]></p><a href="https://x.org/">x</a>',
        '<![CDATA[never closed><a href="https://x.org/">',
        '<svg><![CDATA[ a > <a href="https://in.org/"> ]]></svg><a href="https://x.org/">x</a>',
        '<math><![CDATA[ a > <a href="https://in.org/"> ]]></math><a href="https://x.org/">x</a>',
        '<svg><svg></svg><![CDATA[ a > <a href="https://in.org/"> ]]></svg>',
        '<svg/><![CDATA[ x > <a href="https://x.org/">]]>',
        '<svg width=10/><![CDATA[ x > <a href="https://in.org/">]]></svg>',
        '<svg></svg><![CDATA[ x > <a href="https://x.org/">]]>',
        '<svg><a href="https://x.org/">x</a></svg>',
    ],
    ids=[
        "cdata-in-html-ends-at-gt",
        "unclosed-cdata-in-html",
        "cdata-in-svg",
        "cdata-in-math",
        "nested-svg",
        "self-closing-svg",
        "slash-of-unquoted-value",
        "after-svg-end",
        "svg-link",
    ],
)
def test_cdata_is_a_section_only_in_svg_and_mathml(doc: str) -> None:  # and in XHTML, below
    assert_a_real_parser_sees_the_tracked_links(doc)
    if "<svg" not in doc and "<math" not in doc:  # the rest of the page is read, and gets its pixel
        assert rewrite(doc + "</body>", open_tracking=True).endswith('o/pixel" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" /></body>')


def assert_a_real_parser_sees_the_tracked_links(doc: str) -> None:
    """Differential: lexbor (selectolax) finds, in the output, the tracking URL of every href it finds
    in the input that should be tracked, and the unchanged href of every other one."""
    from selectolax.lexbor import LexborHTMLParser

    def hrefs(html: str) -> list[str | None]:
        return [node.attributes.get("href") for node in LexborHTMLParser(html).css("a, area")]

    expected = []
    for node in LexborHTMLParser(doc).css("a, area"):
        href = node.attributes.get("href")
        url = None if href is None else href.strip("".join(map(chr, range(0x21))))
        trackable = (
            url is not None
            and url.lower().startswith(("http://", "https://", "//"))
            and "{{" not in url
            and node.attributes.get("data-trackgate") != "off"
        )
        if url and url.startswith("//"):
            url = "https:" + url  # protocol-relative: https, a document outside the middleware's
        expected.append(track(url).replace("&amp;", "&") if trackable and url else href)
    assert hrefs(rewrite(doc)) == expected


def test_in_xhtml_cdata_is_a_section_everywhere() -> None:
    # application/xhtml+xml goes through the browser's XML parser: what a CDATA section holds is text.
    doc = '<p><![CDATA[ a > <a href="https://in.org/">text</a> ]]></p><a href="https://x.org/">x</a>'
    links = FakeLinks()
    out = rewrite_html(doc, links, xml=True, open_tracking=False)
    assert links.clicked == [("https://x.org/", None)]
    assert out.startswith('<p><![CDATA[ a > <a href="https://in.org/">text</a> ]]></p>')


@pytest.mark.parametrize(
    ("doc", "tracked"),
    [
        # In SVG and MathML, script, style and title are elements like any other: a self-closed one is whole,
        # and what follows is markup, not raw text waiting for an end tag.
        ('<body><svg><script href="icons.js"/></svg><a href="https://x.org/">x</a></body>', ["https://x.org/"]),
        ('<body><math><style/></math><a href="https://x.org/">x</a></body>', ["https://x.org/"]),
        # ... and their text is what a CDATA section holds.
        ("<svg><script><![CDATA[ s = \"</script><a href='https://in.org/'>\"; ]]></script></svg>", []),
        # Scripts in and around SVG, however the SVG ends, are never rewritten.
        ("<svg><foreignObject><script>s='<a href=\"https://in.org/\">'</script></foreignObject></svg>", []),
        ("<svg><svg><foreignObject><script>s='<a href=\"https://in.org/\">'</script></foreignObject></svg></svg>", []),
        ("<svg><desc><script>s='<a href=\"https://in.org/\">'</script></desc></svg>", []),
        ("<div><svg><path d='M0 0'></div><script>s='<a href=\"https://in.org/\">'</script>", []),
        # Raw text stays text however the count of open <svg> errs (a textarea's is form content).
        (
            "<body><form><svg><p>hi</p><textarea name=t><a href='https://in.org/'>x</a></textarea></form>"
            "<a href='https://x.org/'>x</a></body>",
            ["https://x.org/"],
        ),
        (
            "<body><div><svg><path d='M0 0'></div><script>var open = '<!--';</script>"
            "<a href='https://x.org/'>x</a></body>",
            ["https://x.org/"],
        ),
        ("<math><foreignObject><script><![CDATA[ s=\"</script><a href='https://in.org/'>\"; ]]></script></math>", []),
        # An unclosed <svg> that a tag of HTML's ends (a <p>, a <font color>...): a <script> after it is an HTML
        # script, whose "<!--<script>" escapes keep its "</script>" from ending it.
        (
            "<svg><p></p><script><!--\ndocument.write(\"<script src=x.js></script><a href='https://in.org/'>\");\n"
            "//--></script><a href='https://x.org/'>x</a>",
            ["https://x.org/"],
        ),
        (
            "<svg><font color=red>r</font><script><!-- s='<script></script><a href=\"https://in.org/\">' --></script>",
            [],
        ),
        ("<math><mi>x</mi></p><script><!-- s='<script></script><a href=\"https://in.org/\">' --></script>", []),
    ],
    ids=[
        "svg-script-self-closed", "math-style-self-closed", "svg-script-cdata", "foreign-object-script",
        "nested-svg-foreign-object", "svg-desc", "svg-closed-by-the-tree-builder", "textarea-after-svg-breakout",
        "comment-mark-in-a-script-after-svg", "math-foreign-object-script-cdata", "svg-ended-by-p",
        "svg-ended-by-font-color", "math-ended-by-end-p",
    ],
)
def test_foreign_content_scripts_and_styles(doc: str, tracked: list[str]) -> None:
    links = FakeLinks()
    out = rewrite_html(doc, links)
    assert [url for url, _ in links.clicked] == tracked
    if "<body>" in doc:
        assert PIXEL in out and out.endswith("</body>")
    assert_a_real_parser_sees_the_tracked_links(doc)
    data = doc.encode()
    rewriter = HtmlRewriter(FakeLinks(), charset="utf-8")
    assert b"".join(rewriter.feed(data[i : i + 1]) for i in range(len(data))) + rewriter.close() == out.encode()


@pytest.mark.parametrize(
    "doc",
    [
        # The old ad snippet: inside <!-- -->, a script's "<script>...</script>" does not end it.
        "<script><!--\ndocument.write('<script src=\"a.js\"></script>');\n"
        "document.write('<a href=\"https://in.org/\">ad</a>');\n//--></script><a href=\"https://x.org/\">x</a>",
        "<script><!--</script><a href='https://x.org/'>",  # escaped once: its </script> ends it
        "<script><!--<script></script><a href='https://in.org/'>--></script><a href='https://x.org/'>",
        "<script><!--><a href='https://in.org/'></script><a href='https://x.org/'>",  # "<!-->" ends at once
        "<SCRIPT><!--<Script/></sCrIpT ><a href='https://in.org/'>--></script\t><a href='https://x.org/'>",
        "<script>a = 1 --> 0; <!-- b</script><a href='https://x.org/'>",
    ],
    ids=["document-write", "escaped-end", "double-escaped", "empty-escape", "case-and-spacing", "stray-marks"],
)
def test_script_text_follows_the_script_data_states(doc: str) -> None:
    links = FakeLinks()
    out = rewrite_html(doc, links, open_tracking=False)
    assert [url for url, _ in links.clicked] == ["https://x.org/"]
    assert_a_real_parser_sees_the_tracked_links(doc)
    data = doc.encode()
    rewriter = HtmlRewriter(FakeLinks(), charset="utf-8", open_tracking=False)
    assert b"".join(rewriter.feed(data[i : i + 1]) for i in range(len(data))) + rewriter.close() == out.encode()


def test_numeric_references_keep_what_the_standard_keeps_and_never_raise() -> None:
    links = FakeLinks()
    huge = "&#" + "9" * 5000 + ";"  # int() refuses over 4300 digits: must not reach it
    doc = f'<title>a{huge}b</title><a href="https://x.org/a&#xFFFF;b&#1;c">x</a><a href="https://x.org/{huge}">y</a>'
    rewrite_html(doc, TitledLinks(), page_title=True)
    rewrite_html(doc, links, open_tracking=False)
    assert links.clicked == [("https://x.org/a\uffffb\x01c", None), ("https://x.org/\ufffd", None)]


def test_a_nul_in_an_href_is_read_as_the_tokenizer_reads_it() -> None:
    # U+FFFD, which no URL parser strips: before the scheme it makes a relative link; after it, part of the path.
    links = FakeLinks()
    assert rewrite_html(b'<a href="\x00https://x.org/">x</a>', links, open_tracking=False) == (
        b'<a href="\x00https://x.org/">x</a>'
    )
    rewrite_html(b'<a href="https://x.org/a\x00b">x</a>', links, open_tracking=False)
    assert links.clicked == [("https://x.org/a\ufffdb", None)]


class TitledLinks(FakeLinks):
    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str | None] = []

    def open_url(self, metadata: Mapping[str, Any] | None = None, *, title: str | None = None) -> str:
        self.titles.append(title)
        return super().open_url(metadata)


@pytest.mark.parametrize(
    ("doc", "title"),
    [
        ("<html><head><title>Shop &amp; Co</title></head><body>x</body></html>", "Shop & Co"),
        ("<title>\n  Linen\tshirt \n</title><body><svg><title>icon</title></svg></body>", "Linen shirt"),
        ("<body><svg><title>icon</title></svg><p>no title of its own</p></body>", None),
        ("<!-- <title>old</title> --><title></title><body></body>", None),
        ("<title>" + "é" * 400 + "</title><body></body>", "é" * 256),
        ("<title></title><body><title>Other</title></body>", None),  # document.title reads the first one
        ("<title>Cats&#38;nothing &#38;amp; more</title><body></body>", "Cats&nothing &amp; more"),  # once
    ],
    ids=["entities", "whitespace-and-svg", "svg-only", "commented-and-empty", "long", "first-is-empty", "decoded-once"],
)
def test_the_page_view_pixel_carries_the_document_title(doc: str, title: str | None) -> None:
    data = doc.encode()
    for size in (len(data), 1, 7):  # whole, one byte at a time, and in odd pieces: the same title
        links = TitledLinks()
        rewriter = HtmlRewriter(links, charset="utf-8", page_title=True)
        out = b"".join(rewriter.feed(data[i : i + size]) for i in range(0, len(data), size)) + rewriter.close()
        assert links.titles == [title] and PIXEL.encode() in out


class NoPixelLinks(FakeLinks):
    def open_url(self, metadata: Mapping[str, Any] | None = None) -> str:
        raise BadURL("https://x.org/" + "p" * 5000, "longer than 4096 characters")


def test_a_pixel_that_cannot_be_made_leaves_the_document_whole() -> None:
    doc = b'<!DOCTYPE html><body><a href="https://x.org/">x</a></body></html>'
    for size in (len(doc), 1):
        rewriter = HtmlRewriter(NoPixelLinks(), charset="utf-8")
        out = b"".join(rewriter.feed(doc[i : i + size]) for i in range(0, len(doc), size)) + rewriter.close()
        assert out == doc.replace(b"https://x.org/", track("https://x.org/").encode())
