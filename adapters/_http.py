"""One HTTP exchange for a sink, with the dispatcher's failure rules applied.

Network errors and timeouts become ``RetryLater``; the status is judged by ``raise_for_status`` (408, 429
and 5xx retry, other 4xx reject), so every adapter answers the dispatcher in the same terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from trackgate.dispatch.sink import Rejected, RetryLater, raise_for_status

_BODY_DROPPING = (301, 302, 303)
DEFAULT_TIMEOUT = 10.0  # seconds for one whole exchange; a stuck receiver must not hold a batch forever


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    encoded: bool = False,
) -> tuple[int, bytes]:
    """Status and body of a 2xx answer; raises ``RetryLater`` or ``Rejected`` otherwise.

    ``encoded=True`` sends the URL exactly as given (a query already encoded the way the receiver wants)."""
    target: Any = yarl.URL(url, encoded=True) if encoded else url
    try:
        async with session.request(
            method, target, headers=headers, data=data, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            body = await response.read()
            # A 301, 302 or 303 turns a POST into a GET without the body (aiohttp follows it so, as browsers
            # do): the event never arrived, whatever the last answer says. 307 and 308 keep the body.
            dropped = next((r.status for r in response.history if r.status in _BODY_DROPPING), None)
            if method != "GET" and dropped is not None:
                raise Rejected(f"HTTP {dropped}: the receiver redirects, and a {dropped} drops the body", dropped, "")
            raise_for_status(response.status, response.headers, body.decode("utf-8", "replace"))
            return response.status, body
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise RetryLater(f"{method} {_origin(url)} failed: {type(exc).__name__}: {exc}") from exc


def _origin(url: str) -> str:
    """The URL without its query, which may carry a key (KISSmetrics ``_k``), and without a user name and
    password: neither must reach a log."""
    scheme, _, rest = url.split("?", 1)[0].partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}" if rest else url.split("?", 1)[0]
