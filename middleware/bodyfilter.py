"""Which responses get rewritten, and the per-response filter that does it through any content coding.

    plan = plan_rewrite("GET", 200, headers)        # None: pass the body through untouched
    body_filter = BodyFilter(plan, rewriter)         # feed(chunk) -> bytes ... close() -> bytes

gzip and deflate bodies are decoded, rewritten and encoded again (br too when the ``brotli`` extra is
installed). A body that does not decode is never half-rewritten: if the first chunk is already corrupt the
whole body passes through as it came; if corruption shows up later, the part already sent is finished as
a valid stream and the rest is passed on as it came, so the client sees the same damage the app sent.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from werkzeug.http import parse_options_header

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
            coding = value.strip().lower()
        elif (
            (lowered == "cache-control" and "no-transform" in value.lower())
            or lowered == "content-range"
            or (lowered == "x-trackgate" and value.strip().lower() == "off")
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
    return RewritePlan(charset=options.get("charset") or None, encoding=encoding)


class BodyFilter:
    """decode -> rewrite -> encode, chunk by chunk; never raises for a body it cannot decode."""

    def __init__(self, plan: RewritePlan, rewriter: Rewriter) -> None:
        self._rewriter = rewriter
        self._encoding = plan.encoding
        self._decode: Callable[[bytes], bytes] | None = None
        self._encoder: Any = None
        self._started = False  # something has been emitted
        self._broken = False  # the input stopped decoding: pass the rest on as it is
        if plan.encoding != "identity":
            self._decode, self._encoder = _codec_pair(plan.encoding)

    def feed(self, chunk: bytes) -> bytes:
        if self._broken:
            return chunk
        if self._decode is None:
            out = self._rewriter.feed(chunk)
            self._started = self._started or bool(out)
            return out
        try:
            text = self._decode(chunk)
        except Exception:  # zlib.error, brotli.error: the app sent a body that does not decode
            return self._give_up(chunk)
        out = self._encode(self._rewriter.feed(text), final=False)
        self._started = self._started or bool(out)
        return out

    def close(self) -> bytes:
        if self._broken:
            return b""
        if self._decode is None:
            return self._rewriter.close()
        return self._encode(self._rewriter.close(), final=True)

    def _give_up(self, chunk: bytes) -> bytes:
        self._broken = True
        if not self._started:
            return chunk  # nothing sent yet: the body goes out exactly as the app made it
        # Finish what we sent as a valid stream, then the app's bytes as they came.
        return self._encode(b"", final=True) + chunk

    def _encode(self, data: bytes, *, final: bool) -> bytes:
        encoder = self._encoder
        if self._encoding == "br":
            out: bytes = encoder.process(data) + (encoder.finish() if final else encoder.flush())
            return out
        flushed: bytes = encoder.compress(data) + encoder.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
        return flushed


def _codec_pair(encoding: Encoding) -> tuple[Callable[[bytes], bytes], Any]:
    if encoding == "br":
        brotli = _brotli()
        return brotli.Decompressor().process, brotli.Compressor()
    if encoding == "gzip":
        return zlib.decompressobj(_GZIP_WBITS).decompress, zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
    return _DeflateDecoder().decompress, zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)


class _DeflateDecoder:
    """HTTP's "deflate" is zlib-wrapped, but some servers send raw deflate: the first bytes tell which."""

    def __init__(self) -> None:
        self._inner: Any = None

    def decompress(self, data: bytes) -> bytes:
        if self._inner is None:
            if not data:
                return b""
            # A zlib header: CM = 8 in the low nibble and the 16-bit header a multiple of 31.
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._inner = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        out: bytes = self._inner.decompress(data)
        return out
