"""Settings: constructor keywords, else ``TRACKGATE_<FIELD>`` environment variables, else defaults.

    settings = Settings()                         # environment + defaults
    settings = Settings(cookie_name="vid")        # a keyword beats the environment
    settings = Settings.from_environ({"TRACKGATE_CONSENT": "required"})   # tests

Every value is parsed strictly when the object is made; a bad one raises ``ConfigError`` naming the
variable (``TRACKGATE_COOKIE_MAX_AGE``) or the keyword, with secrets masked.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Literal

from .errors import ConfigError

logger = logging.getLogger("trackgate")

ENV_PREFIX = "TRACKGATE_"
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
# URL-unreserved characters: the path prefix and the visitor parameter go into links as they are, unquoted.
_UNRESERVED = r"[A-Za-z0-9._~-]+"
_PATH_PREFIX = re.compile(rf"(?:/{_UNRESERVED})+")
_QUERY_NAME = re.compile(_UNRESERVED)
# A cookie name is an RFC 6265 token; a consent cookie may name the value that grants (cookie octets), or the
# category of a consent manager's cookie that must be granted (":" is no token character: never a name's).
_COOKIE_NAME_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_COOKIE_NAME = re.compile(_COOKIE_NAME_CHARS)
_CONSENT_COOKIE = re.compile(
    _COOKIE_NAME_CHARS + r"(?:=[!#$%&'()*+./:<>?@\[\]^_`{|}~0-9A-Za-z-]+|:[A-Za-z0-9_.-]+)?"
)
# Letters of any script: werkzeug writes an internationalised domain in its IDNA spelling.
_DOMAIN = re.compile(r"\.?[\w-]+(?:\.[\w-]+)*")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError("expected one of true/false/1/0/yes/no/on/off")


def parse_duration(text: str) -> int:
    """Seconds from ``3600``, ``90m``, ``390d`` or ``2w``."""
    match = _DURATION.match(text.lower())
    if not match:
        raise ValueError("expected seconds or a number with s/m/h/d/w, like 390d")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_optional_bool(text: str) -> bool | None:
    return None if text.strip().lower() == "auto" else parse_bool(text)


def _parse_optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _parse_optional_str(text: str) -> str | None:
    # Stripped: a trailing space from a .env file or a newline from a mounted secret would go into every link.
    return text.strip() or None


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return word

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        number = int(text)
        if not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number

    return parse


def _positive_float(text: str) -> float:
    number = float(text)
    if number < 0:
        raise ValueError("expected a number >= 0")
    return number


def _option(default: Any, parse: Callable[[str], Any], *, secret: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"parse": parse, "secret": secret})


# Generated once per process so that every Settings object of a process signs with the same fallback key.
_FALLBACK_KEY = secrets.token_urlsafe(32)


def without_credentials(url: str) -> str:
    """A URL as it may be shown: a password in it, and its query's values (tokens ride there), masked."""
    head, question, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority, slash, path = rest.partition("/")
    user_info, at, host = authority.rpartition("@")
    if at:  # a password, or a token given as the user name alone
        authority = (user_info.partition(":")[0] + ":****@" if ":" in user_info else "****@") + host
    if question:
        query = "&".join(part.partition("=")[0] + ("=****" if "=" in part else "") for part in query.split("&"))
    return f"{scheme}://{authority}{slash}{path}{question}{query}"


def _require_cryptography(variable: str) -> None:
    if importlib.util.find_spec("cryptography") is None:
        raise ConfigError(variable, "****", "needs the cryptography extra: pip install 'trackgate[cryptography]'")


