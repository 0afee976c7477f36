"""The streaming HTML rewriter: links become click-tracking links, a pixel goes before the last ``</body>``.

    rewriter = HtmlRewriter(links, metadata={"recipient": "a@example.org"})
    out = rewriter.feed(chunk1) + rewriter.feed(chunk2) + rewriter.close()
    html = rewrite_html(html, links, metadata=...)         # a whole document, str or bytes

It rewrites bytes, not a parsed tree: every byte outside the rewritten ``href`` values comes out as it
went in (DOCTYPE, entities, quoting, case, comments), the output is the same however the input is cut
into chunks, and malformed HTML passes through. Compiled patterns jump from one construct of interest to
the next; the tokenizer rules follow the HTML standard closely enough that attribute values, comments and
raw-text elements (script, style, textarea, title, ...) are never mistaken for markup.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, cast, overload
from urllib.parse import quote, urlsplit

from .errors import ConfigError, TrackgateError
from .htmlchars import (
    DECODE_ERRORS,
    ENCODE_ERRORS,
    PRESCAN_BYTES,
    decode_attribute,
    decode_text,
    sniff_charset,
)
from .tagwalk import BOGUS, NAME, walk

# What _scan uses to pass over text, plain tags and links: the compiled inner loop (_speedups.c), built
# wherever a C compiler was at hand; None: this module's own reading, which is the reference (tests set it
# to None to compare both).
fast_scan: Callable[..., int] | None
try:
    from ._speedups import scan as fast_scan
except ImportError:  # pragma: no cover
    fast_scan = None


class LinkSource(Protocol):
    def click_url(self, url: str, metadata: Mapping[str, Any] | None = None) -> str: ...

    def open_url(self, metadata: Mapping[str, Any] | None = None) -> str: ...

    def is_tracking_url(self, url: str) -> bool: ...


class TitledLinkSource(LinkSource, Protocol):
    """A link source whose pixel can carry the page's title (what ``page_title=True`` needs)."""

    def open_url(self, metadata: Mapping[str, Any] | None = None, *, title: str | None = None) -> str: ...


# An unfinished tag is held back at most this many bytes; past that it streams through unchanged while the
# tag walker (tagwalk.py) finds its end. A tag this long is never rewritten, whole or in pieces, so the output
# does not depend on the chunking.
MAX_HELD = 64 * 1024

