"""Gate: the framework-free core one middleware holds — settings, identity, links, where events go.

Both shells make one Gate at construction and ask it the same questions for every request; nothing about
a single request is ever stored on it (that lives in a VisitorState and in the shell's responder).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._boundary import guarded, swallow
from ._version import __version__
from .bodyfilter import BodyFilter, kept_from_shared_caches, plan_rewrite
from .endpoints import Reply, TrackingRequest, answer
from .events import Event
from .facts import RequestFacts
from .identity import Identity, Visitor
from .links import TrackingLinks
from .netaddr import anonymize_ip
from .requestfacts import preferred_language
from .rewrite import HtmlRewriter
from .settings import Settings

Emit = Callable[[Event], None]


class Gate:
    def __init__(self, settings: Settings, *, emit: Emit | None = None) -> None:
        self.settings = settings
        # Whether HTML bodies may be rewritten at all (links, or the page-view pixel).
        self.rewrites = settings.rewrite != "off" or settings.pageview_pixel
        self.identity = Identity(settings)
        self.prefix = settings.path_prefix
        self._prefix_slash = settings.path_prefix + "/"
        self._emit = emit
        if emit is None:
            # trackgate.record(visitor_or_code, ...) has no request to find a middleware by: its events go
            # where this middleware's go (the last one made, in an app with several).
            from .dispatch.instances import make_default

            try:
                make_default(settings)
            except Exception as error:  # (no home folder for the default spool...): said at the first event
                swallow("registering the event dispatcher", error)
        # Set until the first request: see wake().
        self.asleep = emit is None
        self._links: TrackingLinks | None = None
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {}
        self._health_path = self._prefix_slash + "health"

    # --- routing -----------------------------------------------------------------------------------------
    def owns(self, path: str) -> bool:
        return path.startswith(self._prefix_slash) or path == self.prefix

    def answer(self, facts: TrackingRequest, visitor_code: str | None) -> Reply:
        if facts.route_path == self._health_path:
            return Reply(200, (("Content-Type", "application/json"), ("Cache-Control", "no-store")),
                         json.dumps(self.health()).encode())
        return answer(facts, visitor_code, self)

    def health(self) -> dict[str, object]:
        report: dict[str, object] = {"status": "ok", "version": __version__}
        backlog = self._dispatcher_backlog()
        if backlog is not None:
            report["backlog"] = backlog
        return report

    # --- links and events ----------------------------------------------------------------------------------
    @property
    def links(self) -> TrackingLinks:
        if self._links is None:  # made on first use: constructing a middleware must not sign or touch keys
            self._links = TrackingLinks(self.settings)
        return self._links

    def wake(self) -> None:
        """At a process's first request, start its dispatcher: what an earlier run left in the spool (a
        backlog, rows a killed process leased) goes out without waiting for this run's first event."""
        self.asleep = False
        with guarded("starting the event dispatcher"):
            from .dispatch import get_dispatcher

            get_dispatcher(self.settings).start()

    def emit(self, event: Event) -> None:
        if self._emit is not None:
            self._emit(event)
            return
        from .dispatch import get_dispatcher

        get_dispatcher(self.settings).submit(event)

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    # --- response rewriting --------------------------------------------------------------------------------
    def body_filter(
        self, facts: RequestFacts, visitor: Visitor, status: int, headers: Sequence[tuple[str, str]]
    ) -> BodyFilter | None:
        """A filter for this response's body when it is HTML to rewrite, else None (pass through)."""
        settings = self.settings
        if not self.rewrites:
            return None
        plan = plan_rewrite(facts.method, status, headers)
        if plan is None:
            return None
        # Links must come back through this middleware: below the app's mount when it is not at the root.
        base = settings.base_url or facts.app_url
        rewriter = HtmlRewriter(
            self.links.for_page(
                self._page_url(facts),
                base,
                referrer=facts.headers.get("referer") if kept_from_shared_caches(headers) else None,
            ),
            click_tracking=settings.rewrite != "off",
            open_tracking=settings.pageview_pixel,
            scope="outbound" if settings.rewrite == "outbound" else "all",
            charset=plan.charset,
            page_host=facts.host,
            scheme=facts.scheme,
            pixel_in_fragments=False,  # a fragment fetched into a page is not a page view
            xml=plan.xml,
            page_title=True,  # the page view reports it (Matomo's action_name)
        )
        return BodyFilter(plan, rewriter)

    def request_fields(self, facts: RequestFacts) -> dict[str, Any]:
        """What an event an app records keeps of the request it came with: the page, and ``client_values``."""
        referrer, user_agent, ip, language = self.client_values(facts)
        return {"url": self._page_url(facts), "referrer": referrer, "user_agent": user_agent, "ip": ip,
                "language": language}

    def client_values(self, facts: TrackingRequest) -> tuple[str | None, str | None, str | None, str | None]:
        """What every event keeps of its request, as (referrer, user agent, address, language): the page it
        came from (as that page's own events record it), the browser and its language, and the address
        (anonymised as TRACKGATE_ANONYMIZE_IP says)."""
        headers = facts.headers
        referer = headers.get("referer")
        languages = headers.get("accept-language")
        return (
            self.without_visitor_param(referer) if referer else None,
            headers.get("user-agent"),
            anonymize_ip(facts.client_addr, self.settings.anonymize_ip),
            preferred_language(languages) if languages else None,
        )

    def _page_url(self, facts: RequestFacts) -> str:
        return self.without_visitor_param(facts.url)

    def without_visitor_param(self, url: str) -> str:
        """A page's URL as events record it: without the visitor parameter, which carries one visitor's
        code (each visitor arriving from an email would otherwise be a page of their own)."""
        param = self.settings.visitor_param
        before_fragment, hash_mark, fragment = url.partition("#")
        base, question, query = before_fragment.partition("?")
        if not question or param not in query:
            return url
        kept = "&".join(part for part in query.split("&") if part.partition("=")[0] != param)
        return base + ("?" + kept if kept else "") + hash_mark + fragment

    def head_of_rewritten(self, facts: RequestFacts, status: int, headers: Sequence[tuple[str, str]]) -> bool:
        """True for the HEAD of a page a GET would rewrite: it must show the headers the GET gets, without the
        app's Content-Length (a rewritten body has another, a streamed one none) and with a weak ETag."""
        return facts.method == "HEAD" and self.rewrites and plan_rewrite("GET", status, headers) is not None

    def _dispatcher_backlog(self) -> int | None:
        if self._emit is not None:
            return None
        from .dispatch import get_dispatcher

        # This middleware's dispatcher, made if no event has been sent yet: the spool may hold events of an
        # earlier run that this process has not touched.
        try:
            return get_dispatcher(self.settings).peek_backlog()  # never waits on a write lock (ASGI's loop)
        except Exception as error:
            swallow("reading the spool backlog", error)
            return None
