"""pytracking 0.2's ``webhook.send_webhook``: POST a tracking result as JSON, synchronously, with requests.

The same call as pytracking's, so the answer is the ``requests.Response`` (``raise_for_status()``, its
headers) and a network error the ``requests.RequestException`` code written for pytracking catches. Fixed:
only http(s) webhook URLs are contacted (``trackgate.BadURL`` otherwise, its message without the URL's
password); credentials in the URL are sent as pytracking sent them (requests' basic auth). The middleware's webhook sink
(``TRACKGATE_SINKS=webhook``) sends the same payload from a background dispatcher with retries and a
signature; prefer it. Needs ``requests`` (``pip install 'trackgate[pytracking]'``), as pytracking did.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trackgate.errors import BadURL
from trackgate.settings import without_credentials

from .tracking import Configuration, TrackingResult, get_configuration

if TYPE_CHECKING:
    import requests


def send_webhook(
    tracking_result: TrackingResult, configuration: Configuration | None = None, **kwargs: Any
) -> requests.Response:
    """POST the result to ``tracking_result.webhook_url``; returns requests' response."""
    try:
        import requests
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("send_webhook needs requests: pip install 'trackgate[pytracking]'") from None
    configuration = get_configuration(configuration, kwargs)
    url = tracking_result.webhook_url
    if not url:
        raise BadURL("", "the tracking result has no webhook URL")
    _check_webhook_url(url)
    payload: dict[str, Any] = {
        "is_open_tracking": tracking_result.is_open_tracking,
        "is_click_tracking": tracking_result.is_click_tracking,
        "metadata": tracking_result.metadata,
        "request_data": tracking_result.request_data,
        "timestamp": tracking_result.timestamp,
    }
    if tracking_result.tracked_url:
        payload["tracked_url"] = tracking_result.tracked_url
    return requests.post(url, json=payload, timeout=configuration.webhook_timeout_seconds)


_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")


def _check_webhook_url(url: str) -> None:
    """An http(s) URL with a host. Not a click destination's check: a user name and password are the
    receiver's basic auth here, as with pytracking, and must not reach the error's message."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and not _CONTROL.search(url)
    except ValueError:
        usable = False
    if not usable:
        raise BadURL(without_credentials(url), "only http(s) webhook URLs with a host are contacted")
