"""pytracking 0.2's ``webhook.send_webhook``: POST a tracking result as JSON, synchronously.

Only http(s) webhook URLs are contacted. The middleware's webhook sink (``TRACKGATE_SINKS=webhook``)
sends the same payload from a background dispatcher with retries and a signature; prefer it.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from trackgate.errors import BadURL
from trackgate.links import check_url

from .tracking import Configuration, TrackingResult, get_configuration


@dataclasses.dataclass(frozen=True)
class WebhookResponse:
    """What the receiver answered (the attributes of ``requests.Response`` that callers use)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def send_webhook(
    tracking_result: TrackingResult, configuration: Configuration | None = None, **kwargs: Any
) -> WebhookResponse:
    """POST the result to ``tracking_result.webhook_url``; network errors raise ``OSError``."""
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
    request = urllib.request.Request(  # noqa: S310 — check_url allows only http(s)
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=configuration.webhook_timeout_seconds) as response:  # noqa: S310
            return WebhookResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:  # like requests: an error status is an answer, not an exception
        with error:
            return WebhookResponse(error.code, dict(error.headers.items()), error.read())
