"""Tracking tokens: compact JSON, signed with HMAC-SHA256 or sealed with AES-GCM, purpose-bound, expiring.

    codec = TokenCodec(["newest-key", "older-key"])
    token = codec.dumps({"u": "https://example.org/"}, "click", expires_at=None)
    codec.loads(token, "click")      # -> {"u": "https://example.org/"}
    codec.loads(token, "open")       # ForeignToken: signed for another purpose

Signed tokens are exactly what ``itsdangerous.URLSafeSerializer(keys[::-1], salt="trackgate.click",
signer_kwargs={"digest_method": hashlib.sha256})`` produces and loads (compact JSON, zlib only where it
pays, marked by a leading "."), so itsdangerous's semantics hold: the purpose is the salt of the key
derivation, the first key signs, every key verifies, comparisons are constant-time. The fast path only
precomputes what itsdangerous derives on every call (the derived key's HMAC state, copied per token).

With encryption keys the token is ``base64url(nonce || AES-256-GCM(payload))`` with the purpose as
associated data; the AES key is HKDF-SHA256 of the configured key. Encrypted tokens hide the destination
and metadata from the recipient; signed ones only stop forgery.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from itsdangerous import Signer
from itsdangerous.encoding import want_bytes

from .errors import BadToken, ConfigError, ForeignToken, TokenExpired
from .fastjson import compact_encoder, loads

# Reading a plain signed token in C (_speedups.c), where it was built; tokens it does not read (compressed,
# forged, malformed) go through the Python code below, which says what is wrong.
unsign: Callable[[str, tuple[Any, ...]], bytes | bool | None] | None
try:
    from ._speedups import unsign
except ImportError:  # pragma: no cover
    unsign = None
# An HMAC-SHA-256 state over OpenSSL's SHA-256 directly, where _speedups was built with OpenSSL's headers.
compiled_mac: Callable[[bytes], _MacState] | None
try:
    from ._speedups import HmacSha256 as compiled_mac
except ImportError:  # pragma: no cover - depends on the build
    compiled_mac = None

try:  # the cryptography extra
    from cryptography.exceptions import InvalidTag
except ImportError:  # pragma: no cover - without the extra no cipher is ever made
    InvalidTag = ValueError  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

Purpose = Literal["click", "open"]
PURPOSES: tuple[Purpose, ...] = ("click", "open")
_FOREIGN = {purpose: f"signature does not match any key for {purpose} links" for purpose in PURPOSES}
SALT_PREFIX = "trackgate."

# Longer than any token we make (4096-char URL plus generous metadata); refuse before doing any work.
MAX_TOKEN_CHARS = 16384
# zlib is tried only past this size: below it the gain is a few characters and the cost dominates encoding.
_COMPRESS_FROM = 200
# A 512-byte window: payloads are short, and zlib's default 32 KiB window costs more to set up than to use.
_COMPRESS_WBITS = 9
_MAX_PAYLOAD_BYTES = 65536
_NONCE_BYTES = 12
_TAG_BYTES = 16
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_EXPIRES = "x"
_encode_json = compact_encoder(ensure_ascii=False, allow_nan=False)
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_b2a = binascii.b2a_base64


def base64_encode(data: bytes) -> bytes:
    """URL-safe base64 without padding (itsdangerous's ``base64_encode``, without its per-call overhead)."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE)


def _signature_text(digest: bytes) -> bytes:
    """base64_encode of a SHA-256 digest: 32 bytes always end in one padding character."""
    return _b2a(digest, newline=False)[:-1].translate(_TO_URLSAFE)


def _b64decode(text: bytes) -> bytes:
    try:
        return binascii.a2b_base64(text.translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))
    except binascii.Error:
        raise BadToken("not valid base64") from None


def foreign(purpose: Purpose) -> ForeignToken:
    """The error for a signed token that none of the keys signed for ``purpose``."""
    return ForeignToken(_FOREIGN[purpose])


def json_text(value: Any) -> str:
    """Compact JSON text as tokens hold it (``ValueError`` for NaN, lone surrogates, cycles)."""
    return json_bytes(value).decode()


def json_bytes(data: Any) -> bytes:
    """json_text's UTF-8, as a token's payload holds it."""
    try:
        return _encode_json(data).encode()
    except UnicodeEncodeError:
        raise ValueError("token data contains unpaired surrogate characters") from None
    except RecursionError:
        raise ValueError("token data is nested too deeply (or refers to itself)") from None


def _pack(raw: bytes) -> bytes:
    """Compact JSON as it is, or zlib of it (first byte 0x78, never "{") when that is shorter."""
    if len(raw) >= _COMPRESS_FROM:
        packed = zlib.compress(raw, 9, _COMPRESS_WBITS)
        if len(packed) < len(raw) - 1:
            return packed
    return raw


