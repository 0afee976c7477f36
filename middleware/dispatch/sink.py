"""The contract between the dispatcher and an adapter ("sink").

A sink turns a batch of events into one or more requests and says how it went:

* return ``Outcome()`` when every event was delivered;
* return ``Outcome(rejected={event_id: reason})`` when the receiver refused some events for good
  (they go to the dead-letter table, the rest count as delivered);
* raise ``RetryLater`` for a failure worth retrying (network error, timeout, 408, 429, 5xx): the whole batch
  stays spooled and is tried again after a backoff, or after the receiver's ``Retry-After``;
* raise ``Rejected`` when the receiver refused the whole batch for good (any other 4xx).

``raise_for_status`` maps an HTTP answer onto these rules so adapters agree on them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from werkzeug.http import parse_date

if TYPE_CHECKING:  # importing aiohttp costs a fifth of a second; only the worker thread needs it
    import aiohttp

    from ..events import Event

__all__ = ["Outcome", "Rejected", "RetryLater", "Sink", "parse_retry_after", "raise_for_status"]

# Statuses that say "not now" rather than "never".
_RETRYABLE_4XX = frozenset({408, 425, 429})
_BODY_KEPT = 2000  # enough of a response to explain a rejection in `trackgate events dead`


class RetryLater(Exception):
    """A failure worth retrying; ``retry_after`` (seconds) is the receiver's wish, when it said one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason if retry_after is None else f"{reason} (retry after {retry_after:g} s)")


class Rejected(Exception):
    """The receiver refused the whole batch for good; ``status`` and ``body`` explain why."""

    def __init__(self, reason: str, status: int | None = None, body: str = "") -> None:
        self.reason = reason
        self.status = status
        self.body = body[:_BODY_KEPT]
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")


@dataclasses.dataclass(frozen=True)
class Outcome:
    # event id -> reason for events refused for good; every other event of the batch was delivered.
    rejected: Mapping[str, str] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    name: str
    batch_size: int  # most events one send() takes
    concurrency: int  # most send() calls in flight at once

    async def send(self, session: aiohttp.ClientSession, events: Sequence[Event]) -> Outcome: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit alone accepts "²"
        return float(text)
    when = parse_date(text)  # all three HTTP-date forms (RFC 9110 5.6.7: IMF-fixdate, RFC 850, asctime), in UTC
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def raise_for_status(status: int, headers: Mapping[str, str], body: str) -> None:
    """Return for 2xx; raise ``RetryLater`` for 408/425/429/5xx, ``Rejected`` for anything else."""
    if 200 <= status < 300:
        return
    snippet = body[:200].strip()
    reason = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if status in _RETRYABLE_4XX or status >= 500:
        retry_after = _header(headers, "Retry-After")
        raise RetryLater(reason, parse_retry_after(retry_after))
    raise Rejected(reason, status, body)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, found in headers.items():
        if key.lower() == lowered:
            return found
    return None
