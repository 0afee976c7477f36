"""One HTTP exchange for a sink, with the dispatcher's failure rules applied.

Network errors and timeouts become ``RetryLater``; the status is judged by ``raise_for_status`` (408, 429
and 5xx retry, other 4xx reject), so every adapter answers the dispatcher in the same terms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from trackgate.dispatch.sink import Rejected, RetryLater, raise_for_status

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
        # A POST is not redirected: a 301/302/303 would turn it into a GET without the body (the event lost,
        # yet the last 200 counted as delivered), and a 307/308 would send the body (a token, a signature)
        # wherever the receiver points, in a loop if it loops. The answer is a dead letter naming the target.
        follow = method == "GET"
        async with session.request(
            method, target, headers=headers, data=data, timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=follow,
        ) as response:
            body = await response.read()
            if not follow and 300 <= response.status < 400:
                location = response.headers.get("Location")
                where = f"redirects to {_origin(location)}; use that URL" if location else "redirects nowhere"
                raise Rejected(f"HTTP {response.status}: the receiver {where}", response.status, "")
            raise_for_status(response.status, response.headers, body.decode("utf-8", "replace"))
            return response.status, body
    except (TimeoutError, aiohttp.ClientError) as exc:
        # aiohttp's messages name the URL whole (TooManyRedirects, InvalidURL): its query may hold a key.
        said = _QUERY_IN_TEXT.sub(r"\1?****", str(exc))
        raise RetryLater(f"{method} {_origin(url)} failed: {type(exc).__name__}: {said}") from exc


_QUERY_IN_TEXT = re.compile(r"""([a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"?]*)\?[^\s'"]*""")


def _origin(url: str) -> str:
    """The URL without its query, which may carry a key (KISSmetrics ``_k``), and without a user name and
    password: neither must reach a log."""
    scheme, _, rest = url.split("?", 1)[0].partition("://")
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}" if rest else url.split("?", 1)[0]
