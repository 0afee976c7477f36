"""Streaming edge cases of the rewriter: tags longer than the hold-back bound, byte-order marks split
across chunks, one byte at a time, and documents that end inside a tag."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rewrite import _DOCUMENTS, TRACKER, FakeLinks

import trackgate.rewrite
from trackgate import HtmlRewriter, rewrite_html

BIG = b"x" * (trackgate.rewrite.MAX_HELD + 5000)


def chunked(doc: bytes, size: int, **options: object) -> bytes:
    rewriter = HtmlRewriter(FakeLinks(), charset="utf-8", **options)  # type: ignore[arg-type]
    return b"".join(rewriter.feed(doc[i : i + size]) for i in range(0, len(doc), size)) + rewriter.close()


LONG_TAGS = {
    "quoted-gt-and-link-in-a-long-value": b'<div title="' + BIG + b' > <a href=\'https://in.org/\'>">y</div>',
    "long-link-tag-is-left-alone": b'<a title="' + BIG + b'" href="https://in.org/">y</a>',
    "long-script-start-tag-still-starts-raw-text": b'<script src="' + BIG + b'"><a href="https://in.org/"></script>',
    "long-bogus-comment": b"<!DOCTYPE " + BIG + b'<a href="https://in.org/">>',
    "long-unquoted-value": b"<img alt=" + BIG + b"'\"<a href='https://in.org/'>",
}


@pytest.mark.parametrize("doc", list(LONG_TAGS.values()), ids=list(LONG_TAGS))
@pytest.mark.parametrize("size", [997, 65536, 1 << 20], ids=["small-chunks", "bound-sized", "whole"])
def test_a_tag_longer_than_the_bound_streams_through_unchanged_whatever_the_chunking(doc: bytes, size: int) -> None:
    page = b"<body>" + doc + b'<a href="https://out.org/">z</a></body>'
    out = chunked(page, size)
    assert out == rewrite_html(page, FakeLinks(), charset="utf-8")
    assert b"https://in.org/" in out  # inside the long tag (or the raw text it starts): untouched
    assert b"https://out.org/" not in out  # after it: rewritten as usual
    assert out.count(f"{TRACKER}o/pixel".encode()) == 1


def test_a_long_body_end_tag_sends_the_pixel_to_the_end() -> None:
    page = b"<body>x</body " + BIG + b'><a href="https://out.org/">z</a>'
    out = chunked(page, 4096)
    assert out == rewrite_html(page, FakeLinks(), charset="utf-8")
    assert out.endswith(b"</a>" + b'<img src="' + TRACKER.encode() + b'o/pixel"' + out.rsplit(b"o/pixel\"", 1)[1])


def test_holding_back_stays_bounded_inside_a_long_tag() -> None:
    rewriter = HtmlRewriter(FakeLinks(), charset="utf-8", open_tracking=False)
    fed = b'<div title="'
    sent = rewriter.feed(fed)
    for _ in range(200):
        fed += b"y" * 1024
        sent += rewriter.feed(b"y" * 1024)
        assert len(fed) - len(sent) <= trackgate.rewrite.MAX_HELD + 1024
    assert sent + rewriter.close() == fed


@settings(max_examples=200, deadline=None)
@given(doc=_DOCUMENTS, soup=st.text(alphabet="ab =\"'/>\n<", max_size=24), size=st.integers(1, 40))
def test_the_tag_walker_ends_tags_where_the_whole_document_pass_does(doc: str, soup: str, size: int) -> None:
    """With a tiny bound nearly every tag goes through the walker when chunked; one pass reads tags whole."""
    data = f"<div {soup}>{doc}<a href='https://x.org/'>".encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trackgate.rewrite, "MAX_HELD", 8)
        assert chunked(data, size) == rewrite_html(data, FakeLinks(), charset="utf-8")


@pytest.mark.parametrize(
    ("bom", "charset"),
    [(b"\xff\xfe", "windows-1252"), (b"\xfe\xff", "utf-8"), (b"\xef\xbb\xbf", "windows-1252")],
    ids=["utf-16-le", "utf-16-be", "utf-8"],
)
def test_a_byte_order_mark_split_across_chunks_still_beats_the_declared_charset(bom: bytes, charset: str) -> None:
    text = '<body><a href="https://x.org/\u00e9">\u00e9</a></body>'
    doc = bom + text.encode("utf-16-le" if bom == b"\xff\xfe" else "utf-16-be" if bom == b"\xfe\xff" else "utf-8")
    whole = rewrite_html(doc, FakeLinks(), charset=charset)
    rewriter = HtmlRewriter(FakeLinks(), charset=charset)
    assert b"".join(rewriter.feed(doc[i : i + 1]) for i in range(len(doc))) + rewriter.close() == whole
    if bom != b"\xef\xbb\xbf":
        assert whole == doc  # UTF-16 is not scanned bytewise: it passes through


def test_one_byte_at_a_time() -> None:
    doc = (
        b'<!DOCTYPE html><html><head><title>a <a href="https://t.org/"></title><style>a{}</style></head>'
        b'<body><!-- <a href="https://c.org/"> --><p title="x>y">&amp;</p>'
        b'<A HREF=https://x.org/?a=1&amp;b=2>x</A><script>"</body>"</script></body></html>'
    )
    assert chunked(doc, 1) == rewrite_html(doc, FakeLinks(), charset="utf-8")


def test_a_document_ending_inside_a_tag_keeps_that_tag_s_bytes() -> None:
    doc = '<body><a href="https://x.org/">x</a><div title="oops> <a href=\'https://y.org/\'>'
    out = rewrite_html(doc, FakeLinks())
    assert out.endswith("<div title=\"oops> <a href='https://y.org/'>")
    assert "https://x.org/" not in out and "o/pixel" not in out


def test_a_long_html_end_tag_makes_no_document_whatever_the_chunking() -> None:
    # A whole </html> is passed over; streamed in pieces it must be too, or the pixel would depend on the cuts.
    page = b"<p>x</p></html x=\"" + BIG + b"\">"
    outs = {chunked(page, size, pixel_in_fragments=False) for size in (997, 65536, 1 << 20)}
    assert outs == {page}
