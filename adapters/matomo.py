"""Matomo sink: events through Matomo's bulk tracking API.

    TRACKGATE_SINKS=matomo
    TRACKGATE_MATOMO_URL=https://matomo.example.org       # the folder that holds matomo.php
    TRACKGATE_MATOMO_SITE_ID=3
    TRACKGATE_MATOMO_TOKEN=...    # optional: adds the visitor IP (cip) and the time of older events (cdt)

Up to ``batch_size`` events go in one ``POST {url}/matomo.php`` as
``{"requests": ["?idsite=3&rec=1&...", ...], "token_auth": ...}``. Every request carries idsite, rec=1,
apiv=1, send_image=0, ``_id`` (16 hex digits derived from the visitor code, so one visitor stays one
Matomo visitor), uid (the user id), url, action_name (the page title), urlref, ua and lang; with the
token also cip. cdt (the event's time) goes with every event younger than 23 hours, which Matomo
accepts without a token (24 hours, less a margin for clocks and delivery), and with the token with every
event; without the token an older event is dated at its arrival (Matomo would refuse its time).

========== ============================================================================================
kind       request
========== ============================================================================================
pageview   a page view: url, action_name, urlref
click      an outlink: ``link`` = the destination, ``url`` = the page it was on (else the destination)
open       an event: e_c=email, e_a=open, e_n = the event name (when set)
conversion a goal: idgoal (the event name when it is a number, else ``goal_ids[name]``), revenue
custom     an event: e_c = properties["category"] or "custom", e_a = the name, e_n = properties["label"],
           e_v = properties["value"] (when numeric)
exposure   an event: e_c=experiment, e_a = the experiment (event name), e_n = properties["variation"]
identify,  an event: e_c=visitor, e_a=identify|alias, with uid, so Matomo ties the visit to the user
alias
set        nothing: Matomo keeps visitor properties only in custom dimensions, configured per site
========== ============================================================================================

Matomo answers ``{"status": "success", "tracked": N, "invalid": M, "invalid_indices": [...]}``; the
events at invalid indices are reported as rejected (dead letters), the others as delivered.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from trackgate import ConfigError, Event, Settings
from trackgate.dispatch.sink import Outcome, Rejected

from ._http import DEFAULT_TIMEOUT, exchange

# How old an event may be for its time (cdt) to go without a token: Matomo's limit is 24 hours
# (tracking_requests_require_authentication_when_custom_timestamp_newer_than), less a margin.
UNAUTHENTICATED_TIME_LIMIT = 23 * 3600

logger = logging.getLogger("trackgate.adapters.matomo")


@functools.lru_cache(maxsize=4096)
def visitor_id(code: str) -> str:
    """Matomo's ``_id``: exactly 16 hex digits; a hash keeps the visitor code itself out of Matomo."""
    return hashlib.sha1(code.encode(), usedforsecurity=False).hexdigest()[:16]


_quote = urllib.parse.quote_plus
_quote_cached = functools.lru_cache(maxsize=1024)(urllib.parse.quote_plus)