def _inflate(data: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, _MAX_PAYLOAD_BYTES)
    except zlib.error:
        raise BadToken("payload does not decompress") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise BadToken("payload too large or truncated")
    return raw


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = loads(raw.decode())
    except (ValueError, RecursionError):  # JSON, UTF-8 and absurd nesting errors
        raise BadToken("payload is not JSON") from None
    if not isinstance(data, dict):
        raise BadToken("payload is not a JSON object")
    return data


class _MacState(Protocol):
    def copy(self) -> _MacState: ...

    def update(self, msg: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


def _mac(secret_key: str, purpose: Purpose) -> _MacState:
    """HMAC state for one key and purpose, derived as itsdangerous's Signer derives it.

    _speedups' HmacSha256 when it was built (a copy is a struct copy; _speedups.c reads it without a call),
    else the OpenSSL state inside ``hmac.HMAC``: copying it is one C call, where the wrapper's copy() builds a
    Python object first (a quarter of a token's signing cost).
    """
    signer = Signer(secret_key, salt=SALT_PREFIX + purpose, digest_method=hashlib.sha256)
    key = signer.derive_key()
    if compiled_mac is not None:
        return compiled_mac(key)
    mac = hmac.new(key, digestmod=hashlib.sha256)
    inner = getattr(mac, "_hmac", None)
    return inner if inner is not None else mac


def _aes_key(secret: str) -> AESGCM:
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise ConfigError(
            "TRACKGATE_ENCRYPTION_KEY", "****", "needs the cryptography extra: pip install 'trackgate[cryptography]'"
        ) from None
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"trackgate.links.aes-256-gcm").derive(
        want_bytes(secret)
    )
    return AESGCM(key)


