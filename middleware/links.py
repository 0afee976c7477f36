"""Tracking links: signed (or encrypted) open and click URLs served by the middleware's endpoints.

    links = TrackingLinks(Settings(base_url="https://example.org"))
    links.click_url("https://shop.example.org/sale", {"recipient": "r-42"}, expires_in=30 * 86400)
    links.open_url({"recipient": "r-42"})           # the pixel for an email
    links.decode(url)                               # -> TrackingResult, or raises BadToken

Only http(s) destinations are encoded, and a destination is checked again when a token is decoded, so
neither a forged nor an old token can redirect to ``javascript:`` or a look-alike host.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from .errors import BadToken, BadURL, ConfigError, TokenExpired
from .events import new_event_id
from .fastjson import encode_string, scan_json
from .settings import Settings
from .tokens import PURPOSES, LegacyPytrackingCodec, Purpose, TokenCodec, foreign, json_bytes, json_text

# click_url for a plain http(s) URL in C (_speedups.c), built wherever a C compiler was at hand: the same
# link as the Python code below makes (tests compare both); None for the rest, or without the module.
sign_click: Callable[[str, tuple[bytes, bytes, Any, tuple[bytes, ...]]], str | None] | None
plain_url: Callable[[object], bool] | None
# decode_token's reading of a plain signed token, in C: the fields the Python code below would take from it
# (tests compare both); its data when it is authentic but needs that code's checks; False for a token no key
# signed; None for the rest.
read_token: Callable[[str, tuple[Any, ...], Any, bool], tuple[Any, ...] | dict[str, Any] | bool | None] | None
try:
    from ._speedups import plain_url, read_token, sign_click
except ImportError:  # pragma: no cover
    sign_click = plain_url = read_token = None

MAX_URL_CHARS = 4096
# A page view's referrer rides in its pixel's URL: a longer one is left out rather than push that URL past
# what servers take in a request line (gunicorn's default limit is 4,094 bytes).
MAX_REFERRER_CHARS = 1024
# A page-view pixel's whole URL, kept within that request line with room for the method and the version.
MAX_PIXEL_URL_CHARS = 4000
# Links made for web pages carry no visitor, so they can be reused across requests.
PAGE_LINK_CACHE_SIZE = 4096

# An http(s) URL with a non-empty host, no credentials, and no control, C1 or backslash characters
# (browsers read "\" as "/", Python does not: the two would disagree about the host).
_SAFE_URL = re.compile(r"(?i)https?://[^\x00-\x20\x7f-\x9f\\/?#@]+(?:[/?#][^\x00-\x1f\x7f-\x9f\\]*)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The common case, checked by the pattern alone: an ASCII host name without a port.
_PLAIN_HOST = re.compile(r"(?i)https?://[a-z0-9._-]+(?:[/?#]|\Z)")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
# Characters left as they are when a Unicode destination is turned into an ASCII Location header.
_URL_SAFE_CHARS = "!#$%&'()*+,-./:;=?@[]_~"

TrackingKind = Literal["open", "click", "pageview"]
_KIND_SEGMENT: dict[Purpose, str] = {"click": "/c/", "open": "/o/"}
_SEGMENT_KIND: dict[str, Purpose] = {"c": "click", "o": "open"}


def check_url(url: str) -> str:
    """``url`` if it may be a link destination, else ``BadURL`` saying why."""
    if plain_url is not None and plain_url(url):  # the common case, in C: the patterns below would pass it
        return url
    if not isinstance(url, str):
        raise BadURL(repr(url), "not a string")
    if len(url) > MAX_URL_CHARS:
        raise BadURL(url, f"longer than {MAX_URL_CHARS} characters")
    if not _SAFE_URL.fullmatch(url):
        raise BadURL(url, _why_unsafe(url))
    if not _PLAIN_HOST.match(url):  # a port, an IP literal or a Unicode host: read it as the redirect will
        ascii_host(url)
    return url


def ascii_host(url: str) -> str:
    """The host of a URL as the Location header spells it (IDNA, which applies NFKC), or ``BadURL`` when
    that is no host name: a fullwidth "\\" (U+FF3C) becomes "\\" there, which browsers read as "/", so the
    redirect would go to another host than the one checked. Also for what urlsplit refuses (a bad port)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # what urlsplit refuses ("[x")
        raise BadURL(url, "invalid host") from None
    return _spelled_host(parts, url)


