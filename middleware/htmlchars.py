"""The rules of the HTML standard the rewriter needs: how character references are decoded (in an attribute
value, in text), and which character encoding a document declares (BOM, Content-Type, ``<meta>`` prescan)."""

from __future__ import annotations

import codecs
import functools
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
# Labels the Encoding Standard reads with another decoder than Python's codec of that name (keyed by
# Python's codec name, so that every alias of a label is covered): what browsers decode the bytes with.
_WEB_DECODERS = {
    "ascii": "cp1252",
    "latin_1": "cp1252",
    "iso8859_1": "cp1252",
    "iso8859_9": "cp1254",
    "iso8859_11": "cp874",
    "tis_620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "big5": "big5hkscs",
}
_HOLES = frozenset((0x81, 0x8D, 0x8F, 0x90, 0x9D))


def _windows_1252_holes(error: UnicodeError) -> tuple[str | bytes, int]:
    """The five bytes windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) are the code points of the
    same number in the Encoding Standard's windows-1252, both ways, where Python's cp1252 fails on them.
    Encoding anything else it cannot: a character reference, as a browser encodes a URL's query."""
    if isinstance(error, UnicodeDecodeError):
        return "".join(map(chr, error.object[error.start : error.end])), error.end
    if isinstance(error, UnicodeEncodeError):
        text = error.object[error.start : error.end]
        return b"".join(bytes((ord(c),)) if ord(c) in _HOLES else f"&#{ord(c)};".encode() for c in text), error.end
    raise error


codecs.register_error("trackgate.windows-1252", _windows_1252_holes)
DECODE_ERRORS = {"cp1252": "trackgate.windows-1252"}  # how to decode in a codec, when not "strict"
ENCODE_ERRORS = {"cp1252": "trackgate.windows-1252"}  # ... and to encode a URL's query, if not xmlcharrefreplace

# Every byte below 0x80 must mean its ASCII character, both ways, for a bytewise scan to be right.
_ASCII_PROBE = "".join(map(chr, range(0x80)))
# The prescan (HTML 13.2.3.2) passes over comments (a commented-out <meta> declares nothing; "<!-->" is a
# whole one), then reads each <meta>'s attributes: a charset, or http-equiv="content-type" with a content.
_PRESCAN = re.compile(rb"<!(?=--)[\s\S]*?-->|<meta[\t\n\f\r /]([^>]*)", re.IGNORECASE)
_META_ATTRIBUTE = re.compile(
    rb"""([^\t\n\f\r /=>][^\t\n\f\r /=>]*)(?:[\t\n\f\r ]*=[\t\n\f\r ]*("[^"]*"?|'[^']*'?|[^\t\n\f\r >]*))?"""
)
_LABEL = re.compile(rb"[a-zA-Z0-9_.:-]+")
_CONTENT_CHARSET = re.compile(rb"""charset[\t\n\f\r ]*=[\t\n\f\r ]*(?:"([^"]*)"|'([^']*)'|([^\t\n\f\r ;]+))""", re.I)
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


# A character reference in text, as html.unescape finds them.
_TEXT_REFERENCE = re.compile(r"&(?:#[xX]([0-9a-fA-F]+);?|#([0-9]+);?|[^\t\n\f <&#;]{1,32};?)")


def decode_text(text: str) -> str:
    """Text content as a browser reads it (a title's): each reference decoded once (what it gives is never
    read again: "&#38;amp;" is "&amp;"), numeric ones by the standard's rules (html.unescape calls int() on
    any number of digits, which raises past 4,300)."""
    return _TEXT_REFERENCE.sub(_decode_text_reference, text) if "&" in text else text


def _decode_text_reference(match: re.Match[str]) -> str:
    if match[1] is not None or match[2] is not None:
        return numeric_reference(match[1], match[2])
    return html.unescape(match[0])  # a named one (the longest known name it starts with, as in text)


