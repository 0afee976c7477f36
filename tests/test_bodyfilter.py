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
        ("GET", 200, [("content-type", "application/xhtml+xml")], RewritePlan(None, "identity")),
        ("GET", 200, [*HTML, ("Content-Encoding", "gzip")], RewritePlan("iso-8859-1", "gzip")),
        ("GET", 200, [*HTML, ("Content-Encoding", "deflate")], RewritePlan("iso-8859-1", "deflate")),
        ("GET", 200, [*HTML, ("Content-Encoding", "br")], RewritePlan("iso-8859-1", "br")),
        ("GET", 200, [*HTML, ("Content-Encoding", "zstd")], None),
        ("GET", 200, [*HTML, ("Content-Encoding", "gzip, br")], None),
        ("HEAD", 200, HTML, None),
        ("GET", 304, HTML, None),
        ("GET", 206, [*HTML, ("Content-Range", "bytes 0-9/100")], None),
        ("GET", 200, [*HTML, ("Cache-Control", "public, no-transform")], None),
        ("GET", 200, [*HTML, ("X-Trackgate", "OFF")], None),
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
        "head",
        "304",
        "range",
        "no-transform",
        "opted-out",
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