def _spelled_host(parts: SplitResult, url: str) -> str:
    """ascii_host for a URL already split."""
    try:
        parts.port  # noqa: B018 — raises ValueError for a port out of range or not a number
        host = parts.hostname or ""
        spelled = host if host.isascii() else _idna_host(host)
    except (ValueError, UnicodeError):
        raise BadURL(url, "invalid host") from None
    if _HOST_NAME.fullmatch(spelled):
        return spelled
    if ":" in spelled:
        try:
            ipaddress.IPv6Address(spelled)
        except ValueError:
            raise BadURL(url, "invalid host") from None
        return spelled
    raise BadURL(url, "invalid host")


# Where IDNA 2003 (Python's "idna" codec) and browsers (UTS #46, non-transitional) spell a host apart: ß,
# final sigma and the zero-width joiners, which the codec maps away and browsers keep.
_IDNA_DEVIATIONS = re.compile("[\u00df\u03c2\u200c\u200d]")


def _idna_host(host: str) -> str:
    """A non-ASCII host as browsers spell it, so that a redirect goes where the link it replaced went."""
    try:
        from idna import IDNAError, encode  # (installed with aiohttp's yarl)
    except ImportError:  # pragma: no cover - depends on the environment
        pass
    else:
        try:
            return encode(host, uts46=True).decode("ascii")
        except IDNAError:
            pass  # IDNA 2008 refuses symbols (☃.net) and "_" that browsers accept: IDNA 2003 spells those
    if _IDNA_DEVIATIONS.search(host):
        raise UnicodeError("a host IDNA 2003 would spell differently from browsers")
    return host.encode("idna").decode("ascii")


def _why_unsafe(url: str) -> str:
    if _CONTROL.search(url):
        return "contains control characters"
    if "\\" in url:
        return "contains a backslash"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return "only http:// and https:// destinations can be tracked"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority:
        return "no host"
    if "@" in authority:
        return "credentials in the URL"
    return "invalid host"


def location_header(url: str) -> str:
    """An ASCII spelling of a checked destination, for the Location header (IDNA host, %-escaped rest)."""
    if url.isascii() and " " not in url:
        return url
    parts = urlsplit(url)
    host = _spelled_host(parts, url)  # (checked when the link was made and read: it is a host name)
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    return f"{parts.scheme}://{netloc}{quote(rest, safe=_URL_SAFE_CHARS)}"


class TrackingResult(NamedTuple):
    """A decoded link: pytracking's fields plus the kind, visitor code and the id the event will carry.

    A named tuple rather than a frozen dataclass: one is made per tracked request, and a tuple is built
    three times faster.
    """

    tracked_url: str | None  # the destination of a click, or the page of a page-view pixel
    webhook_url: str | None
    metadata: Mapping[str, Any]
    request_data: Mapping[str, Any] | None
    timestamp: int
    kind: TrackingKind = "open"
    visitor: str | None = None
    event_id: str = ""
    # Made by pytracking 0.2 (accepted only with TRACKGATE_LEGACY_PYTRACKING).
    legacy: bool = False
    title: str | None = None  # of the page a page-view pixel was on
    referrer: str | None = None  # where that page was reached from (its request's Referer)

    @property
    def is_open_tracking(self) -> bool:
        return self.kind != "click"

    @property
    def is_click_tracking(self) -> bool:
        return self.kind == "click"

    def to_json_dict(self) -> dict[str, Any]:
        """A plain dict that ``json.dumps`` accepts (pytracking's keys first)."""
        return {
            "is_open_tracking": self.is_open_tracking,
            "is_click_tracking": self.is_click_tracking,
            "tracked_url": self.tracked_url,
            "webhook_url": self.webhook_url,
            "metadata": dict(self.metadata),
            "request_data": None if self.request_data is None else dict(self.request_data),
            "timestamp": self.timestamp,
            "kind": self.kind,
            "visitor": self.visitor,
            "event_id": self.event_id,
            "legacy": self.legacy,
            "title": self.title,
            "referrer": self.referrer,
        }


# TrackingResult(*fields) as tuple.__new__ makes it, for every tracked request: the named tuple's own __new__
# is a Python function.
_new_result: Callable[[tuple[Any, ...]], TrackingResult] = functools.partial(tuple.__new__, TrackingResult)


