"""pytracking 0.2's ``webhook.send_webhook``: POST a tracking result as JSON, synchronously, with requests.

The same call as pytracking's, so the answer is the ``requests.Response`` (``raise_for_status()``, its
headers) and a network error the ``requests.RequestException`` code written for pytracking catches. Fixed:
only http(s) webhook URLs are contacted (``trackgate.BadURL`` otherwise). The middleware's webhook sink
(``TRACKGATE_SINKS=webhook``) sends the same payload from a background dispatcher with retries and a
signature; prefer it. Needs ``requests`` (``pip install 'trackgate[pytracking]'``), as pytracking did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trackgate.errors import BadURL
from trackgate.links import check_url

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
    check_url(url)
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