_WS = rb"\t\n\f\r "
# An attribute value: a quote right after "=" always opens a quoted value (an unclosed one is not a short
# unquoted value: the tag is unfinished), anything else is an unquoted value, possibly empty.
_VALUE = rb"(?:\"[^\"]*+\"|'[^']*+'|(?![\"'])[^" + _WS + rb">]*+)"
# "= value", or no "=" at all: once there is an "=" the value must be whole.
_ASSIGN = rb"(?:[" + _WS + rb"]*+=[" + _WS + rb"]*+" + _VALUE + rb"|(?![" + _WS + rb"]*+=))"
# What follows a tag name up to its ">": attributes, whose values may be quoted, per the tokenizer.
_TAG_TAIL = rb"(?:[" + _WS + rb"/]++|[^" + _WS + rb"/>][^" + _WS + rb"/>=]*+" + _ASSIGN + rb")*+>"
_RAW_TEXT = rb"script|style|textarea|title|xmp|iframe|noembed|noframes|plaintext"
_DOCTYPE = rb"![dD][oO][cC][tT][yY][pP][eE]"
# Start tags that end SVG and MathML wherever they appear in them (HTML 13.2.6.5, "any other start tag" in
# foreign content): the tree builder pops back to HTML, so a <script> after one is an HTML script again.
_BREAKOUT_NAMES = (
    b"b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 head hr i img li listing "
    b"menu meta nobr ol p pre ruby s small span strong strike sub sup table tt u ul var"
).split()
_INTERESTING = (
    rb"(?i:a|area|/?body|/?svg|/?math|html|"
    + _RAW_TEXT
    + rb")["
    + _WS
    + rb"/>]|!--|!\[CDATA\[|"
    + _DOCTYPE
)
# Text and every complete construct we do not care about, consumed without a Python-level loop.
_SKIP = re.compile(
    # A whole comment is skipped here too; it ends at the first "--!?>" from its own "--", as in _scan.
    rb"(?:[^<]++|<(?:!(?=--)[\s\S]*?--!?>|(?!"
    + _INTERESTING
    + rb")(?:/?[a-zA-Z][^"
    + _WS
    + rb"/>]*+"
    + _TAG_TAIL
    + rb"|!(?!--|\[CDATA\[)[^>]*+>|\?[^>]*+>|/(?![a-zA-Z])[^>]*+>|(?=[^a-zA-Z/!?]))))*+"
)
# A link's first href, found while its attributes are walked (an "href" inside another value never counts):
# attributes other than href, then href's value (group 5) if an href with a value comes next.
_HREF = rb"[hH][rR][eE][fF]"
_LINK = (
    rb"([aA](?:[rR][eE][aA])?)(?=[" + _WS + rb"/>])(?:[" + _WS + rb"/]++|(?!" + _HREF + rb"[" + _WS + rb"/>=])"
    rb"[^" + _WS + rb"/>][^" + _WS + rb"/>=]*+" + _ASSIGN + rb")*+"
    rb"(?:" + _HREF + rb"[" + _WS + rb"]*+=[" + _WS + rb"]*+(" + _VALUE + rb"))?+" + _TAG_TAIL
)
# Groups: 2 comment, 3 CDATA, 4 link name, 5 its href value, 6 end-tag slash, 7 other tag name, 8 DOCTYPE.
_CONSTRUCT = (
    rb"<(?:(!--)|(!\[CDATA\[)|"
    + _LINK
    + rb"|(/?)([a-zA-Z][^"
    + _WS
    + rb"/>]*+)"
    + _TAG_TAIL
    + rb"|("
    + _DOCTYPE
    + rb"[^>]*+>))"
)
# One call per construct: what to skip, then (group 1) the construct of interest, if it is whole.
_STEP = re.compile(_SKIP.pattern + rb"(" + _CONSTRUCT + rb")?")
# The same inside SVG or MathML, where the tags that end them (_BREAKOUT, font, </br>, </p>) are of interest.
_FOREIGN_STEP = re.compile(
    _SKIP.pattern.replace(
        _INTERESTING,
        rb"(?i:" + b"|".join(sorted(_BREAKOUT_NAMES)) + rb"|font|/br|/p)[" + _WS + rb"/>]|" + _INTERESTING,
    )
    + rb"("
    + _CONSTRUCT
    + rb")?"
)
_ATTRIBUTE = re.compile(
    rb"([^" + _WS + rb"/>][^" + _WS + rb"/>=]*+)(?:[" + _WS + rb"]*+=[" + _WS + rb"]*+(" + _VALUE + rb"))?+"
)
# A cheap first look for data-trackgate (a case-insensitive search is several times slower).
_OPT_OUT_HINT = re.compile(rb"-[tT][rR][aA][cC][kK][gG][aA][tT][eE]")
_TABS_AND_NEWLINES = str.maketrans("", "", "\t\n\r")  # the URL parser drops them anywhere
_COMMENT_END = re.compile(rb"--!?>")
_CDATA_END = re.compile(rb"\]\]>")
_BOGUS_COMMENT_END = re.compile(rb">")
_FOREIGN = (b"svg", b"math")
_BREAKOUT = frozenset(_BREAKOUT_NAMES)
_FONT_BREAKOUT = re.compile(rb"[\t\n\f\r /](?:color|face|size)[\t\n\f\r /=>]", re.IGNORECASE)
_TITLE_BYTES = 1024  # of a <title> kept for the page view; the text is cut to _TITLE_CHARS
_TITLE_CHARS = 256
_NEVER = re.compile(rb"(?!)")
_RAW_TEXT_ENDS = {
    name: re.compile(rb"</" + name + rb"[" + _WS + rb"/>]", re.IGNORECASE) for name in _RAW_TEXT.split(b"|")
}
# What moves the tokenizer through a script's text (the script data states): "<!--" escapes it, and in
# there a "<script" escapes it twice, so that its "</script>" does not end the element ("-->" undoes both).
# The old document.write('<script ...></script>') inside <!-- --> depends on it.
_SCRIPT_MARKS = re.compile(rb"<!--|-->|<(/?)script[" + _WS + rb"/>]", re.IGNORECASE)
_SCRIPT_MARK_BYTES = len(b"</script ") - 1  # a mark cut by the chunk's end is kept back this much
# The same elements inside SVG or MathML: their text ends at their end tag, unless inside a CDATA section.
_FOREIGN_RAW_ENDS = {
    name: re.compile(rb"<!\[CDATA\[|\]\]>|</" + name + rb"[" + _WS + rb"/>]", re.IGNORECASE)
    for name in _RAW_TEXT.split(b"|")
}
_FOREIGN_RAW_PATTERNS = frozenset(_FOREIGN_RAW_ENDS.values())
_CDATA_OPEN_BYTES = len(b"<![CDATA[") - 1
_URL_OUTER = "".join(map(chr, range(0x21)))  # the URL parser strips C0 controls and spaces at both ends
_VALUE_CACHE_SIZE = 1024
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_TAG_NAME = re.compile(rb"<(/?)([a-zA-Z][^" + _WS + rb"/>]{0,15})")