class MatomoSink:
    name = "matomo"
    batch_size = 100  # events per bulk POST
    concurrency = 4

    def __init__(
        self,
        url: str,
        site_id: int,
        *,
        token: str | None = None,
        # Goal names the app uses -> Matomo goal ids (a numeric event name is used as the id as is).
        goal_ids: Mapping[str, int] | None = None,
        batch_size: int = 100,
        concurrency: int = 4,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = url.rstrip("/").removesuffix("/matomo.php") + "/matomo.php"
        self.site_id = site_id
        self._prefix = f"?idsite={site_id}&rec=1&apiv=1"
        self.token = token
        self.goal_ids = dict(goal_ids or {})
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout

    def request_for(self, event: Event) -> str | None:
        """The bulk request line for ``event`` (``"?idsite=..."``), or None when Matomo has no place for it.

        Raises ``ValueError`` for an event Matomo would refuse (a conversion without a known goal id)."""
        kind = event.kind
        if kind == "set":
            return None
        # Built by hand from quoted pieces (the same text urlencode makes): a bulk of 100 is built per send,
        # and user agents, languages and visitor ids repeat, so their quoting is cached.
        parts = [self._prefix]
        if event.visitor:
            parts.append("&_id=" + visitor_id(event.visitor))
        if event.user_id:
            parts.append("&uid=" + _quote(event.user_id))
        # An outlink happens on a page, as Matomo's JavaScript reports it: the page the link was on (the
        # click's referrer) when it is known, the destination otherwise (an email's link).
        page, referrer = event.url, event.referrer
        if kind == "click" and referrer:
            page, referrer = referrer, None
        if page:
            parts.append("&url=" + _quote(page))
        if kind == "pageview" and event.title:
            parts.append("&action_name=" + _quote(event.title))
        if referrer:
            parts.append("&urlref=" + _quote(referrer))
        if event.user_agent:
            parts.append("&ua=" + _quote_cached(event.user_agent))
        if event.language:
            parts.append("&lang=" + _quote_cached(event.language))
        # Matomo accepts a client IP only from an authenticated request, and a time older than 24 hours.
        if self.token and event.ip:
            parts.append("&cip=" + _quote(event.ip))
        if self.token or time.time() - event.timestamp < UNAUTHENTICATED_TIME_LIMIT:
            parts.append(f"&cdt={int(event.timestamp)}")
        for name, value in self._kind_params(event):
            if value is not None:
                parts.append(f"&{name}={_quote(str(value))}")
        parts.append("&send_image=0")
        return "".join(parts)

    def _kind_params(self, event: Event) -> list[tuple[str, Any]]:
        props = event.properties
        if event.kind == "click":
            return [("link", event.url)]
        if event.kind == "open":
            return [("e_c", "email"), ("e_a", "open"), ("e_n", event.name or None)]
        if event.kind == "conversion":
            return [("idgoal", self._goal_id(event.name)), ("revenue", event.revenue)]
        if event.kind == "exposure":
            return [("e_c", "experiment"), ("e_a", event.name or "exposure"), ("e_n", props.get("variation"))]
        if event.kind in ("identify", "alias"):
            return [("e_c", "visitor"), ("e_a", event.kind)]
        if event.kind == "custom":
            value = props.get("value")
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            return [
                ("e_c", props.get("category") or "custom"),
                ("e_a", event.name or "custom"),
                ("e_n", props.get("label")),
                ("e_v", value if numeric else None),
            ]
        return []  # pageview: url and action_name say it all

    def _goal_id(self, name: str) -> int:
        if name.isdigit():
            return int(name)
        if name in self.goal_ids:
            return self.goal_ids[name]
        raise ValueError(f"goal {name!r} has no Matomo goal id: pass goal_ids={{{name!r}: <id>}}")

    async def send(self, session: aiohttp.ClientSession, events: Sequence[Event]) -> Outcome:
        rejected: dict[str, str] = {}
        requests: list[str] = []
        sent: list[Event] = []
        for event in events:
            try:
                line = self.request_for(event)
            except ValueError as exc:
                rejected[event.id] = str(exc)
                continue
            if line is not None:
                requests.append(line)
                sent.append(event)
        if not requests:
            return Outcome(rejected)
        bulk: dict[str, Any] = {"requests": requests}
        if self.token:
            bulk["token_auth"] = self.token
        _, body = await exchange(
            session,
            "POST",
            self.endpoint,
            timeout=self.timeout,
            data=json.dumps(bulk).encode(),
            headers={"Content-Type": "application/json"},
        )
        rejected.update(self._invalid(body, sent))
        return Outcome(rejected)

    def _invalid(self, body: bytes, sent: Sequence[Event]) -> dict[str, str]:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            # A 200 that is not Matomo's answer (a login page, a proxy's page): nothing says it was tracked.
            raise Rejected("not a Matomo tracking answer", 200, body.decode("utf-8", "replace"))
        invalid = int(answer.get("invalid") or 0)
        if not invalid:
            return {}
        indices = answer.get("invalid_indices")
        reason = f"Matomo marked the request invalid (idsite {self.site_id}: site exists? token allowed?)"
        if isinstance(indices, list):
            return {sent[i].id: reason for i in indices if isinstance(i, int) and 0 <= i < len(sent)}
        if invalid >= len(sent):
            return {event.id: reason for event in sent}
        # Older Matomo versions give the count only: retrying the batch would repeat the tracked ones.
        logger.warning("Matomo marked %d of %d requests invalid without saying which", invalid, len(sent))
        return {}

    async def aclose(self) -> None:
        return None


def create_sink(settings: Settings) -> MatomoSink:
    if not settings.matomo_url:
        raise ConfigError("TRACKGATE_MATOMO_URL", None, "required by the matomo sink")
    if not settings.matomo_url.startswith(("http://", "https://")):
        raise ConfigError("TRACKGATE_MATOMO_URL", settings.matomo_url, "expected an http(s) URL")
    if settings.matomo_site_id is None:
        raise ConfigError("TRACKGATE_MATOMO_SITE_ID", None, "required by the matomo sink")
    return MatomoSink(settings.matomo_url, settings.matomo_site_id, token=settings.matomo_token)
