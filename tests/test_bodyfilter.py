"""Which responses are rewritten, and rewriting through gzip, deflate and br without ever emitting a
half-rewritten corrupt stream."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from trackgate.bodyfilter import BodyFilter, RewritePlan, plan_rewrite

HTML = [("Content-Type", "text/html; charset=iso-8859-1")]


@pytest.mark.parametrize(
    ("method", "status", "headers", "expected"),
    [
        ("GET", 200, HTML, RewritePlan("iso-8859-1", "identity")),
        ("GET", 200, [("content-type", "application/xhtml+xml")], RewritePlan(None, "identity", xml=True)),
        ("GET", 200, [*HTML, ("Content-Encoding", "gzip")], RewritePlan("iso-8859-1", "gzip")),
        ("GET", 200, [*HTML, ("Content-Encoding", "deflate")], RewritePlan("iso-8859-1", "deflate")),
        ("GET", 200, [*HTML, ("Content-Encoding", "br")], RewritePlan("iso-8859-1", "br")),
        ("GET", 200, [*HTML, ("Content-Encoding", "zstd")], None),
        ("GET", 200, [*HTML, ("Content-Encoding", "gzip, br")], None),
        ("GET", 200, [*HTML, ("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")], None),
        ("HEAD", 200, HTML, None),
        ("GET", 304, HTML, None),
        ("GET", 206, [*HTML, ("Content-Range", "bytes 0-9/100")], None),
        ("GET", 200, [*HTML, ("Cache-Control", "public, no-transform")], None),
        ("GET", 200, [*HTML, ("X-Trackgate", "OFF")], None),
        ("GET", 200, [*HTML, ("Content-Disposition", 'Attachment; filename="export.html"')], None),
        ("GET", 200, [*HTML, ("Content-Disposition", "inline")], RewritePlan("iso-8859-1", "identity")),
        ("GET", 200, [("Content-Type", "text/plain")], None),
        ("GET", 200, [("Content-Type", "text/event-stream")], None),
        ("GET", 200, [], None),
    ],
    ids=[
        "html",
        "xhtml",
        "gzip",
        "deflate",
        "br",
        "unknown-coding",
        "stacked-codings",
        "stacked-codings-on-two-lines",
        "head",
        "304",
        "range",
        "no-transform",
        "opted-out",
        "download",
        "inline",
        "plain-text",
        "event-stream",
        "no-type",
    ],
)
def test_what_gets_rewritten(
    method: str, status: int, headers: list[tuple[str, str]], expected: RewritePlan | None
) -> None:
    assert plan_rewrite(method, status, headers) == expected


class Upper:
    """A stand-in rewriter that changes every byte, so a body passed through unchanged is visible."""

    def feed(self, data: bytes) -> bytes:
        return data.upper()

    def close(self) -> bytes:
        return b"<!--end-->"


PAGE = b"<html><body>" + b"hello world " * 2000 + b"</body></html>"
ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "identity": lambda data: data,
}
DECODERS = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "br": brotli.decompress,
    "identity": lambda data: data,
}


@pytest.mark.parametrize("encoding", list(ENCODERS))
@pytest.mark.parametrize("chunk", [1 << 20, 997, 7], ids=["whole", "chunks", "tiny-chunks"])
def test_coded_bodies_are_decoded_rewritten_and_encoded_again(encoding: str, chunk: int) -> None:
    body = ENCODERS[encoding](PAGE)
    body_filter = BodyFilter(RewritePlan(None, encoding), Upper())  # type: ignore[arg-type]
    out = b"".join(body_filter.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + body_filter.close()
    assert DECODERS[encoding](out) == PAGE.upper() + b"<!--end-->"


def test_raw_deflate_is_understood_too() -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = packer.compress(PAGE) + packer.flush()
    body_filter = BodyFilter(RewritePlan(None, "deflate"), Upper())
    assert zlib.decompress(body_filter.feed(body) + body_filter.close()) == PAGE.upper() + b"<!--end-->"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_body_corrupt_from_the_start_passes_through_as_it_came(encoding: str) -> None:
    body = b"\x00\x01 definitely not " + encoding.encode() + b" data"
    body_filter = BodyFilter(RewritePlan(None, encoding), Upper())  # type: ignore[arg-type]
    assert body_filter.feed(body) + body_filter.close() == body


def test_corruption_later_in_a_stream_finishes_what_was_sent_then_passes_the_rest_on() -> None:
    good = gzip.compress(PAGE)
    body_filter = BodyFilter(RewritePlan(None, "gzip"), Upper())
    first = body_filter.feed(good[: len(good) // 2])
    rest = b"\xff" * 64
    out = first + body_filter.feed(rest) + body_filter.close()
    assert out.endswith(rest)
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    decoded = decoder.decompress(out)
    assert decoder.eof  # the part we sent is a complete, valid gzip member
    assert PAGE.upper().startswith(decoded)


@pytest.mark.parametrize("chunk", [1 << 20, 5, 1], ids=["whole", "chunks", "bytes"])
def test_every_gzip_member_is_rewritten(chunk: int) -> None:
    body = gzip.compress(b"<p>one</p>") + gzip.compress(b"<p>two</p>")
    body_filter = BodyFilter(RewritePlan(None, "gzip"), Upper())
    out = b"".join(body_filter.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + body_filter.close()
    assert gzip.decompress(out) == b"<P>ONE</P><P>TWO</P><!--end-->"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("chunk", [1 << 20, 3, 1], ids=["whole", "chunks", "bytes"])
@pytest.mark.parametrize("trailing", [b"trailing junk", b"x"], ids=["several-bytes", "one-byte"])
def test_bytes_after_the_compressed_stream_are_kept(encoding: str, chunk: int, trailing: bytes) -> None:
    body = ENCODERS[encoding](b"<p>one</p>") + trailing
    body_filter = BodyFilter(RewritePlan(None, encoding), Upper())  # type: ignore[arg-type]
    out = b"".join(body_filter.feed(body[i : i + chunk]) for i in range(0, len(body), chunk)) + body_filter.close()
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    assert decoder.decompress(out) == b"<P>ONE</P><!--end-->"
    assert decoder.eof and decoder.unused_data == trailing


@pytest.mark.parametrize(
    "body",
    [b"\x1f", b"\x1f\x8b", gzip.compress(PAGE)[:40], gzip.compress(PAGE)[:-8]],
    ids=["one-byte", "magic-only", "cut-short-early", "no-trailer"],
)
def test_a_gzip_body_cut_short_before_anything_was_sent_passes_through(body: bytes) -> None:
    body_filter = BodyFilter(RewritePlan(None, "gzip"), HoldAll())
    assert body_filter.feed(body) + body_filter.close() == body


def test_earlier_chunks_are_not_lost_when_a_later_one_is_corrupt_before_anything_was_sent() -> None:
    good = gzip.compress(PAGE)
    body = good[:100] + b"\xff" * 32
    body_filter = BodyFilter(RewritePlan(None, "gzip"), HoldAll())
    assert body_filter.feed(body[:100]) + body_filter.feed(body[100:]) + body_filter.close() == body


class HoldAll(Upper):
    """A rewriter that sends nothing before close(), like one still waiting for a <meta charset>."""

    def __init__(self) -> None:
        self.seen = b""

    def feed(self, data: bytes) -> bytes:
        self.seen += data
        return b""

    def close(self) -> bytes:
        return self.seen.upper()


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ([], True),
        ([("Cache-Control", "private, max-age=60")], True),
        ([("Cache-Control", "no-store")], True),
        ([("Cache-Control", "public, max-age=300")], False),
        ([("Cache-Control", "s-maxage=60")], False),
        ([("Cache-Control", "no-cache")], False),  # stored, then revalidated: a 304 hands it on
        ([("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], False),
        ([("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")], False),  # heuristic freshness
    ],
)
def test_which_responses_no_shared_cache_may_keep(headers: list[tuple[str, str]], kept: bool) -> None:
    from trackgate.bodyfilter import kept_from_shared_caches

    assert kept_from_shared_caches(headers) is kept