_SCRIPT_DATA, _SCRIPT_ESCAPED, _SCRIPT_DOUBLE_ESCAPED = 0, 1, 2

_PIXEL = (
    '<img src="{src}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0" />'
)

Scope = Literal["all", "outbound"]


class HtmlRewriter:
    """Feed bytes, get bytes. One object per document; not thread-safe (like a codec)."""

    def __init__(
        self,
        links: LinkSource,
        *,
        metadata: Mapping[str, Any] | None = None,
        click_tracking: bool = True,
        open_tracking: bool = True,
        pixel_position: Literal["end", "start"] = "end",
        scope: Scope = "all",
        charset: str | None = None,
        page_host: str | None = None,
        pixel_in_fragments: bool = True,
        xml: bool = False,
        page_title: bool = False,
        scheme: str = "https",
    ) -> None:
        self._links = links
        self._is_tracking_url = links.is_tracking_url
        self._metadata = dict(metadata) if metadata else None
        # One maker for the document: a link source that can (TrackingLinks) encodes the metadata once, not per link.
        clicks_for = getattr(links, "clicks_for", None)
        self._click_url: Callable[[str], str] = (
            clicks_for(self._metadata)
            if clicks_for is not None
            else functools.partial(links.click_url, metadata=self._metadata)
        )
        self._click = click_tracking
        self._outbound_only = scope == "outbound"
        # (The Host's port is the page's scheme's default when it is 443 on https, as a link's is on its own.)
        page_scheme = scheme if scheme in ("http", "https") else "http"
        self._page_host = _host_and_port(f"{page_scheme}://{page_host}") if page_host else None
        # The compiled loop signs plain links itself when the link source tells it how (TrackingLinks and
        # PageLinks do). In the outbound scope it tells the page's own host apart when that is a plain host
        # name (links to a port are its to hand back); with a port of the page's own, the code below does it.
        own = self._page_host if self._outbound_only else None
        self._own_host = own[0].encode() if own is not None and own[1] is None and own[0].isascii() else None
        click_signing = getattr(links, "click_signing", None)
        self._signing = (
            click_signing(self._metadata)
            if click_signing is not None and click_tracking and (own is None or self._own_host is not None)
            else None
        )
        self._pixel_at: str | None = pixel_position if open_tracking else None
        # False: only a whole document (a DOCTYPE, <html> or <body> in it) gets the pixel, not a fragment that
        # a page fetches into itself (htmx, Turbo frames, fetch()): that page was counted when it loaded.
        self._pixel_in_fragments = pixel_in_fragments
        self._document = False
        # A protocol-relative link (//host/path) takes the document's scheme: the page's, or https in an email.
        self._relative_prefix = scheme + ":"
        self._declared = charset
        self._codec: str | None = None
        self._decided = False  # charset known (or the document passes through untouched)
        self._passthrough = False
        self._buffer = b""
        self._until: re.Pattern[bytes] | None = None  # inside a comment, CDATA or raw text: where it ends
        # Open <svg> and <math> elements: inside them "<![CDATA[" is a CDATA section, a self-closed <script/>
        # is a whole element, and a script's or style's text may hold CDATA sections. (Counted from their
        # tags alone; the tree builder's other ways out of foreign content are not followed.)
        self._foreign = 0
        self._raw_cdata = False  # inside a CDATA section of such a script's or style's text
        self._xml = xml  # XHTML read as XML: "<![CDATA[" is a section everywhere
        # page_title: the pixel carries the document's <title> (links.open_url(metadata, title=...)), which a
        # page view reports (Matomo's action_name). Its bytes are collected while inside it, bounded.
        self._wants_title = page_title
        self._title: str | None = None
        self._title_seen = False
        self._title_bytes: bytearray | None = None
        self._keep = 0  # bytes to keep back while inside: a possible partial end marker
        self._script_state = _SCRIPT_DATA
        self._tail: bytearray | None = None  # output held since the last </body> (the pixel goes before it)
        self._pixel_done = False
        self._unfinished = False
        self._walking: int | None = None  # inside a tag too long to hold: the tokenizer state
        self._walked: tuple[bool, bytes] = (False, b"")  # that tag: (is an end tag, its name in lower case)
        self._out: list[bytes] = []
        # Raw href value -> the value written for it (b"": left alone). One document has one metadata, and
        # menus and footers repeat their links; bounded so a page of unique links cannot grow it.
        self._values: dict[bytes, bytes] = {}

    # --- public --------------------------------------------------------------------------------------
    @property
    def charset(self) -> str | None:
        """The Python codec the document is read with, once known; None while undecided or when the
        document passes through untouched (a charset that cannot be scanned bytewise)."""
        return None if self._passthrough else self._codec

    def feed(self, data: bytes) -> bytes:
        if self._passthrough:
            return data
        self._buffer += data
        if not self._decided and not self._decide(final=False):
            return self._take()  # still waiting for the charset, or it says: pass through
        self._scan(final=False)
        return self._take()

    def close(self) -> bytes:
        if not self._decided:
            self._decide(final=True)
        if self._passthrough:
            return self._take()
        self._scan(final=True)
        self._emit(self._buffer)
        self._buffer = b""
        # A document that ends inside a tag, comment or raw text would swallow the pixel: leave it as it is.
        malformed = self._unfinished or self._until is not None or self._walking is not None
        wanted = self._document or self._pixel_in_fragments
        if self._pixel_at is not None and not self._pixel_done and not malformed and wanted:
            self._out.append(self._pixel())  # before what was held since the last </body>, if anything was
            self._pixel_done = True
        if self._tail is not None:
            self._out.append(bytes(self._tail))
            self._tail = None
        return self._take()

    # --- charset -------------------------------------------------------------------------------------
    def _decide(self, *, final: bool) -> bool:
        head = self._buffer
        if not final and len(head) < 3 and any(bom.startswith(head) for bom in _BOMS):
            return False  # a byte-order mark beats a declared charset: wait until it is whole (or is not one)
        if not self._declared and len(head) < PRESCAN_BYTES and not final and not head.startswith(b"\xef\xbb\xbf"):
            return False  # the <meta charset> may still come
        self._codec = sniff_charset(self._declared, head[:PRESCAN_BYTES])
        self._decided = True
        if self._codec is None:
            self._passthrough = True
            self._out.append(self._buffer)
            self._buffer = b""
        return not self._passthrough

    # --- scanning ------------------------------------------------------------------------------------
    def _scan(self, *, final: bool) -> None:
        buffer = self._buffer
        position = 0
        size = len(buffer)
        while position < size:
            if self._walking is not None:
                state, end = walk(self._walking, buffer, position)
                if end < 0:
                    self._walking = state
                    self._emit(buffer[position:])
                    position = size
                    break
                self._emit(buffer[position:end])
                position = end
                self._walking = None
                self._after_tag(*self._walked)
                continue
            if self._until is _SCRIPT_MARKS or self._until in _FOREIGN_RAW_PATTERNS:
                inside = self._in_script if self._until is _SCRIPT_MARKS else self._in_foreign_raw
                position, ended = inside(buffer, position, final)
                if not ended:
                    break  # the rest of the element's text is still to come
                continue
            if self._until is not None:
                found = self._until.search(buffer, position)
                if found is None:
                    position = self._emit_to_the_end(buffer, position, final)
                    break
                self._emit_inside(buffer[position : found.start()])
                position = found.start()
                self._until = None
                if self._title_bytes is not None:
                    self._title = _title_text(bytes(self._title_bytes), self._codec or "utf-8")
                    self._title_bytes = None
                if found.group(0)[:1] != b"<":  # a comment or CDATA end marker: part of the construct
                    self._emit(found.group(0))
                    position = found.end()
                continue
            if fast_scan is not None and self._tail is None:
                # Up to the next construct that needs the code below (or the end), links rewritten; in SVG or
                # MathML also up to a tag that ends them (_FOREIGN_STEP's).
                position = fast_scan(
                    buffer, position, self._out, self._values, self._link_value, self._signing, self._click,
                    _VALUE_CACHE_SIZE, MAX_HELD, self._codec == "utf_8", self._own_host, bool(self._foreign),
                )
                if position >= size:
                    break
            step = (_FOREIGN_STEP if self._foreign else _STEP).match(buffer, position)
            if step is None:  # cannot happen (everything in the pattern is optional); read as "no construct"
                end = position
            else:
                end = step.end()
                if step[1] is not None:
                    position = self._handle(step, position)
                    continue
            if end > position:
                self._emit(buffer[position:end])
                position = end
            if position < size:  # an unfinished construct (or one the grammar cannot read) starts here
                if final:
                    # The document ends inside a tag or bogus comment: what is left belongs to it (a browser
                    # drops such a tag), so it goes out as it is, and no pixel goes into it.
                    self._unfinished = True
                    self._emit(buffer[position:])
                    position = size
                    break
                if size - position <= MAX_HELD:
                    break  # an unfinished construct: wait for the rest
                position = self._start_walking(buffer, position)
        self._buffer = buffer[position:]

    def _handle(self, construct: re.Match[bytes], position: int) -> int:
        """Emit what precedes one construct (from ``position``) and the construct itself (groups as in
        _CONSTRUCT); returns where scanning goes on."""
        tag, comment, cdata, link, href, slash, name, doctype = construct.group(1, 2, 3, 4, 5, 6, 7, 8)
        end = construct.end()  # the construct closes the match
        start = end - len(tag)
        text = construct.string
        if comment:  # <!--: the end search starts at its dashes, so "<!-->" and "<!--->" end at once
            self._emit(text[position : start + 2])
            self._enter(_COMMENT_END, 3)
            return start + 2
        if cdata:  # <![CDATA[: a section ending at "]]>" in SVG or MathML, a bogus comment ending at ">" in HTML
            self._emit(text[position : start + 9])
            if self._foreign or self._xml:
                self._enter(_CDATA_END, 2)
            else:
                self._enter(_BOGUS_COMMENT_END, 0)
            return start + 9
        if doctype:
            self._emit(text[position:end])
            # (One too long to hold would stream through in pieces, where nothing reads it.)
            self._document = self._document or end - start <= MAX_HELD
            return end
        too_long = end - start > MAX_HELD  # in pieces it would have streamed through unchanged: same when whole
        if link:
            value = self._link_value(href) if href is not None and self._click and not too_long else b""
            # The opt-out is looked for only in tags that would change, and first with a cheap hint.
            if value and (_OPT_OUT_HINT.search(tag) is None or not self._opted_out(tag)):
                value_start, value_end = construct.span(5)
                self._emit(text[position:value_start])
                self._emit(value)
                self._emit(text[value_end:end])
            else:
                self._emit(text[position:end])
            return end
        name = name.lower()
        if slash and name == b"body" and not too_long:  # held back: the pixel may go before it
            if start > position:
                self._emit(text[position:start])
            self._body_end(tag)
            return end
        self._emit(text[position:end])
        # A tag too long to hold is read without its bytes when it streams in pieces: the same when whole.
        self._after_tag(bool(slash), name, b"" if too_long else tag)
        return end

    def _after_tag(self, end_tag: bool, name: bytes, tag: bytes = b"") -> None:
        """What a tag starts or ends, once it has been emitted (links are rewritten in _handle)."""
        if name == b"body" or (name == b"html" and not end_tag):  # (a whole </html> is passed over)
            self._document = True
        if end_tag:
            if name == b"body" and self._tail is not None:
                # A </body> too long to hold back is the last one seen: the pixel goes at the end instead.
                self._out.append(bytes(self._tail))
                self._tail = None
            elif name in _FOREIGN and self._foreign:
                self._foreign -= 1
            elif name in (b"br", b"p") and self._foreign:
                self._foreign = 0  # (these end tags break out too)
            return
        if self._foreign and (name in _BREAKOUT or (name == b"font" and _FONT_BREAKOUT.search(tag))):
            self._foreign = 0
        if name in _FOREIGN:
            if not _self_closing(tag):  # <svg/> is a whole element
                self._foreign += 1
        elif self._foreign and name in _RAW_TEXT_ENDS:
            # In SVG or MathML a self-closed <script/> (or <style/>, <title/>) has no text at all; an open one's
            # text runs to its end tag, CDATA sections skipped, which hold what a script must not end on.
            if not _self_closing(tag):
                self._enter(_FOREIGN_RAW_ENDS[name], max(_CDATA_OPEN_BYTES, len(name) + 2))
                self._raw_cdata = False
        elif name == b"body":
            if self._pixel_at == "start" and not self._pixel_done:
                self._emit(self._pixel())
                self._pixel_done = True
        elif name == b"plaintext":
            self._enter(_NEVER, 0)  # nothing ends it
        elif name == b"script":
            self._enter(_SCRIPT_MARKS, _SCRIPT_MARK_BYTES)
            self._script_state = _SCRIPT_DATA
        elif name in _RAW_TEXT_ENDS:  # style, textarea, title, ...: text until its own end tag
            self._enter(_RAW_TEXT_ENDS[name], len(name) + 2)
            if name == b"title" and self._wants_title and not self._title_seen and not self._foreign:
                self._title_seen = True  # the first one counts (document.title), even when it is empty
                self._title_bytes = bytearray()

    def _in_script(self, buffer: bytes, position: int, final: bool) -> tuple[int, bool]:
        """Emit a script's text from ``position``; returns where its end tag starts and True (the script is
        left), or where the unread rest starts (a possibly cut mark, kept for the next chunk) and False."""
        state = self._script_state
        while True:
            found = _SCRIPT_MARKS.search(buffer, position)
            if found is None:
                self._script_state = state
                return self._emit_to_the_end(buffer, position, final), False
            mark, start = found.group(0), found.start()
            if mark == b"<!--":
                if state == _SCRIPT_DATA:
                    state = _SCRIPT_ESCAPED
                after = start + 2  # its dashes may also be those of a "-->" ("<!-->")
            elif mark == b"-->":
                state = _SCRIPT_DATA
                after = found.end()
            elif found[1]:  # </script
                if state != _SCRIPT_DOUBLE_ESCAPED:
                    self._emit(buffer[position:start])
                    self._until = None
                    return start, True  # the end tag is read as any tag
                state = _SCRIPT_ESCAPED
                after = found.end()
            else:  # <script
                if state == _SCRIPT_ESCAPED:
                    state = _SCRIPT_DOUBLE_ESCAPED
                after = found.end()
            self._emit(buffer[position:after])
            position = after

    def _in_foreign_raw(self, buffer: bytes, position: int, final: bool) -> tuple[int, bool]:
        """Like _in_script, for a script's or style's text in SVG or MathML: an end tag inside a CDATA
        section is text."""
        pattern = self._until
        assert pattern is not None
        while True:
            found = pattern.search(buffer, position)
            if found is None:
                return self._emit_to_the_end(buffer, position, final), False
            mark, start = found.group(0), found.start()
            if mark == b"<![CDATA[":
                self._raw_cdata = True
            elif mark == b"]]>":
                self._raw_cdata = False
            elif not self._raw_cdata:
                self._emit(buffer[position:start])
                self._until = None
                return start, True  # the end tag is read as any tag
            self._emit(buffer[position : found.end()])
            position = found.end()

    def _start_walking(self, buffer: bytes, position: int) -> int:
        """An unfinished tag longer than MAX_HELD streams through from here while the walker follows it."""
        opening = _TAG_NAME.match(buffer, position)
        if opening is None:  # <!..., <?..., </ ...: a bogus comment
            self._walked = (False, b"")
            self._walking = BOGUS
            end = position + 2
        else:
            self._walked = (bool(opening[1]), opening[2].lower())
            self._walking = NAME
            end = opening.end()
        self._emit(buffer[position:end])
        return end

    def _enter(self, until: re.Pattern[bytes], keep: int) -> None:
        self._until = until
        self._keep = keep

    # --- output --------------------------------------------------------------------------------------
    def _emit(self, data: bytes) -> None:
        if not data:
            return
        if self._tail is None:
            self._out.append(data)
            return
        self._tail += data
        if len(self._tail) > MAX_HELD:  # that </body> was not near the end: give up on it
            self._out.append(bytes(self._tail))
            self._tail = None

    def _body_end(self, tag: bytes) -> None:
        self._document = True
        if self._pixel_at != "end" or self._pixel_done:
            self._emit(tag)
            return
        if self._tail is not None:  # a later </body>: the earlier one was not the last
            self._out.append(bytes(self._tail))
        self._tail = bytearray(tag)

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _emit_to_the_end(self, buffer: bytes, position: int, final: bool) -> int:
        """Inside a comment, CDATA or raw text: emit the rest of the buffer but for what may be the start of
        its end mark, cut by the chunk's end (``_keep`` bytes, read again with the next chunk); returns where
        that unread rest starts."""
        end = len(buffer) - (0 if final else min(self._keep, len(buffer) - position))
        self._emit_inside(buffer[position:end])
        return end

    def _emit_inside(self, data: bytes) -> None:
        """Emit text inside a comment, CDATA or raw text; keep the start of the document's title."""
        if self._title_bytes is not None and len(self._title_bytes) < _TITLE_BYTES:
            self._title_bytes += data[: _TITLE_BYTES - len(self._title_bytes)]
        self._emit(data)

    def _pixel(self) -> bytes:
        """The pixel's tag, or b"" when no pixel can be made for this document (its bytes still all go out)."""
        try:
            if self._wants_title:
                source = cast(TitledLinkSource, self._links).open_url(self._metadata, title=self._title)
            else:
                source = self._links.open_url(self._metadata)
        except ConfigError:
            raise  # links for emails without TRACKGATE_BASE_URL: the caller must hear of it
        except (TrackgateError, ValueError):
            return b""
        return _PIXEL.format(src=_escape(source, '"')).encode("ascii", "xmlcharrefreplace")

    # --- links ---------------------------------------------------------------------------------------
    def _link_value(self, raw: bytes) -> bytes:
        """What to write for an href value (quotes included), or b"" to leave it as it is."""
        value = self._values.get(raw)
        if value is None:
            value = self._new_value(raw)
            if len(self._values) < _VALUE_CACHE_SIZE:
                self._values[raw] = value
        return value

    def _new_value(self, raw: bytes) -> bytes:
        """The href value (quotes included) to write for this one, or b"" to leave it as it is."""
        mark = raw[:1]
        if mark in (b'"', b"'"):
            raw = raw[1:-1]
        else:
            mark = b'"'
        try:
            codec = self._codec or "utf-8"
            text = raw.decode(codec, DECODE_ERRORS.get(codec, "strict"))
        except UnicodeDecodeError:
            fallback = self._fallback_text(raw)
            if fallback is None:
                return b""
            text = fallback
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")  # as the tokenizer reads a NUL in an attribute value
        tracked = self._tracked(text)
        if tracked is None:
            return b""
        if "&" in tracked:
            tracked = tracked.replace("&", "&amp;")
        if mark == b'"':
            if '"' in tracked:
                tracked = tracked.replace('"', "&quot;")
        elif "'" in tracked:
            tracked = tracked.replace("'", "&#39;")
        return mark + tracked.encode("ascii", "xmlcharrefreplace") + mark

    @staticmethod
    def _opted_out(tag: bytes) -> bool:
        for attribute in _ATTRIBUTE.finditer(tag, 2):
            if attribute[1].lower() == b"data-trackgate":
                return _unquote(attribute[2] or b"").strip().lower() == b"off"
        return False

    def _tracked(self, text: str) -> str | None:
        """The tracking URL for an href's text, or None when the link is to be left alone."""
        url = (decode_attribute(text) if "&" in text else text).strip(_URL_OUTER)
        if "\t" in url or "\n" in url or "\r" in url:
            url = url.translate(_TABS_AND_NEWLINES)
        if not url.startswith(("https://", "http://", "//")) and not url[:8].lower().startswith(
            ("http://", "https://")
        ):
            return None
        if url.startswith("//"):
            url = self._relative_prefix + url
        if not url.isascii() and self._codec not in (None, "utf_8"):
            url = _query_in_charset(url, self._codec)
        # Merge tags ({{ }}, {% %}, *| |*, %% %%, [[ ]]) are filled in by an email service after us: a
        # tracked link would freeze the placeholder.
        if ("{" in url and ("{{" in url or "{%" in url)) or "*|" in url or "%%" in url or "[[" in url:
            return None
        if self._is_tracking_url(url):
            return None
        if self._outbound_only and self._page_host is not None and _host_and_port(url) == self._page_host:
            return None
        try:
            return self._click_url(url)
        except ConfigError:
            raise  # links for emails without TRACKGATE_BASE_URL: the caller must hear of it
        except (TrackgateError, ValueError):
            return None  # not a destination we may sign: the link stays as it was

    def _fallback_text(self, raw: bytes) -> str | None:
        """An href that does not decode in the document's charset: UTF-8 pages get windows-1252's reading."""
        if self._codec != "utf_8":  # (the labels the web reads as windows-1252 get cp1252 at once)
            return None
        try:
            return raw.decode("windows-1252")  # the web's fallback for undeclared legacy pages
        except UnicodeDecodeError:
            return None