@dataclasses.dataclass(frozen=True, init=False)
class Settings:
    # --- foundation -----------------------------------------------------------------------------------
    # Signing keys, newest first: all verify, the first signs (rotation without breaking sent links).
    secret_key: tuple[str, ...] = _option((), parse_list, secret=True)
    # "production" turns a missing secret key into a start-up error instead of a warning.
    env: str = _option("development", lambda value: value.strip().lower())
    # Public origin for links in emails; web pages default to the request's own origin.
    base_url: str | None = _option(None, _parse_optional_str)
    path_prefix: str = _option("/_tg", str.strip)
    cookie_name: str = _option("tg_vid", str.strip)
    cookie_domain: str | None = _option(None, _parse_optional_str)
    cookie_max_age: int = _option(395 * 86400, parse_duration)  # about 13 months
    # None means "auto": Secure when the request came over https.
    cookie_secure: bool | None = _option(None, _parse_optional_bool)
    cookie_samesite: Literal["lax", "strict", "none"] = _option("lax", _choice("lax", "strict", "none"))
    cookie_httponly: bool = _option(True, parse_bool)
    # Query parameter that carries a visitor code across domains (?tg_vid=...).
    visitor_param: str = _option("tg_vid", str.strip)
    consent: Literal["implicit", "required"] = _option("implicit", _choice("implicit", "required"))
    # "name" (any value but 0/false/no/off/denied grants) or "name=value" (that value grants).
    consent_cookie: str | None = _option(None, _parse_optional_str)
    respect_gpc: bool = _option(True, parse_bool)
    # How many proxies in front of us append to X-Forwarded-For; 0 trusts none (werkzeug ProxyFix x_for).
    trusted_proxies: int = _option(0, _int_range(0, 32))

    # --- tracking links and endpoints ----------------------------------------------------------------
    encryption_key: str | None = _option(None, _parse_optional_str, secret=True)
    # Bytes of the client IPv4 address zeroed before anything leaves the process (IPv6: 16*n bits more).
    anonymize_ip: int = _option(0, _int_range(0, 3))
    legacy_pytracking: bool = _option(False, parse_bool)
    legacy_pytracking_key: str | None = _option(None, _parse_optional_str, secret=True)
    redirect_allowed_hosts: tuple[str, ...] = _option((), parse_list)

    # --- HTML rewriting ------------------------------------------------------------------------------
    rewrite: Literal["outbound", "all", "off"] = _option("outbound", _choice("outbound", "all", "off"))
    pageview_pixel: bool = _option(True, parse_bool)

    # --- dispatch ------------------------------------------------------------------------------------
    sinks: tuple[str, ...] = _option(("store",), parse_list)
    shutdown_timeout: float = _option(5.0, _positive_float)
    spool_path: str | None = _option(None, _parse_optional_str)
    spool_sync: bool = _option(False, parse_bool)
    spool_max_mb: int = _option(1024, _int_range(1, 1_000_000))
    webhook_url: str | None = _option(None, _parse_optional_str)
    webhook_secret: str | None = _option(None, _parse_optional_str, secret=True)
    kissmetrics_key: str | None = _option(None, _parse_optional_str, secret=True)
    kissmetrics_url: str = _option("https://trk.kissmetrics.io", str.strip)
    matomo_url: str | None = _option(None, _parse_optional_str)
    matomo_site_id: int | None = _option(None, _parse_optional_int)
    matomo_token: str | None = _option(None, _parse_optional_str, secret=True)
    store_url: str | None = _option(None, _parse_optional_str, secret=True)

    def __init__(self, **overrides: Any) -> None:
        self._load(os.environ, overrides)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        settings = cls.__new__(cls)
        settings._load(environ, overrides)
        return settings

    def replace(self, **overrides: Any) -> Settings:
        """A copy with some fields changed (values parsed like keywords)."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Settings.from_environ({}, **{**current, **overrides})

    def _load(self, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise TypeError(f"Settings() got unknown keyword(s): {', '.join(unknown)}")
        for name, field in known.items():
            env_name = ENV_PREFIX + name.upper()
            if name in overrides:
                value = _coerce(name, field, overrides[name])
            elif env_name in environ:
                value = _parse(env_name, field, environ[env_name])
            else:
                value = field.default
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if not _PATH_PREFIX.fullmatch(self.path_prefix):
            raise ConfigError(
                "TRACKGATE_PATH_PREFIX",
                self.path_prefix,
                "a path like /_tg: starts with /, does not end with /, and holds only letters, digits and ._~-",
            )
        for variable, value, shape, what in (
            ("TRACKGATE_COOKIE_NAME", self.cookie_name, _COOKIE_NAME, "a cookie name (letters, digits, -_.)"),
            ("TRACKGATE_VISITOR_PARAM", self.visitor_param, _QUERY_NAME, "a query parameter (letters, digits, -_.~)"),
            ("TRACKGATE_COOKIE_DOMAIN", self.cookie_domain, _DOMAIN, "a domain like example.org or .example.org"),
            (
                "TRACKGATE_CONSENT_COOKIE",
                self.consent_cookie,
                _CONSENT_COOKIE,
                "a cookie name, name=value or name:category",
            ),
        ):
            # Each goes into a Set-Cookie header or a link as it is: a ";" or a space would break either.
            if value is not None and not shape.fullmatch(value):
                raise ConfigError(variable, value, f"expected {what}")
        if self.base_url is not None and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", self.base_url):
            raise ConfigError("TRACKGATE_BASE_URL", self.base_url, "expected an http(s) origin like https://x.org")
        if self.env == "production" and not self.secret_key:
            raise ConfigError("TRACKGATE_SECRET_KEY", None, "required when TRACKGATE_ENV=production")
        if self.cookie_samesite == "none" and self.cookie_secure is False:
            raise ConfigError("TRACKGATE_COOKIE_SAMESITE", "none", "SameSite=None needs a Secure cookie")
        if self.cookie_domain is not None:
            try:  # as werkzeug writes it into every Set-Cookie: a label it cannot encode loses every cookie
                self.cookie_domain.lstrip(".").encode("idna")
            except UnicodeError as error:
                raise ConfigError("TRACKGATE_COOKIE_DOMAIN", self.cookie_domain, f"unusable: {error}") from None
        self._check_keys()

    def _check_keys(self) -> None:
        """Keys are used on the first link, not at start-up: one that cannot work must fail here, not answer
        every tracking request with an error."""
        if self.legacy_pytracking_key:
            _require_cryptography("TRACKGATE_LEGACY_PYTRACKING_KEY")
            from .tokens import LegacyPytrackingCodec

            LegacyPytrackingCodec(self.legacy_pytracking_key)  # Fernet's own check of the key, as links.py makes it
        if self.encryption_key and self.encryption_key.strip(", "):
            _require_cryptography("TRACKGATE_ENCRYPTION_KEY")

    @property
    def signing_keys(self) -> tuple[str, ...]:
        """The keys that verify, newest (the signing one) first; a per-process key when none is set."""
        if self.secret_key:
            return self.secret_key
        _warn_fallback_key_once()
        return (_FALLBACK_KEY,)

    def describe(self) -> dict[str, str]:
        """Effective settings by environment-variable name, secrets masked (for check-config and logs)."""
        shown: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata["secret"] and value:
                text = "****"
            elif isinstance(value, str) and "://" in value:
                text = without_credentials(value)
            elif isinstance(value, tuple):
                text = ",".join(value)
            elif value is None:
                text = ""
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            shown[ENV_PREFIX + field.name.upper()] = text
        return shown

    @staticmethod
    def describe_url(url: str) -> str:
        """A URL as describe() shows one: its password and query values masked."""
        return without_credentials(url) if "://" in url else url

    def __repr__(self) -> str:
        inner = ", ".join(f"{k.removeprefix(ENV_PREFIX).lower()}={v!r}" for k, v in self.describe().items())
        return f"Settings({inner})"


def _parse(env_name: str, field: dataclasses.Field[Any], text: str) -> Any:
    try:
        return field.metadata["parse"](text)
    except ValueError as exc:
        shown = "****" if field.metadata["secret"] else text
        raise ConfigError(env_name, shown, str(exc)) from None


def _coerce(name: str, field: dataclasses.Field[Any], value: Any) -> Any:
    """Keywords may be given typed (True, 3600, ["k1", "k2"], a pathlib.Path) or as the environment's strings."""
    if isinstance(value, os.PathLike):  # BASE_DIR / "spool.sqlite3" in a Django or Flask settings file
        value = os.fspath(value)
    if isinstance(value, str):
        return _parse(name, field, value)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(field.default, tuple) and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        # As the environment's comma-separated list reads: items stripped, blank ones dropped (a rotation
        # written ("new", os.environ.get("OLD", "")) must not add an empty key, with which anyone signs).
        return tuple(item.strip() for item in value if item.strip())
    if value is None and field.default is None:
        return None
    if isinstance(field.default, bool) or (field.default is None and isinstance(value, bool)):
        if isinstance(value, bool):
            return value
    elif (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and field.metadata["parse"] not in _TEXT_PARSERS  # a number is no text setting's value
    ):
        return _parse(name, field, str(value))
    shown = "****" if field.metadata["secret"] else repr(value)
    raise ConfigError(name, shown, f"unexpected type {type(value).__name__}")


_TEXT_PARSERS = (_parse_optional_str, str.strip)

_warned = False


def _warn_fallback_key_once() -> None:
    global _warned  # noqa: PLW0603 — one warning a process, not one per link
    if not _warned:
        _warned = True
        logger.warning(
            "TRACKGATE_SECRET_KEY is not set: links are signed with a random per-process key and stop "
            "working at restart. Set it (comma-separated, newest first) for real use."
        )