class ClickSigning(NamedTuple):
    """What the compiled rewriter (_speedups.c) needs to make a plain click link itself, byte for byte the
    link ``clicks_for(metadata)`` makes: start + token, the token signing ``{"u":"<url>"`` + tail."""

    start: bytes  # the origin and the click prefix
    tail: bytes  # the payload after the destination: ',"m":{...}}', or "}" without metadata
    mac: Any  # the newest key's HMAC state (TokenCodec.signing_state)
    marks: tuple[bytes, ...]  # the prefixes of our own tracking URLs (is_tracking_url)


_NO_METADATA_TAIL = b"}"


def _click_signing(codec: TokenCodec, start: str, metadata: Mapping[str, Any] | None, marks: tuple[str, ...]
                   ) -> ClickSigning | None:
    mac = codec.signing_state("click")
    # Written into an attribute value as they are: nothing that would need escaping there.
    if mac is None or not all(text.isascii() for text in (start, *marks)) or any(c in start for c in "&\"'<>"):
        return None
    tail = _signed_tail(dict(metadata) if metadata else None)
    return ClickSigning(start.encode(), tail, mac, tuple(mark.encode() for mark in marks))


def _signed_tail(metadata: dict[str, Any] | None) -> bytes:
    """ClickSigning.tail for ``metadata``; TypeError or ValueError for metadata no link can carry."""
    return b',"m":' + json_bytes(metadata) + b"}" if metadata else _NO_METADATA_TAIL


# The methods whose results the compiled rewriter reproduces when it signs a link itself.
_SIGNING_METHODS = ("click_url", "click_path", "clicks_for", "is_tracking_url", "_click_maker", "_make_page_click")


def _own_methods(obj: Any, cls: type, names: tuple[str, ...]) -> bool:
    """Whether ``obj`` makes links with ``cls``'s own methods: none overridden by a subclass or on the instance."""
    attributes = getattr(obj, "__dict__", {})
    return all(getattr(type(obj), name, None) is getattr(cls, name) and name not in attributes for name in names)


class LinkSource(Protocol):
    """What the HTML rewriter needs to make links."""

    def click_url(self, url: str, metadata: Mapping[str, Any] | None = None) -> str: ...

    def open_url(self, metadata: Mapping[str, Any] | None = None) -> str: ...

    def is_tracking_url(self, url: str) -> bool: ...


def _expires_at(expires_in: float | datetime.timedelta | None) -> int | None:
    if expires_in is None:
        return None
    seconds = expires_in.total_seconds() if isinstance(expires_in, datetime.timedelta) else expires_in
    try:
        if math.isfinite(seconds) and seconds > 0:
            return math.ceil(time.time() + seconds)  # rounded up: a link never expires before its time
    except OverflowError:  # an int past any float
        pass
    raise ValueError(f"expires_in must be a positive number of seconds, got {str(expires_in)[:40]}")


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """Exact host names, or ``.example.org`` / ``*.example.org`` for a domain and its subdomains (the host
    as the redirect will spell it)."""
    try:
        host = ascii_host(url).lower().rstrip(".")
    except BadURL:
        return False
    for entry in map(str.lower, allowed):
        if entry.startswith(("*.", ".")):
            domain = entry.lstrip("*.")
            if host == domain or host.endswith("." + domain):
                return True
        elif host == entry:
            return True
    return False


