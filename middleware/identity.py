"""Visitor identity: read the visitor code (cookie or query parameter), validate it, issue a new one,
decide consent, and say whether a Set-Cookie is due.

A code is 16 characters of ``[a-z0-9]`` from ``secrets``; one read back from a client is accepted when it
is 1-255 characters of ``[A-Za-z0-9._:-]`` — nothing that could split a header or smuggle a cookie
attribute. Anything else is ignored and a fresh code issued.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from starlette.requests import cookie_parser
from werkzeug.http import dump_cookie, parse_cookie

from .batches import Batches
from .consent import ConsentCookie
from .settings import Settings

_CODE_LENGTH = 16
_DIGITS = b"0123456789abcdefghijklmnopqrstuvwxyz"
# Random bytes below 252 (= 7 * 36) map evenly onto the 36 digits; the rest are dropped, so no digit is favoured.
_BYTE_TO_DIGIT = bytes(_DIGITS[b % 36] if b < 252 else 0 for b in range(256))
_UNEVEN_BYTES = bytes(range(252, 256))
_VALID_CODE = re.compile(r"[A-Za-z0-9._:-]{1,255}\Z")
# Cookie headers remembered (by each of two caches), and the longest one remembered: at most about 8 MB in
# all, whatever clients send.
COOKIE_CACHE_SIZE = 1024
COOKIE_CACHE_MAX_CHARS = 4096
class Visitor(NamedTuple):
    """Who made this request. A named tuple: one is made per request, and it is the cheapest frozen record."""

    code: str
    is_new: bool  # the code was issued by this request
    consent: bool  # False: anonymous, nothing is stored on the client and the code lives for one request


# Visitor(code, True, True) as tuple.__new__ makes it, for every first visit: the named tuple's own __new__ is
# a Python function.
_first_visitor: Callable[[tuple[str, bool, bool]], Visitor] = functools.partial(tuple.__new__, Visitor)


def new_code() -> str:
    """16 characters of [a-z0-9] from the operating system's CSPRNG (what ``secrets`` draws from).

    Drawn 64 at a time (see batches.py), on the path of every first visit.
    """
    return _codes.take()


def _draw_digits(needed: int) -> bytes:
    digits = b""
    while len(digits) < needed:
        digits += os.urandom(needed - len(digits) + needed // 32 + 4).translate(_BYTE_TO_DIGIT, _UNEVEN_BYTES)
    return digits[:needed]


def _draw_codes() -> list[str]:
    needed = _BATCH * _CODE_LENGTH
    text = _draw_digits(needed).decode("ascii")
    return [text[i : i + _CODE_LENGTH] for i in range(0, needed, _CODE_LENGTH)]


_BATCH = 64
_codes = Batches(_draw_codes)

# The digits of the codes the compiled start draws (_asgi_send.c), 16 a code from the end: it takes them and
# cuts them off with no Python code run in between, so that no two threads take the same, and it makes no
# string it does not hand out. Emptied in a forked child, as the batches are.
code_digits = bytearray()
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=code_digits.clear)


def refill_code_digits() -> None:
    """Tops up ``code_digits`` (compiled code calls it when fewer than 16 are left)."""
    code_digits.extend(_draw_digits(_BATCH * _CODE_LENGTH))


def is_valid_code(code: str) -> bool:
    return _VALID_CODE.match(code) is not None


# What reading a Cookie header gives instead of a code when it holds two different ones (never a valid code).
_TWO_CODES = ""


class VisitorState:
    """Per-request: who the visitor is and what the response must tell the client's cookie jar."""

    __slots__ = ("_cookie_code", "_known_code", "cookie_action", "visitor")

    def __init__(
        self, visitor: Visitor, cookie_action: str | None, known_code: str | None, cookie_code: str | None = None
    ) -> None:
        self.visitor = visitor
        self.cookie_action = cookie_action  # None, "store", "delete" or "unshadow"
        # A valid code the client sent (its cookie's, or the query parameter's), kept for a later grant.
        self._known_code = known_code
        self._cookie_code = cookie_code  # the code in the client's visitor cookie, when it sent one

    @staticmethod
    def slots() -> tuple[Any, ...]:
        """The member descriptors ``__init__`` sets, in the order of its arguments: compiled code makes a
        VisitorState with them without calling ``__init__`` (keep the two in step)."""
        names = ("visitor", "cookie_action", "_known_code", "_cookie_code")
        return tuple(VisitorState.__dict__[name] for name in names)

    def set_consent(self, granted: bool) -> None:
        if granted and not self.visitor.consent:
            code = self._known_code or self.visitor.code
            self.visitor = Visitor(code=code, is_new=self._known_code is None, consent=True)
            # Stored unless the cookie already holds it (a code from the query parameter is stored, as
            # it would have been with consent from the start).
            self.cookie_action = None if code == self._cookie_code else "store"
        elif not granted:
            had_consent = self.visitor.consent
            if had_consent:
                self.visitor = Visitor(code=new_code(), is_new=True, consent=False)
            # A refusal deletes the cookie whenever the client holds one, also when this request already had
            # no consent (under Sec-GPC): the next request without it must not be tracked by that cookie.
            if had_consent or self._cookie_code is not None:
                self.cookie_action = "delete"
            self._known_code = self._cookie_code = None