def _self_closing(tag: bytes) -> bool:
    """Whether a start tag ends in "/>" with the "/" its own (in ``<svg width=10/>`` it is the value's)."""
    if not tag.endswith(b"/>"):
        return False
    attributes = list(_ATTRIBUTE.finditer(tag, 2))
    last = attributes[-1] if attributes else None
    if last is None or not last[2] or last.end() != len(tag) - 1:
        return True
    return last[2][:1] in (b'"', b"'")  # an unquoted value runs up to the ">"


def _query_in_charset(url: str, codec: str) -> str:
    """The URL a browser makes of an href in a page of this charset: the URL standard percent-encodes a
    special URL's query in the document's encoding (its path and fragment in UTF-8, as the redirect will)."""
    before_fragment, hash_mark, fragment = url.partition("#")
    head, question, query = before_fragment.partition("?")
    if not question or query.isascii():
        return url
    errors = ENCODE_ERRORS.get(codec, "xmlcharrefreplace")
    encoded = _NON_ASCII.sub(lambda run: quote(run[0], safe="", encoding=codec, errors=errors), query)
    return head + "?" + encoded + hash_mark + fragment


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _title_text(raw: bytes, codec: str) -> str | None:
    """A title as document.title reads it: character references decoded, whitespace collapsed."""
    text = " ".join(decode_text(raw.decode(codec, "replace")).split())[:_TITLE_CHARS]
    return text or None