class TrackingLinks:
    """Makes and reads tracking links for one configuration; safe to share between threads."""

    def __init__(self, settings: Settings, *, base_url: str | None = None) -> None:
        self.settings = settings
        # Links in emails need an absolute origin; pages use their own (see for_page).
        self.base_url = (base_url or settings.base_url or "").rstrip("/") or None
        self.prefix = settings.path_prefix
        self._prefix_slash = self.prefix + "/"
        self._click_prefix = self.prefix + "/c/"
        self._open_prefix = self.prefix + "/o/"
        encryption_keys = tuple(k.strip() for k in (settings.encryption_key or "").split(",") if k.strip())
        self._codec = TokenCodec(settings.signing_keys, encryption_keys=encryption_keys)
        self._legacy = LegacyPytrackingCodec(settings.legacy_pytracking_key) if settings.legacy_pytracking else None
        self._verifying = {purpose: self._codec.verifying_states(purpose) for purpose in PURPOSES}
        self._marks = self._tracking_marks(self.base_url)
        # lru_cache is bounded and thread-safe; keyed by (base, destination), holding only public links.
        self._page_click = functools.lru_cache(maxsize=PAGE_LINK_CACHE_SIZE)(self._make_page_click)
        # What sign_click needs for links made here (None: the Python code makes every link).
        plain = self.click_signing(None) if self.base_url is not None else None
        self._plain_signing = None if plain is None else (plain.start, plain.mac)

    # --- making links ---------------------------------------------------------------------------------
    def click_url(
        self,
        url: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        expires_in: float | datetime.timedelta | None = None,
    ) -> str:
        """A link that records a click and redirects to ``url`` (``BadURL`` for unsafe destinations)."""
        plain = self._plain_signing
        if (
            plain is not None
            and expires_in is None
            and sign_click is not None
            and plain_url is not None
            and (metadata is None or type(metadata) is dict)  # read twice below when C declines: no iterators
            and type(url) is str
            and plain_url(url)  # check_url passes it: the metadata's faults are the first either way
        ):
            try:
                tail = _signed_tail(metadata)
            except (TypeError, ValueError):
                tail = b""  # metadata that cannot be a link's: the code below says so, after the URL's faults
            link = sign_click(url, (plain[0], tail, plain[1], ())) if tail else None
            if link is not None:
                return link
        return self._require_base() + self.click_path(url, metadata, expires_in=expires_in)

    def open_url(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        expires_in: float | datetime.timedelta | None = None,
        title: str | None = None,
    ) -> str:
        """The URL of a 1x1 pixel that records an open (for emails); ``title``, the email's (its <title>,
        often the subject: what rewrite_html(..., page_title=True) passes), goes with the open's event."""
        return self._require_base() + self.open_path(metadata, expires_in=expires_in, title=title)

    def click_path(
        self,
        url: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        expires_in: float | datetime.timedelta | None = None,
    ) -> str:
        """Like ``click_url`` without the origin (``/_tg/c/...``)."""
        data: dict[str, Any] = {"u": check_url(url)}
        if metadata:
            data["m"] = dict(metadata)
        token = self._codec.dumps(data, "click", expires_at=_expires_at(expires_in))
        return self._click_prefix + token

    def open_path(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        expires_in: float | datetime.timedelta | None = None,
        page_url: str | None = None,
        title: str | None = None,
        referrer: str | None = None,
    ) -> str:
        """Like ``open_url`` without the origin; with ``page_url`` the pixel records a page view (of a page
        titled ``title``, reached from ``referrer``)."""
        data: dict[str, Any] = {}
        if page_url is not None:
            data["u"] = check_url(page_url)
        if title:
            data["t"] = title
        if page_url is not None and referrer:
            data["r"] = referrer
        if metadata:
            data["m"] = dict(metadata)
        token = self._codec.dumps(data, "open", expires_at=_expires_at(expires_in))
        return self._open_prefix + token

    def clicks_for(self, metadata: Mapping[str, Any] | None = None) -> Callable[[str], str]:
        """``click_url`` with the metadata fixed and encoded once: for the many links of one email.

        ``links.clicks_for(m)(url) == links.click_url(url, m)``.
        """
        if self.base_url is None or not metadata:
            return functools.partial(self.click_url, metadata=metadata)
        return self._click_maker(self.base_url + self._click_prefix, metadata)

    def _click_maker(self, start: str, metadata: Mapping[str, Any]) -> Callable[[str], str]:
        # The payload is {"u": url, "m": metadata} in that order, exactly as click_path encodes it.
        tail = ',"m":' + json_text(dict(metadata)) + "}"
        sign = self._codec.dumps_json

        def click_url(url: str) -> str:
            payload = '{"u":' + encode_string(check_url(url)) + tail
            try:
                raw = payload.encode()
            except UnicodeEncodeError:
                raise BadURL(url, "contains unpaired surrogate characters") from None
            return start + sign(raw, "click")

        return click_url

    def click_signing(self, metadata: Mapping[str, Any] | None = None) -> ClickSigning | None:
        """For the compiled rewriter: how ``clicks_for(metadata)`` signs plain links (None: it cannot)."""
        if self.base_url is None or not _own_methods(self, TrackingLinks, _SIGNING_METHODS):
            return None  # (a subclass that tracks differently is asked for each link)
        return _click_signing(self._codec, self.base_url + self._click_prefix, metadata, self._marks)

    def for_page(self, page_url: str, base_url: str, *, referrer: str | None = None) -> PageLinks:
        """A cheap view for one web page: click links without a visitor and the page-view pixel (which
        carries ``referrer``, the page request's Referer: the pixel's own request names the page itself)."""
        return PageLinks(self, page_url, base_url, referrer)

    def is_tracking_url(self, url: str) -> bool:
        """True for our tracking paths and for URLs under the prefix at our base URL."""
        return url.startswith(self._marks)

    def _tracking_marks(self, base_url: str | None) -> tuple[str, ...]:
        marks = [self.prefix + "/"]
        if base_url:
            marks.append(base_url + self.prefix + "/")
            base_path = urlsplit(base_url).path.rstrip("/")
            if base_path:
                marks.append(base_path + self.prefix + "/")
        return tuple(marks)

    def _require_base(self) -> str:
        if self.base_url is None:
            raise ConfigError(
                "TRACKGATE_BASE_URL", None, "links for emails need an absolute origin, like https://example.org"
            )
        return self.base_url

    def _make_page_click(self, base: str, url: str) -> str:
        return base + self.click_path(url)

    # --- reading links --------------------------------------------------------------------------------
    def decode(self, url_or_path: str, request_data: Mapping[str, Any] | None = None) -> TrackingResult:
        """The result for a tracking URL, a path under the prefix, or a bare token.

        Raises only ``BadToken``: ``TokenExpired`` (its ``payload`` is the TrackingResult) and
        ``ForeignToken`` among others.
        """
        if not isinstance(url_or_path, str):
            raise BadToken("not a string")
        # Tokens hold no "/", "?" or "#", so the last "{prefix}/" of the URL or path starts ours.
        path = url_or_path.partition("#")[0].partition("?")[0].rstrip("/")
        at = path.rfind(self._prefix_slash)
        if at >= 0:
            segment, _, token = path[at + len(self.prefix) + 1 :].partition("/")
            purpose = _SEGMENT_KIND.get(segment)
            if purpose is None or not token or "/" in token:
                raise BadToken(f"not a tracking path: {url_or_path[:80]!r}")
            return self.decode_token(token, purpose, request_data)
        try:
            return self.decode_token(path, "click", request_data)
        except TokenExpired:
            raise
        except BadToken as refused:
            opened = self.decode_token(path, "open", request_data)
            if opened.legacy and opened.tracked_url is not None:
                raise refused from None  # a pytracking click link (it names a destination) that was refused
            return opened

    def decode_token(
        self,
        token: str,
        purpose: Purpose,
        request_data: Mapping[str, Any] | None = None,
        *,
        visitor: str | None = None,
    ) -> TrackingResult:
        """The result for the token part of a link; see ``decode``."""
        verified: dict[str, Any] | None = None
        states = self._verifying.get(purpose) if type(token) is str else None
        if states is not None and read_token is not None:
            read = read_token(token, states, scan_json, purpose == "click")
            if type(read) is tuple:  # the fields _result would take from the token
                return self._finished(purpose, read, request_data, visitor, False)
            if type(read) is dict:  # authentic, read, not yet checked: not verified and parsed again below
                verified = read
            elif read is False:  # every key tried (a token with a signature is no legacy link either)
                raise foreign(purpose)
        try:
            data = self._codec.loads(token, purpose) if verified is None else self._codec.unexpired(verified)
        except TokenExpired as expired:
            result = self._result(expired.payload, purpose, request_data, visitor, legacy=False)
            raise TokenExpired(expired.reason, payload=result) from None
        except BadToken:
            if self._legacy is None or "." in token:
                raise
            return self._legacy_result(token, purpose, request_data, visitor)
        return self._result(data, purpose, request_data, visitor, legacy=False)

    def _result(
        self,
        data: dict[str, Any],
        purpose: Purpose,
        request_data: Mapping[str, Any] | None,
        visitor: str | None,
        *,
        legacy: bool,
    ) -> TrackingResult:
        url = data.get("url" if legacy else "u")
        if legacy and type(url) is str and url.startswith("//"):
            url = "https:" + url  # pytracking tracked protocol-relative links; a browser resolves them so
        metadata = data.get("metadata" if legacy else "m") or {}
        if type(metadata) is not dict:
            raise BadToken("metadata is not an object")
        title = None if legacy else data.get("t")
        referrer = None if legacy else data.get("r")
        if (title is not None and type(title) is not str) or (referrer is not None and type(referrer) is not str):
            raise BadToken("title or referrer is not text")
        if url is not None:
            try:
                check_url(url)
            except BadURL as refused:
                raise BadToken(f"destination refused: {refused.reason}") from None
        if purpose == "click" and url is None:
            raise BadToken("click token without a destination")
        return self._finished(purpose, (url, metadata, title, referrer), request_data, visitor, legacy)

    def _finished(
        self,
        purpose: Purpose,
        fields: tuple[str | None, dict[str, Any], str | None, str | None],
        request_data: Mapping[str, Any] | None,
        visitor: str | None,
        legacy: bool,
    ) -> TrackingResult:
        """The result for a token's checked fields (destination, metadata, title: a page's or an email's, and
        referrer), with its kind, time and event id."""
        url, metadata, title, referrer = fields
        kind: TrackingKind = "click" if purpose == "click" else "open" if url is None or legacy else "pageview"
        now = time.time()
        return _new_result(
            (
                url,
                self.settings.webhook_url,
                metadata,
                request_data,
                int(now),
                kind,
                visitor,
                new_event_id(now),
                legacy,
                title,
                referrer if kind == "pageview" else None,
            )
        )

    def _legacy_result(
        self, token: str, purpose: Purpose, request_data: Mapping[str, Any] | None, visitor: str | None
    ) -> TrackingResult:
        assert self._legacy is not None
        data, authentic = self._legacy.loads(token)
        result = self._result(data, purpose, request_data, visitor, legacy=True)
        # Unsigned pytracking links can be forged: they may only lead to hosts the site names.
        if (
            purpose == "click"
            and not authentic
            and not host_allowed(result.tracked_url or "", self.settings.redirect_allowed_hosts)
        ):
            raise BadToken("unsigned pytracking link to a host not in TRACKGATE_REDIRECT_ALLOWED_HOSTS")
        return result


