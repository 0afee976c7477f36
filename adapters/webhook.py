"""Webhook sink: one JSON POST per event, signed with HMAC-SHA256.

    TRACKGATE_SINKS=webhook
    TRACKGATE_WEBHOOK_URL=https://example.org/hooks/tracking
    TRACKGATE_WEBHOOK_SECRET=...            # optional; adds X-Trackgate-Signature: sha256=<hex>

Opens and clicks carry exactly pytracking's webhook payload (``is_open_tracking``, ``is_click_tracking``,
``metadata``, ``request_data``, ``timestamp`` and, for clicks, ``tracked_url``) plus ``id``, ``kind``,
``visitor`` and, for an email whose pixel carries it, ``title``, so a receiver written for pytracking keeps
working. Other kinds carry ``Event.to_dict()``.

One event per POST (``batch_size = 1``), as pytracking receivers expect; up to ``concurrency`` POSTs are
in flight at once. Delivery is at-least-once: a receiver drops repeats by ``id``. Verify a signature with::

    expected = "sha256=" + hmac.new(secret, request_body, hashlib.sha256).hexdigest()
    hmac.compare_digest(request.headers["X-Trackgate-Signature"], expected)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from trackgate import ConfigError, Event, Settings
from trackgate.dispatch.sink import Outcome

from ._http import DEFAULT_TIMEOUT, exchange

SIGNATURE_HEADER = "X-Trackgate-Signature"


def payload(event: Event) -> dict[str, Any]:
    """The JSON document posted for ``event``."""
    if event.kind not in ("open", "click"):
        return event.to_dict()
    body: dict[str, Any] = {
        "is_open_tracking": event.kind == "open",
        "is_click_tracking": event.kind == "click",
        "metadata": dict(event.metadata),
        "request_data": event.request_data,
        "timestamp": int(event.timestamp),  # pytracking sends whole seconds
    }
    if event.kind == "click" and event.url:  # pytracking leaves tracked_url out when there is none
        body["tracked_url"] = event.url
    if event.kind == "open" and event.title:  # the email's (rewrite_html(..., page_title=True))
        body["title"] = event.title
    body["id"] = event.id
    body["kind"] = event.kind
    # Who opened or clicked: pytracking's payload has no place for it, so it is one more field.
    body["visitor"] = event.visitor
    return body


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSink:
    name = "webhook"
    batch_size = 1  # one tracking result per request, like pytracking's send_webhook

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        # POSTs in flight at once; receivers are usually small apps, so stay polite.
        concurrency: int = 8,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.secret = secret
        self.concurrency = concurrency
        self.timeout = timeout

    def encode(self, event: Event) -> tuple[bytes, dict[str, str]]:
        # default=str: an app may put a datetime or a Decimal in metadata; the event must still go out.
        body = json.dumps(payload(event), separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        return body, headers

    async def send(self, session: aiohttp.ClientSession, events: Sequence[Event]) -> Outcome:
        for event in events:
            body, headers = self.encode(event)
            await exchange(session, "POST", self.url, headers=headers, data=body, timeout=self.timeout)
        return Outcome()

    async def aclose(self) -> None:
        return None


def create_sink(settings: Settings) -> WebhookSink:
    if not settings.webhook_url:
        raise ConfigError("TRACKGATE_WEBHOOK_URL", None, "required by the webhook sink")
    if not settings.webhook_url.startswith(("http://", "https://")):
        raise ConfigError("TRACKGATE_WEBHOOK_URL", settings.webhook_url, "expected an http(s) URL")
    return WebhookSink(settings.webhook_url, secret=settings.webhook_secret)