class Identity:
    """Made once per middleware from the settings; ``resolve`` runs once per request."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cookie_name = settings.cookie_name
        self._param = settings.visitor_param
        self._param_marker = settings.visitor_param + "="
        self._consent_cookie = ConsentCookie(settings.consent_cookie) if settings.consent_cookie else None
        consent_name = self._consent_cookie.name if self._consent_cookie is not None else None
        self._interesting = tuple(n for n in (self._cookie_name, consent_name) if n)
        self._only_interesting = self._interesting[0] if len(self._interesting) == 1 else None
        self._suffixes: dict[bool, str] = {}
        self._implicit = settings.consent == "implicit"
        # Consent that nothing in a request can take away but Sec-GPC (the default set-up): decided without
        # reading anything else.
        self._always_consents = self._implicit and self._consent_cookie is None
        # A returning visitor sends the same Cookie header request after request: read each one once (a
        # consent manager's cookie, unquoted and searched, included). Bounded and thread-safe; it holds only
        # what clients sent and what it says, never a decision.
        self._read_cookies = functools.lru_cache(maxsize=COOKIE_CACHE_SIZE)(self._read_cookie_header)
        # The same for the commonest request of all, a returning visitor in the default set-up: its Visitor.
        self._returning = functools.lru_cache(maxsize=COOKIE_CACHE_SIZE)(self._returning_visitor)

    # What the ASGI shell's compiled start (_asgi_send.c) needs to decide the visits resolve() decides
    # without reading anything: the same conditions, read from here.
    @property
    def visitor_param(self) -> str:
        return self._param

    @property
    def implicit(self) -> bool:
        return self._implicit

    @property
    def always_consents(self) -> bool:
        return self._always_consents

    @property
    def returning_visitor(self) -> Callable[[str], Visitor | None]:
        """The Visitor of a returning visit's Cookie header (see resolve): one look-up in a bounded cache."""
        return self._returning

    def resolve(self, cookie_header: str | None, query_string: str, gpc: str | None) -> VisitorState:
        if not cookie_header and gpc is None and self._implicit and self._param_marker not in query_string:
            return VisitorState(_first_visitor((new_code(), True, True)), "store", None)  # nothing to read
        if cookie_header and gpc is None and self._always_consents and not query_string:
            returning = self._returning(cookie_header) if len(cookie_header) <= COOKIE_CACHE_MAX_CHARS else None
            if returning is not None:  # a returning visit: one look-up
                return VisitorState(returning, None, returning.code, returning.code)
        said = known = None
        if cookie_header and (
            self._only_interesting in cookie_header
            if self._only_interesting is not None
            else any(name in cookie_header for name in self._interesting)
        ):
            if len(cookie_header) <= COOKIE_CACHE_MAX_CHARS:
                known, said = self._read_cookies(cookie_header)
            else:
                known, said = self._read_cookie_header(cookie_header)
        # Two different codes: the client holds a copy that ours cannot overwrite (most often a host-only
        # cookie left from before TRACKGATE_COOKIE_DOMAIN was set). Neither is trusted; the response clears
        # the host-only copy, so that the next request sends one code instead of getting a new one forever.
        shadowed = known == _TWO_CODES
        if shadowed:
            known = None
        from_query = self._code_from_query(query_string) if query_string else None
        # (Two copies of the visitor cookie are still a visitor cookie held: with required consent, a visitor
        # who had consented before TRACKGATE_COOKIE_DOMAIN was set must not become anonymous for good.)
        consents = (self._always_consents and gpc is None) or self._consents(
            said, gpc, holds_code=known is not None or shadowed
        )
        if not consents:
            # A refusal in the consent cookie clears the visitor cookie, as set_consent(request, False) does:
            # it would otherwise track the visitor again once the consent cookie is gone.
            # (Two copies: the host-only one goes first; the next request's refusal deletes the other.)
            action = None if consents is not None else "unshadow" if shadowed else "delete" if known else None
            return VisitorState(Visitor(new_code(), True, False), action, from_query or known, known)
        if from_query is not None:
            action = None if from_query == known else "store"
            return VisitorState(Visitor(from_query, False, True), action, from_query, known)
        if known is not None:
            return VisitorState(Visitor(known, False, True), None, known, known)
        return VisitorState(Visitor(new_code(), True, True), "unshadow" if shadowed else "store", None)

    def set_cookie_header(self, state: VisitorState, secure_request: bool) -> str | None:
        if state.cookie_action is None:
            return None
        if state.cookie_action == "delete":
            return self._dump("", max_age=0, secure=self._secure(secure_request))
        if state.cookie_action == "unshadow":
            return self._dump("", max_age=0, secure=self._secure(secure_request), host_only=True)
        return self._cookie_name + "=" + state.visitor.code + self.cookie_suffix(secure_request)

    def cookie_suffix(self, secure_request: bool) -> str:
        """What follows the code in a stored visitor cookie: its attributes, as werkzeug writes them.

        Codes are validated to need no quoting, so the attribute string is made once per kind of request
        (https or not) and reused: a new visitor on every request (a load test, a crawler) stays cheap.
        """
        suffix = self._suffixes.get(secure_request)
        if suffix is None:
            cookie = self._dump("x", max_age=self._settings.cookie_max_age, secure=self._secure(secure_request))
            suffix = self._suffixes[secure_request] = cookie[len(self._cookie_name) + 2 :]
        return suffix

    def _secure(self, secure_request: bool) -> bool:
        setting = self._settings.cookie_secure
        return secure_request if setting is None else setting

    def _dump(self, value: str, *, max_age: int, secure: bool, host_only: bool = False) -> str:
        """The Set-Cookie value; ``host_only`` names the cookie without a Domain whatever the configured one."""
        settings = self._settings
        return dump_cookie(
            self._cookie_name,
            value,
            max_age=max_age,
            path="/",
            domain=None if host_only else settings.cookie_domain,
            secure=secure or settings.cookie_samesite == "none",
            httponly=settings.cookie_httponly,
            samesite=settings.cookie_samesite.capitalize(),
            sync_expires=False,  # Max-Age alone: every browser in use honours it
        )

    def _returning_visitor(self, header: str) -> Visitor | None:
        """The visitor a Cookie header names when consent is implicit and nothing else in the request counts
        (no query string, no Sec-GPC); None for any other header (none, or two different codes)."""
        if self._cookie_name not in header:
            return None
        known = self._read_cookies(header)[0]
        return Visitor(known, False, True) if known else None

    def _read_cookie_header(self, header: str) -> tuple[str | None, bool | None]:
        """The valid visitor code in a Cookie header, and what its consent cookie says (None: nothing)."""
        cookies = cookie_parser(header)
        said = self._consent_said(header, cookies)
        code = cookies.get(self._cookie_name)
        if code is None or not is_valid_code(code):
            return None, said
        # Two different codes under one name (a parent-domain cookie, an injection attempt): trust neither.
        # The fast parser keeps only the last value; werkzeug's keeps them all.
        if header.count(self._cookie_name + "=") > 1:
            try:
                values = set(parse_cookie(header).getlist(self._cookie_name))
            except UnicodeError:  # werkzeug reads values as UTF-8 (and a str header as latin-1): another is there
                return _TWO_CODES, said
            if len(values) != 1:
                return _TWO_CODES, said
        return code, said

    def _consent_said(self, header: str, cookies: Mapping[str, str]) -> bool | None:
        consent = self._consent_cookie
        value = None if consent is None else cookies.get(consent.name)
        if consent is None or value is None:
            return None
        if header.count(consent.name + "=") > 1:
            # The fast parser keeps the last of two consent cookies (a parent domain's and the site's): a
            # refusal in either must win over a grant in the other.
            try:
                answers = parse_cookie(header).getlist(consent.name)
            except UnicodeError:
                answers = []
            if any(consent.decide(answer) is False for answer in answers):
                return False
        return consent.decide(value)

    def _code_from_query(self, query_string: str) -> str | None:
        if self._param_marker not in query_string:
            return None
        values = parse_qs(query_string, keep_blank_values=True).get(self._param, [])
        if len(set(values)) != 1:
            return None
        return values[0] if is_valid_code(values[0]) else None

    def _consents(self, said: bool | None, gpc: str | None, *, holds_code: bool) -> bool | None:
        """True: consent. False: none (Sec-GPC, or nothing grants it). None: none, refused by the consent
        cookie (``said``: what it says)."""
        settings = self._settings
        if settings.respect_gpc and gpc is not None and gpc.strip() == "1":
            return False
        if said is not None:
            return True if said else None
        if settings.consent == "implicit":
            return True
        # Required consent without a consent cookie: the visitor cookie itself is only ever stored after a
        # grant, so holding one means consent was given. With one, only it grants: a visitor cookie may be
        # older than the consent manager (stored while consent was implicit), or outlive its answer.
        return holds_code and self._consent_cookie is None