class PageLinks:
    """Links for one web page; made per request, cheap (the click links come from a shared cache)."""

    __slots__ = ("_base", "_links", "_marks", "page_url", "referrer")

    def __init__(self, links: TrackingLinks, page_url: str, base_url: str, referrer: str | None = None) -> None:
        self._links = links
        self.page_url = page_url
        self.referrer = referrer if referrer and len(referrer) <= MAX_REFERRER_CHARS else None
        self._base = base_url.rstrip("/")
        self._marks = links._tracking_marks(self._base)

    def click_url(self, url: str, metadata: Mapping[str, Any] | None = None) -> str:
        """A click link for a link on this page (relative links are resolved against the page)."""
        if not url[:8].lower().startswith(("http://", "https://")):
            url = urljoin(self.page_url, url)
        if metadata:
            return self._base + self._links.click_path(url, metadata)
        return self._links._page_click(self._base, url)

    def clicks_for(self, metadata: Mapping[str, Any] | None = None) -> Callable[[str], str]:
        """``click_url`` with the metadata fixed (and encoded once when there is any)."""
        if metadata:
            return self._links._click_maker(self._base + self._links._click_prefix, metadata)
        return self.click_url

    def click_signing(self, metadata: Mapping[str, Any] | None = None) -> ClickSigning | None:
        """For the compiled rewriter: how ``clicks_for(metadata)`` signs plain absolute links."""
        links = self._links
        if not _own_methods(self, PageLinks, ("click_url", "clicks_for", "is_tracking_url")) or not _own_methods(
            links, TrackingLinks, _SIGNING_METHODS
        ):
            return None
        return _click_signing(links._codec, self._base + links._click_prefix, metadata, self._marks)

    def open_url(self, metadata: Mapping[str, Any] | None = None, *, title: str | None = None) -> str:
        """The page-view pixel for this page (titled ``title``, as its page views will report).

        A pixel whose URL a server would refuse loses its page view: when everything does not fit, the
        referrer goes first, then the title, then the page's query.
        """
        page_path = self.page_url.partition("?")[0]
        for page, page_title, referrer in (
            (self.page_url, title, self.referrer),
            (self.page_url, title, None),
            (self.page_url, None, None),
            (page_path, None, None),
        ):
            if len(page) > MAX_URL_CHARS:
                continue  # a destination that long is refused; the page without its query may do
            url = self._base + self._links.open_path(metadata, page_url=page, title=page_title, referrer=referrer)
            if len(url) <= MAX_PIXEL_URL_CHARS:
                return url
        raise BadURL(self.page_url, "too long for a pixel's URL, even without its query")

    def is_tracking_url(self, url: str) -> bool:
        return url.startswith(self._marks)