def _unquote(value: bytes) -> bytes:
    return value[1:-1] if value[:1] in (b'"', b"'") else value


def _escape(url: str, quote: str) -> str:
    escaped = url.replace("&", "&amp;")
    return escaped.replace('"', "&quot;") if quote == '"' else escaped.replace("'", "&#39;")


def _host_and_port(url: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(url if not url.startswith("//") else "http:" + url)
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.hostname or "", port if port != default else None)


@overload
def rewrite_html(document: str, links: LinkSource, **options: Any) -> str: ...
@overload
def rewrite_html(document: bytes, links: LinkSource, **options: Any) -> bytes: ...
def rewrite_html(document: str | bytes, links: LinkSource, **options: Any) -> str | bytes:
    """Rewrite a whole document: str in, str out; bytes in, bytes out.

    A str is text already: ``charset`` (default UTF-8) names the one it will be sent in, which decides how
    a browser encodes a link's query; characters that charset cannot hold become character references,
    as they must when the text is encoded for sending (UTF-16 and the like are read as UTF-8, whose
    query encoding browsers use for them)."""
    if isinstance(document, str):
        codec = sniff_charset(options.setdefault("charset", "utf-8"), b"")
        if codec is None:  # a charset no byte scan reads (UTF-16...): browsers encode its queries in UTF-8
            codec = options["charset"] = "utf_8"
        utf8 = codec == "utf_8"
        rewriter = HtmlRewriter(links, **options)
        data = document.encode(codec, "surrogatepass" if utf8 else ENCODE_ERRORS.get(codec, "xmlcharrefreplace"))
        out = rewriter.feed(data) + rewriter.close()
        return out.decode(codec, "surrogatepass" if utf8 else DECODE_ERRORS.get(codec, "strict"))
    rewriter = HtmlRewriter(links, **options)
    return rewriter.feed(document) + rewriter.close()
