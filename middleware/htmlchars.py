"""Two rules of the HTML standard the rewriter needs: how an attribute value's character references are
decoded, and which character encoding a document declares (BOM, Content-Type, ``<meta>`` prescan)."""

from __future__ import annotations

import codecs
import html
import re
from html.entities import html5

# Encodings in which "<", ">", quotes, "=" and ASCII letters are not always single ASCII bytes: a byte
# scanner would corrupt them, so such documents pass through untouched.
_NOT_ASCII_SAFE = frozenset(
    {
        "utf_16",
        "utf_16_le",
        "utf_16_be",
        "utf_32",
        "utf_32_le",
        "utf_32_be",
        "utf_7",
        "hz",
        "iso2022_jp",
        "iso2022_jp_1",
        "iso2022_jp_2",
        "iso2022_jp_2004",
        "iso2022_jp_3",
        "iso2022_jp_ext",
        "iso2022_kr",
    }
)
# The prescan passes over comments (a commented-out <meta> declares nothing), then finds a <meta> with a
# charset (or an http-equiv content naming one).
_META_CHARSET = re.compile(
    rb"""<!--.*?-->|<meta[\t\n\f\r /][^>]*?charset[\t\n\f\r ]*=[\t\n\f\r ]*["']?[\t\n\f\r ]*([a-zA-Z0-9_.:-]+)""",
    re.IGNORECASE | re.DOTALL,
)
PRESCAN_BYTES = 1024  # the standard's prescan looks at the first 1024 bytes

_REFERENCE = re.compile(r"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|([a-zA-Z][a-zA-Z0-9]*;?))")
_LONGEST_NAME = max(map(len, html5))


def decode_attribute(value: str) -> str:
    """An attribute value as a browser reads it: ``&amp;`` is ``&``, but ``&currency=USD`` stays as it
    is (a reference without ``;`` followed by ``=`` or a letter or digit is not one, in attributes)."""
    if "&" not in value:
        return value
    if "&" not in value.replace("&amp;", ""):  # the common case in URLs
        return value.replace("&amp;", "&")
    return _REFERENCE.sub(_decode_one, value)


def _decode_one(match: re.Match[str]) -> str:
    name = match[3]
    if name is None:
        return html.unescape(match[0])  # numeric: the standard's replacements for odd code points
    for size in range(min(len(name), _LONGEST_NAME), 1, -1):
        candidate = name[:size]
        if candidate not in html5:
            continue
        if not candidate.endswith(";"):
            following = name[size] if size < len(name) else match.string[match.end() : match.end() + 1]
            if following == "=" or following.isalnum():
                return match[0]
        return html5[candidate] + name[size:]
    return match[0]


def sniff_charset(declared: str | None, head: bytes) -> str | None:
    """The Python codec to read the document with, or None when it is not safe to scan bytewise.

    Order as in the standard: a byte-order mark, then the Content-Type's charset, then ``<meta>`` in the
    first 1024 bytes, else UTF-8 (the rewriter falls back to windows-1252 for an href UTF-8 cannot read).
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf_8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None
    name = declared
    from_meta = False
    if not name:
        match = next((m for m in _META_CHARSET.finditer(head, 0, PRESCAN_BYTES) if m[1]), None)
        name = match[1].decode("ascii") if match else "utf-8"
        from_meta = match is not None
    try:
        codec = codecs.lookup(name).name.replace("-", "_")
    except LookupError:
        return None
    if from_meta and codec.startswith(("utf_16", "utf_32")):
        return "utf_8"  # a meta tag readable as ASCII cannot be right about UTF-16: the standard says UTF-8
    return None if codec in _NOT_ASCII_SAFE else codec