def numeric_reference(hex_digits: str | None, digits: str | None) -> str:
    """What ``&#...;`` stands for (HTML's numeric character reference end state): U+FFFD for 0, surrogates
    and numbers past U+10FFFF (however many digits: no int() of a thousand), windows-1252's characters for
    0x80-0x9F, and every other code point kept, controls and noncharacters included (html.unescape drops
    those, which changed a link's destination)."""
    text = (hex_digits if hex_digits is not None else digits or "").lstrip("0")
    if len(text) > 8:
        return "\ufffd"
    number = int(text or "0", 16 if hex_digits is not None else 10)
    if number == 0 or number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
        return "\ufffd"
    if 0x80 <= number <= 0x9F:
        return html.unescape(f"&#{number};")  # the remapping table (the holes in it stay as they are)
    return chr(number)


def _decode_one(match: re.Match[str]) -> str:
    name = match[3]
    if name is None:
        return numeric_reference(match[1], match[2])
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
        meta = _prescan(head[:PRESCAN_BYTES])
        name = meta or "utf-8"
        from_meta = meta is not None
    found = _codec_of_label(name.strip())
    if found is None:
        return None
    codec = found.replace("-", "_")
    if from_meta and codec.startswith(("utf_16", "utf_32")):
        return "utf_8"  # a meta tag readable as ASCII cannot be right about UTF-16: the standard says UTF-8
    codec = _WEB_DECODERS.get(codec, codec)
    return codec if codec not in _NOT_ASCII_SAFE and _reads_ascii_as_ascii(codec) else None


@functools.lru_cache(maxsize=256)
def _codec_of_label(label: str) -> str | None:
    """Python's codec for a charset label as the Encoding Standard reads labels (webencodings, the charsets
    extra: windows-874, iso-8859-8-i, x-sjis, ks_c_5601-1989... which Python does not know, so pages declaring
    them went untracked), else as Python reads it. None for what names no charset."""
    try:
        import webencodings  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    else:
        found = webencodings.lookup(label)
        if found is not None:
            return str(found.codec_info.name)
    try:  # a label the web does not know but Python does (latin-1, utf_8, cp932...), as apps write them
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _prescan(head: bytes) -> str | None:
    """The charset a <meta> declares in ``head``, per the standard's prescan (simplified: no need_pragma
    subtleties beyond http-equiv="content-type")."""
    for found in _PRESCAN.finditer(head):
        if found[1] is None:
            continue  # a comment
        attributes: dict[bytes, bytes] = {}
        for attribute in _META_ATTRIBUTE.finditer(found[1]):
            value = attribute[2] or b""
            if value[:1] in (b'"', b"'"):
                value = value[1:-1] if len(value) > 1 and value[-1:] == value[:1] else value[1:]
            attributes.setdefault(attribute[1].lower(), value)
        charset = attributes.get(b"charset")
        if charset is None and attributes.get(b"http-equiv", b"").strip().lower() == b"content-type":
            content = _CONTENT_CHARSET.search(attributes.get(b"content", b""))
            if content is not None:
                charset = content[1] if content[1] is not None else content[2] if content[2] is not None else content[3]
        label = _LABEL.match(charset.strip()) if charset else None
        if label:  # (its leading run of label characters: charset="utf-8&quot;" still says utf-8)
            return label[0].decode("ascii")
    return None


@functools.lru_cache(maxsize=64)
def _reads_ascii_as_ascii(codec: str) -> bool:
    """Whether a text codec maps every ASCII byte to itself both ways (not EBCDIC, base64, punycode...)."""
    try:
        return (
            getattr(codecs.lookup(codec), "_is_text_encoding", True)
            and _ASCII_PROBE.encode(codec) == _ASCII_PROBE.encode("ascii")
            and _ASCII_PROBE.encode("ascii").decode(codec) == _ASCII_PROBE
        )
    except (LookupError, ValueError, TypeError):
        return False
