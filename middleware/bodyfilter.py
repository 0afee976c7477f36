"""Which responses get rewritten, and the per-response filter that does it through any content coding.

    plan = plan_rewrite("GET", 200, headers)        # None: pass the body through untouched
    body_filter = BodyFilter(plan, rewriter)         # feed(chunk) -> bytes ... close() -> bytes

gzip and deflate bodies are decoded, rewritten and encoded again (br too when the ``brotli`` extra is
installed). A body that does not decode is never half-rewritten: if the first chunk is already corrupt the
whole body passes through as it came; if corruption shows up later, the part already sent is finished as
a valid stream and the rest is passed on as it came, so the client sees the same damage the app sent.
Several gzip members in a row are all decoded; bytes after the end of the compressed stream that are not
another member are kept too: the stream is finished and they follow as they came.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from werkzeug.datastructures import ResponseCacheControl
from werkzeug.http import parse_cache_control_header, parse_options_header

Encoding = Literal["identity", "gzip", "deflate", "br"]
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class Rewriter(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RewritePlan:
    charset: str | None  # from Content-Type, if it names one
    encoding: Encoding
    xml: bool = False  # application/xhtml+xml: browsers read it with their XML parser


def _brotli() -> Any:
    try:
        import brotli
    except ImportError:
        return None
    return brotli


def plan_rewrite(method: str, status: int, headers: Sequence[tuple[str, str]]) -> RewritePlan | None:
    """A plan when this response is an HTML body we may rewrite, else None."""
    if method == "HEAD" or status != 200:
        return None
    content_type = None
    coding = "identity"
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-type":
            content_type = value
        elif lowered == "content-encoding":
            # Repeated lines form one list (RFC 9110 5.3): two lines of gzip are two layers, like "gzip, gzip".
            coding = value.strip().lower() if coding == "identity" else f"{coding}, {value.strip().lower()}"
        elif (
            (lowered == "cache-control" and "no-transform" in value.lower())
            or lowered == "content-range"
            or (lowered == "x-trackgate" and value.strip().lower() == "off")
            # A download (an HTML export, a saved report) is the user's file, not a page to track.
            or (lowered == "content-disposition" and parse_options_header(value)[0].lower() == "attachment")
        ):
            return None
    if content_type is None:
        return None
    mime, options = parse_options_header(content_type)
    if mime.lower() not in _HTML_TYPES:
        return None
    encoding: Encoding
    if coding in ("", "identity"):
        encoding = "identity"
    elif coding in ("gzip", "x-gzip"):
        encoding = "gzip"
    elif coding == "deflate":
        encoding = "deflate"
    elif coding == "br" and _brotli() is not None:
        encoding = "br"
    else:
        return None  # a coding we cannot undo (or several stacked): leave the body alone
    return RewritePlan(
        charset=options.get("charset") or None, encoding=encoding, xml=mime.lower() == "application/xhtml+xml"
    )


def kept_from_shared_caches(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a response is this visitor's alone: private or no-store, or with nothing that lets a shared
    cache keep it (no public, no-cache, s-maxage, max-age, Expires or Last-Modified). Only such a page may carry
    what came with its request (the Referer): a cached copy would show it to every visitor after."""
    control = None
    storable = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "cache-control":
            control = parse_cache_control_header(value, cls=ResponseCacheControl)
        elif lowered in ("expires", "last-modified"):
            storable = True
    if control is not None:
        if control.private or control.no_store:
            return True
        # no-cache is stored too, and revalidated: the app's 304 would hand the stored copy to the next visitor.
        storable = storable or bool(
            control.public or control.no_cache or control.s_maxage is not None or control.max_age is not None
        )
    return not storable


