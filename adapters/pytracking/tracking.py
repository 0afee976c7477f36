"""pytracking 0.2's ``tracking`` module: the same names, signatures and token formats, with its bugs fixed.

Tokens are exactly pytracking's (base64 JSON, or Fernet with ``encryption_bytestring_key``), so links made
by pytracking decode here and the other way round. Fixed: ``append_slash`` is honoured (and a trailing
slash is accepted when decoding), ``to_json_dict`` returns a dict, decoding raises only
``trackgate.BadToken`` (pytracking leaks binascii, JSON, Unicode and Fernet errors; with an encryption key
the error is also a ``cryptography.fernet.InvalidToken``, which Fernet users caught), a webhook URL
embedded in an unencrypted token is ignored (anyone can write one; the configured webhook is used), and a
click link is made only for a destination the views will redirect to (http, https or protocol-relative,
no user name, no control characters; else ``trackgate.BadURL``), never a dead link.

Plain pytracking tokens are not signed: anyone can make a link that redirects anywhere. New code should
use ``trackgate.TrackingLinks`` (signed, expiring, purpose-bound) and the middleware's endpoints.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import time
from collections import namedtuple
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

from trackgate.errors import BadToken, ConfigError
from trackgate.links import check_url
from trackgate.tokens import LegacyPytrackingCodec

TRACKING_PIXEL = base64.b64decode(
    b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
PNG_MIME_TYPE = "image/png"
DEFAULT_TIMEOUT_SECONDS = 5
# Sent with the pixel by the views here (pytracking sent none, so proxies and mail clients could cache it).
PIXEL_CACHE_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "0",
}


# pytracking's name for what to_json_dict returned (a namedtuple; to_json_dict returns a dict here).
TrackingResultJSON = namedtuple(  # pytracking's own definition, kept for code importing it
    "TrackingResultJSON",
    ["is_open_tracking", "is_click_tracking", "tracked_url", "webhook_url", "metadata", "request_data", "timestamp"],
)


# pytracking's plain tokens, of any length: links it made with large metadata decode here too.
_PLAIN_TOKENS = LegacyPytrackingCodec(max_chars=None)


def redirect_target(url: str) -> str:
    """Where a click link of this destination redirects: a protocol-relative one goes to https, as a
    browser resolves it from an https tracking link. Raises ``BadURL`` for what no view redirects to."""
    return check_url("https:" + url if isinstance(url, str) and url.startswith("//") else url)


class Configuration:
    def __init__(  # noqa: PLR0917 — pytracking's positional signature, kept for drop-in use
        self,
        webhook_url: str | None = None,
        webhook_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        include_webhook_url: bool = False,
        base_open_tracking_url: str | None = None,
        base_click_tracking_url: str | None = None,
        default_metadata: Mapping[str, Any] | None = None,
        include_default_metadata: bool = False,
        encryption_bytestring_key: str | bytes | None = None,
        encoding: str = "utf-8",
        append_slash: bool = False,
        **kwargs: Any,
    ) -> None:
        self.webhook_url = webhook_url
        self.webhook_timeout_seconds = webhook_timeout_seconds
        self.include_webhook_url = include_webhook_url
        self.base_open_tracking_url = base_open_tracking_url
        self.base_click_tracking_url = base_click_tracking_url
        self.default_metadata = default_metadata
        self.include_default_metadata = include_default_metadata
        self.encryption_bytestring_key = encryption_bytestring_key
        self.encoding = encoding
        self.kwargs = kwargs
        self.encryption_key: Any = None
        self.append_slash = append_slash  # pytracking 0.2 always set False here, ignoring the argument
        self.cache_encryption_key()

    def __str__(self) -> str:
        return (
            f"<pytracking.Configuration> Open Tracking URL: {self.base_open_tracking_url} "
            f"Click Tracking URL: {self.base_click_tracking_url} Webhook URL: {self.webhook_url}"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Configuration:
        new_config = Configuration()
        for key, value in self.__dict__.items():
            if key != "encryption_key":
                new_config.__dict__[key] = copy.deepcopy(value, memo)
        return new_config

    def merge_with_kwargs(self, kwargs: Mapping[str, Any]) -> Configuration:
        new_configuration = copy.deepcopy(self)
        for key, value in kwargs.items():
            if hasattr(new_configuration, key):
                setattr(new_configuration, key, value)
        new_configuration.cache_encryption_key()
        return new_configuration

    def cache_encryption_key(self) -> None:
        if self.encryption_bytestring_key:
            try:
                from cryptography.fernet import Fernet
            except ImportError:
                raise ConfigError(
                    "encryption_bytestring_key", "****", "needs the cryptography extra: trackgate[cryptography]"
                ) from None
            self.encryption_key = Fernet(self.encryption_bytestring_key)
        else:
            self.encryption_key = None

    def get_data_to_embed(self, url_to_track: str | None, extra_metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if url_to_track:
            data["url"] = url_to_track
        metadata: dict[str, Any] = {}
        if self.include_default_metadata and self.default_metadata:
            metadata.update(self.default_metadata)
        if extra_metadata:
            metadata.update(extra_metadata)
        if metadata:
            data["metadata"] = metadata
        if self.include_webhook_url and self.webhook_url:
            data["webhook"] = self.webhook_url
        return data

    def get_url_encoded_data_str(self, data_to_embed: Mapping[str, Any]) -> str:
        json_byte_str = json.dumps(data_to_embed).encode(self.encoding)
        if self.encryption_key:
            return str(self.encryption_key.encrypt(json_byte_str).decode(self.encoding))
        return base64.urlsafe_b64encode(json_byte_str).decode(self.encoding)

    def get_open_tracking_url_from_data_str(self, data_str: str) -> str:
        url = urljoin(self.base_open_tracking_url or "", data_str)
        return url + "/" if self.append_slash else url

    def get_click_tracking_url_from_data_str(self, data_str: str) -> str:
        url = urljoin(self.base_click_tracking_url or "", data_str)
        return url + "/" if self.append_slash else url

    def get_open_tracking_url(self, extra_metadata: Mapping[str, Any] | None) -> str:
        data_str = self.get_url_encoded_data_str(self.get_data_to_embed(None, extra_metadata))
        return self.get_open_tracking_url_from_data_str(data_str)

    def get_click_tracking_url(self, url_to_track: str, extra_metadata: Mapping[str, Any] | None) -> str:
        redirect_target(url_to_track)  # a link the views would answer with 404 is refused here
        data_str = self.get_url_encoded_data_str(self.get_data_to_embed(url_to_track, extra_metadata))
        return self.get_click_tracking_url_from_data_str(data_str)

    def get_tracking_result(
        self, encoded_url_path: str, request_data: Mapping[str, Any] | None, is_open: bool
    ) -> TrackingResult:
        """Raises only ``trackgate.BadToken`` for a token that does not decode."""
        timestamp = int(time.time())
        if not isinstance(encoded_url_path, str):
            raise self._bad_token("not a string")
        token = encoded_url_path.strip("/")
        data, authentic = self._decode(token)

        metadata: dict[str, Any] = {}
        if not self.include_default_metadata and self.default_metadata:
            metadata.update(self.default_metadata)
        embedded = data.get("metadata", {})
        if not isinstance(embedded, dict):
            raise BadToken("metadata is not an object")
        metadata.update(embedded)

        webhook_url = self.webhook_url
        if self.include_webhook_url and authentic:
            webhook_url = data.get("webhook")

        tracked_url = data.get("url")
        if tracked_url is not None and not isinstance(tracked_url, str):
            raise BadToken("url is not a string")
        return TrackingResult(
            is_open_tracking=is_open,
            is_click_tracking=not is_open,
            tracked_url=tracked_url,
            webhook_url=webhook_url,
            metadata=metadata,
            request_data=request_data,  # type: ignore[arg-type]  # kept as given, as pytracking does
            timestamp=timestamp,
        )

    def _decode(self, token: str) -> tuple[dict[str, Any], bool]:
        if self.encryption_key:
            from cryptography.fernet import InvalidToken

            try:
                plain = self.encryption_key.decrypt(token.encode("ascii", "replace"))
                data = json.loads(plain.decode(self.encoding))
            except (InvalidToken, ValueError, RecursionError):
                raise self._bad_token("not a token made with this encryption key") from None
            if not isinstance(data, dict):
                raise self._bad_token("payload is not a JSON object")
            return data, True
        return _PLAIN_TOKENS.loads(token)

    def _bad_token(self, reason: str) -> BadToken:
        """With an encryption key, also a Fernet ``InvalidToken``: what pytracking users caught then."""
        return _fernet_bad_token()(reason) if self.encryption_key else BadToken(reason)

    def get_click_tracking_url_path(self, url: str) -> str:
        return url[len(self.base_click_tracking_url or "") :]

    def get_open_tracking_url_path(self, url: str) -> str:
        return url[len(self.base_open_tracking_url or "") :]


class TrackingResult:
    def __init__(  # noqa: PLR0917 — pytracking's positional signature, kept for drop-in use
        self,
        is_open_tracking: bool = False,
        is_click_tracking: bool = False,
        tracked_url: str | None = None,
        webhook_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        request_data: dict[str, Any] | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.is_open_tracking = is_open_tracking
        self.is_click_tracking = is_click_tracking
        self.tracked_url = tracked_url
        self.webhook_url = webhook_url
        self.metadata = metadata
        self.request_data = request_data
        self.timestamp = timestamp

    def to_json_dict(self) -> dict[str, Any]:
        """A dict that ``json.dumps`` accepts (pytracking 0.2 returned a namedtuple, which becomes a list)."""
        return {
            "is_open_tracking": self.is_open_tracking,
            "is_click_tracking": self.is_click_tracking,
            "tracked_url": self.tracked_url,
            "webhook_url": self.webhook_url,
            "metadata": self.metadata,
            "request_data": self.request_data,
            "timestamp": self.timestamp,
        }

    def __str__(self) -> str:
        return (
            f"<pytracking.TrackingResult> is_open_tracking: {self.is_open_tracking} "
            f"is_click_tracking: {self.is_click_tracking} tracked_url: {self.tracked_url}"
        )


@functools.cache
def _fernet_bad_token() -> type[BadToken]:
    from cryptography.fernet import InvalidToken

    return type("BadFernetToken", (BadToken, InvalidToken), {"__module__": __name__})


def get_configuration(configuration: Configuration | None, kwargs: Mapping[str, Any]) -> Configuration:
    """A Configuration merging ``configuration`` with ``kwargs`` (the keywords win)."""
    return (configuration or Configuration()).merge_with_kwargs(kwargs)


def get_open_tracking_url(
    metadata: Mapping[str, Any] | None = None, configuration: Configuration | None = None, **kwargs: Any
) -> str:
    return get_configuration(configuration, kwargs).get_open_tracking_url(metadata)


def get_open_tracking_pixel() -> tuple[bytes, str]:
    """The transparent PNG pixel and its MIME type (serve it with ``PIXEL_CACHE_HEADERS``)."""
    return TRACKING_PIXEL, PNG_MIME_TYPE


def get_click_tracking_url(
    url_to_track: str,
    metadata: Mapping[str, Any] | None = None,
    configuration: Configuration | None = None,
    **kwargs: Any,
) -> str:
    return get_configuration(configuration, kwargs).get_click_tracking_url(url_to_track, metadata)


def get_click_tracking_result(
    encoded_url_path: str,
    request_data: Mapping[str, Any] | None = None,
    configuration: Configuration | None = None,
    **kwargs: Any,
) -> TrackingResult:
    return _tracking_result(encoded_url_path, request_data, get_configuration(configuration, kwargs), is_open=False)


def get_click_tracking_url_path(url: str, configuration: Configuration | None = None, **kwargs: Any) -> str:
    return get_configuration(configuration, kwargs).get_click_tracking_url_path(url)


def get_open_tracking_result(
    encoded_url_path: str,
    request_data: Mapping[str, Any] | None = None,
    configuration: Configuration | None = None,
    **kwargs: Any,
) -> TrackingResult:
    return _tracking_result(encoded_url_path, request_data, get_configuration(configuration, kwargs), is_open=True)


def get_open_tracking_url_path(url: str, configuration: Configuration | None = None, **kwargs: Any) -> str:
    return get_configuration(configuration, kwargs).get_open_tracking_url_path(url)


def _tracking_result(
    encoded_url_path: str, request_data: Mapping[str, Any] | None, configuration: Configuration, *, is_open: bool
) -> TrackingResult:
    """A full tracking URL or just its path, as pytracking's two result functions accept."""
    if not isinstance(encoded_url_path, str):
        raise BadToken("not a string")
    base = configuration.base_open_tracking_url if is_open else configuration.base_click_tracking_url
    if base and encoded_url_path.startswith(base):
        to_path = configuration.get_open_tracking_url_path if is_open else configuration.get_click_tracking_url_path
        encoded_url_path = to_path(encoded_url_path)
    return configuration.get_tracking_result(encoded_url_path, request_data, is_open=is_open)