class TokenCodec:
    """Makes and checks tokens; keys newest first. Immutable after construction, so shareable by threads."""

    __slots__ = ("_aads", "_ciphers", "_macs")

    def __init__(self, secret_keys: Sequence[str], *, encryption_keys: Sequence[str] = ()) -> None:
        if not secret_keys:
            raise ConfigError("TRACKGATE_SECRET_KEY", None, "at least one signing key is needed")
        self._macs: dict[Purpose, tuple[_MacState, ...]] = {
            purpose: tuple(_mac(key, purpose) for key in secret_keys) for purpose in PURPOSES
        }
        self._ciphers: tuple[AESGCM, ...] = tuple(_aes_key(key) for key in encryption_keys)
        self._aads: dict[Purpose, bytes] = {purpose: (SALT_PREFIX + purpose).encode() for purpose in PURPOSES}

    @property
    def encrypts(self) -> bool:
        return bool(self._ciphers)

    def signing_state(self, purpose: Purpose) -> Any:
        """The newest key's HMAC state for ``purpose`` (copy it, update the copy with the token's body,
        take its digest), for code that signs plain tokens itself (_speedups.c); None when tokens are
        encrypted."""
        return None if self._ciphers else self._macs_for(purpose)[0]

    def verifying_states(self, purpose: Purpose) -> tuple[Any, ...]:
        """The HMAC states that verify signed tokens for ``purpose``, newest key first (for _speedups.c)."""
        return self._macs_for(purpose)

    def dumps(self, data: Mapping[str, Any], purpose: Purpose, *, expires_at: int | None = None) -> str:
        """A URL-safe token for ``data`` (a JSON-serialisable mapping); ``TypeError`` if it is not one, and
        ``ValueError`` if it holds the key the token's expiry is kept under, or is too large to be read back."""
        if _EXPIRES in data:
            raise ValueError(f"the key {_EXPIRES!r} is reserved for the token's expiry")
        if expires_at is not None:
            data = {**data, _EXPIRES: int(expires_at)}
        return self.dumps_json(json_bytes(data), purpose)

    def dumps_json(self, raw: bytes, purpose: Purpose) -> str:
        """The token for an already encoded payload: the compact JSON ``dumps`` would have made.

        Lets a caller that makes many tokens sharing a part (an email's metadata on every link) encode
        that part once.
        """
        macs = self._macs_for(purpose)
        if len(raw) > _MAX_PAYLOAD_BYTES:  # loads() would refuse it: a link that could never be read back
            raise ValueError(f"a link's data must be at most {_MAX_PAYLOAD_BYTES} bytes of JSON, not {len(raw)}")
        if self._ciphers:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = self._ciphers[0].encrypt(nonce, _pack(raw), self._aads[purpose])
            token = base64_encode(nonce + sealed).decode()
        else:
            # A leading "." marks a zlib payload, as in itsdangerous's URLSafeSerializer.
            packed = _pack(raw)
            body = base64_encode(packed) if packed[:1] == b"{" else b"." + base64_encode(packed)
            mac = macs[0].copy()
            mac.update(body)
            token = (body + b"." + _signature_text(mac.digest())).decode()
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError(f"a link's token would be {len(token)} characters, past the {MAX_TOKEN_CHARS} read back")
        return token

    def loads(self, token: str, purpose: Purpose, *, now: float | None = None) -> dict[str, Any]:
        """The data of an authentic token for ``purpose``; raises only ``BadToken`` and its subclasses (and
        ``ValueError`` for a purpose that is not one of ``PURPOSES``)."""
        macs = self._macs_for(purpose)
        if not isinstance(token, str) or not token:
            raise BadToken("empty token")
        if len(token) > MAX_TOKEN_CHARS:
            raise BadToken("token too long")
        if "." in token:
            raw = unsign(token, macs) if unsign is not None else None
            if raw is False:  # C tried every key: a forgery is not worth trying them all again
                raise foreign(purpose)
            return self.unexpired(_parse_json(raw if type(raw) is bytes else self._unsign(token, purpose)), now)
        if self._ciphers:
            return self.unexpired(_parse_json(self._unseal(token, purpose)), now)
        raise BadToken("not a signed token")

    @staticmethod
    def unexpired(data: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """An authentic token's data without its expiry; ``TokenExpired`` past it, ``BadToken`` when it is
        malformed."""
        expires = data.pop(_EXPIRES, None)
        if expires is None:
            return data
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise BadToken("malformed expiry")
        if expires <= (time.time() if now is None else now):
            raise TokenExpired(f"token expired at {expires}", payload=data)
        return data

    def _macs_for(self, purpose: Purpose) -> tuple[_MacState, ...]:
        macs = self._macs.get(purpose)
        if macs is None:  # the caller's mistake, not the token's: not a BadToken
            raise ValueError(f"a token's purpose is one of {PURPOSES}, not {purpose!r}")
        return macs

    def _unsign(self, token: str, purpose: Purpose) -> bytes:
        body, _, signature = token.rpartition(".")
        if not body or not signature:
            raise BadToken("missing signature")
        try:
            body_bytes = body.encode("ascii")
            signature_bytes = signature.encode("ascii")
        except UnicodeEncodeError:
            raise BadToken("token is not ASCII") from None
        # Compare the base64 text, not decoded bytes: base64 decoding forgives stray and low-bit changes,
        # and a token that differs in any character must not verify.
        for state in self._macs_for(purpose):
            mac = state.copy()
            mac.update(body_bytes)
            if hmac.compare_digest(_signature_text(mac.digest()), signature_bytes):
                break
        else:
            raise foreign(purpose)
        compressed = body_bytes[:1] == b"."
        packed = _b64decode(body_bytes[1:] if compressed else body_bytes)
        return _inflate(packed) if compressed else packed

    def _unseal(self, token: str, purpose: Purpose) -> bytes:
        if not _B64URL.fullmatch(token):
            raise BadToken("token is not URL-safe base64")
        raw = _b64decode(token.encode("ascii"))
        # Only the canonical spelling is accepted, so no two strings name the same token.
        if base64_encode(raw).decode() != token:
            raise BadToken("token is not canonical base64")
        if len(raw) < _NONCE_BYTES + _TAG_BYTES + 1:
            raise BadToken("token too short")
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                packed = cipher.decrypt(nonce, sealed, self._aads[purpose])
            except InvalidTag:
                continue
            return packed if packed[:1] == b"{" else _inflate(packed)
        raise ForeignToken(f"token does not open with any encryption key for {purpose} links")


class LegacyPytrackingCodec:
    """Reads pytracking 0.2 tokens: unsigned base64 JSON, or Fernet when the old key is given.

    Plain tokens are not authentic (anyone can make one); the caller decides what they may do.
    """

    __slots__ = ("_fernet", "_max_chars")

    def __init__(self, fernet_key: str | None = None, *, max_chars: int | None = MAX_TOKEN_CHARS) -> None:
        # max_chars: the longest token read (None: any, as pytracking itself reads them); the endpoints keep
        # the bound every token they read has.
        self._max_chars = max_chars
        self._fernet: Any = None
        if fernet_key:
            try:
                from cryptography.fernet import Fernet
            except ImportError:
                raise ConfigError("TRACKGATE_LEGACY_PYTRACKING_KEY", "****", "needs the cryptography extra") from None
            try:
                self._fernet = Fernet(fernet_key)
            except ValueError:
                raise ConfigError(
                    "TRACKGATE_LEGACY_PYTRACKING_KEY", "****", "expected a Fernet key (32 url-safe base64 bytes)"
                ) from None

    def loads(self, token: str) -> tuple[dict[str, Any], bool]:
        """(data, authentic): authentic is True only for a Fernet token that opened with the old key."""
        if not isinstance(token, str) or not token or (self._max_chars is not None and len(token) > self._max_chars):
            raise BadToken("not a pytracking token")
        if self._fernet is not None:
            from cryptography.fernet import InvalidToken

            try:
                return _parse_json(self._fernet.decrypt(token.encode("ascii", "replace"))), True
            except InvalidToken:
                pass
        stripped = token.rstrip("=")
        if not _B64URL.fullmatch(stripped):
            raise BadToken("not a pytracking token")
        return _parse_json(_b64decode(stripped.encode("ascii"))), False