class BodyFilter:
    """decode -> rewrite -> encode, chunk by chunk; never raises for a body it cannot decode."""

    def __init__(self, plan: RewritePlan, rewriter: Rewriter) -> None:
        self._rewriter = rewriter
        self._encoding = plan.encoding
        self._decoder: _ZlibDecoder | _BrotliDecoder | None = None
        self._encoder: Any = None
        self._started = False  # something has been emitted
        self._broken = False  # the input stopped decoding: pass the rest on as it is
        # The app's coded bytes until something is emitted, so a body that turns out corrupt (or cut short)
        # before then goes out exactly as it came; bounded by what the rewriter holds back.
        self._raw: list[bytes] = []
        if plan.encoding != "identity":
            self._decoder, self._encoder = _codec_pair(plan.encoding)

    def feed(self, chunk: bytes) -> bytes:
        if self._broken:
            return chunk
        if self._decoder is None:
            out = self._rewriter.feed(chunk)
            self._started = self._started or bool(out)
            return out
        if not self._started:
            self._raw.append(chunk)
        try:
            text, trailing = self._decoder.decompress(chunk)
        except Exception:  # zlib.error, brotli.error: the app sent a body that does not decode
            return self._give_up(chunk)
        out = self._encode(self._rewriter.feed(text), final=False)
        if trailing is not None:  # the compressed stream ended; what follows is not part of it
            self._broken = True
            out += self._encode(self._rewriter.close(), final=True) + trailing
        if out:
            self._started = True
            self._raw.clear()
        return out

    def close(self) -> bytes:
        if self._broken:
            return b""
        if self._decoder is None:
            return self._rewriter.close()
        if not self._started and not self._decoder.complete():
            return b"".join(self._raw)  # cut short before anything was sent: the body as it came
        # A byte held back to tell another gzip member from trailing bytes goes out as it came.
        return self._encode(self._rewriter.close(), final=True) + self._decoder.held()

    def _give_up(self, chunk: bytes) -> bytes:
        self._broken = True
        if not self._started:
            return b"".join(self._raw)  # nothing sent yet: the body goes out exactly as the app made it
        # Finish what we sent as a valid stream, then the app's bytes as they came.
        return self._encode(b"", final=True) + chunk

    def _encode(self, data: bytes, *, final: bool) -> bytes:
        if not data and not final:
            return b""  # no header or empty flush block before there is something to send
        encoder = self._encoder
        if self._encoding == "br":
            out: bytes = encoder.process(data) + (encoder.finish() if final else encoder.flush())
            return out
        flushed: bytes = encoder.compress(data) + encoder.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
        return flushed


def _codec_pair(encoding: Encoding) -> tuple[_ZlibDecoder | _BrotliDecoder, Any]:
    """A decoder (chunk -> decoded bytes, and bytes after the end of the stream or None) and an encoder."""
    if encoding == "br":
        return _BrotliDecoder(), _brotli().Compressor()
    if encoding == "gzip":
        return _ZlibDecoder(gzip=True), zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
    return _ZlibDecoder(gzip=False), zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)


class _BrotliDecoder:
    def __init__(self) -> None:
        self._inner = _brotli().Decompressor()

    def decompress(self, data: bytes) -> tuple[bytes, bytes | None]:
        out: bytes = self._inner.process(data)
        return out, None

    def held(self) -> bytes:
        return b""

    def complete(self) -> bool:
        return bool(self._inner.is_finished())


class _ZlibDecoder:
    """gzip (any number of members in a row) or HTTP's "deflate", which is zlib-wrapped, though some
    servers send raw deflate: the first bytes tell which. Bytes after the stream's end are handed back."""

    def __init__(self, *, gzip: bool) -> None:
        self._gzip = gzip
        self._inner: Any = None
        self._head = b""  # the first bytes of a gzip member, until its magic number can be checked
        self._ended = False  # a whole stream (gzip: member) has been read

    def decompress(self, data: bytes) -> tuple[bytes, bytes | None]:
        out = b""
        while data:
            if self._inner is None:
                if self._ended and not self._gzip:
                    return out, data  # zlib and raw deflate hold one stream: the rest is trailing bytes
                data = self._head + data
                self._head = b""
                if len(data) < 2:
                    self._head = data
                    return out, None
                if self._gzip:
                    if self._ended and data[:2] != b"\x1f\x8b":
                        return out, data  # not another member: trailing bytes
                    wbits = _GZIP_WBITS
                else:
                    # A zlib header: CM = 8 in the low nibble and the 16-bit header a multiple of 31.
                    wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
                    wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
                self._inner = zlib.decompressobj(wbits)
            out += self._inner.decompress(data)
            if not self._inner.eof:
                return out, None
            data = self._inner.unused_data
            self._inner = None
            self._ended = True
        return out, None

    def held(self) -> bytes:
        return self._head

    def complete(self) -> bool:
        """At least one whole stream read and nothing of a next one begun."""
        return self._ended and self._inner is None
