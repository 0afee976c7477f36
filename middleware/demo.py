"""``trackgate demo``: a small shop site wrapped by trackgate, on 127.0.0.1, configured only by TRACKGATE_*.

    trackgate demo                 # ASGI (Starlette under uvicorn, the `demo` extra), port 8000
    trackgate demo --wsgi          # the same site through the WSGI shell (werkzeug's server)

Open a page: the visitor cookie is set, outbound links are click-tracking links, a page-view pixel sits
before </body>, and /events lists what reached the local event store (SQLite, the default sink).
"""

from __future__ import annotations

import argparse
import html
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .settings import Settings

# Signs links when TRACKGATE_SECRET_KEY is not set, so demo links survive a restart; never for real use.
DEMO_KEY = "trackgate-demo-key-not-for-production"

_PAGES = {
    "/": ("Welcome", "<p>Browse the shop, follow a partner link, then look at <a href='/events'>the events</a>.</p>"),
    "/products": ("Products", "<ul><li>Tea cup &mdash; 12&nbsp;&euro;</li><li>Teapot &mdash; 30&nbsp;&euro;</li></ul>"),
    "/about": ("About", "<p>A demo of trackgate: nothing here is sold.</p>"),
}
_NAVIGATION = (
    '<nav><a href="/">Home</a> · <a href="/products">Products</a> · <a href="/about">About</a> · '
    '<a href="/events">Events</a></nav>'
    '<p>Partners: <a href="https://www.python.org/">Python</a> · '
    '<a href="https://example.org/?from=demo&amp;lang=en">Example</a></p>'
)


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("demo", help="serve a demo site wrapped by trackgate on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--wsgi", action="store_true", help="serve through the WSGI shell instead of ASGI")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not os.environ.get("TRACKGATE_SECRET_KEY"):
        os.environ["TRACKGATE_SECRET_KEY"] = DEMO_KEY
        print("trackgate demo: TRACKGATE_SECRET_KEY is not set; signing with the fixed demo key", file=sys.stderr)
    settings = Settings()  # everything else from TRACKGATE_* variables, as an app would
    print(f"trackgate demo: http://127.0.0.1:{args.port}/ ({'WSGI' if args.wsgi else 'ASGI'})", file=sys.stderr)
    if args.wsgi:
        from werkzeug.serving import run_simple

        from .wsgi import WSGIMiddleware

        site: Any = WSGIMiddleware(wsgi_site(settings), settings)  # werkzeug types its app more narrowly
        # werkzeug's server dies on SIGTERM without running exit handlers: the dispatcher's drain among
        # them, and with it the events of the last moments. Exiting makes them run.
        signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
        run_simple("127.0.0.1", args.port, site, threaded=True)
        return 0
    try:
        import uvicorn
    except ImportError:
        print("trackgate demo: the ASGI demo needs uvicorn: pip install 'trackgate[demo]'", file=sys.stderr)
        return 1
    from .asgi import ASGIMiddleware

    uvicorn.run(ASGIMiddleware(asgi_site(settings), settings), host="127.0.0.1", port=args.port, log_level="info")
    return 0


def render(path: str, visitor_code: str | None, settings: Settings) -> tuple[int, str]:
    """Status and HTML for a path of the demo site."""
    if path == "/events":
        title, body = "Events", _events_table(settings)
    elif path in _PAGES:
        title, body = _PAGES[path]
    else:
        return 404, "<!DOCTYPE html><title>Not found</title><p>Not found</p>"
    visitor = html.escape(visitor_code or "anonymous")
    return 200, (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title} · trackgate demo</title>'
        f"</head>\n<body>\n{_NAVIGATION}\n<h1>{title}</h1>\n{body}\n"
        f"<p><small>Your visitor code: <code>{visitor}</code></small></p>\n</body>\n</html>\n"
    )


def _events_table(settings: Settings) -> str:
    from .dispatch.registry import factory_for

    if "store" not in settings.sinks:
        return "<p>The local store is not among TRACKGATE_SINKS.</p>"
    sink: Any = factory_for("store")(settings)
    store = getattr(sink, "store", sink)
    try:
        events = store.tail(20)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    if not events:
        return "<p>No event stored yet (delivery runs in the background: reload in a moment).</p>"
    rows = "".join(
        f"<tr><td>{html.escape(e.kind)}</td><td>{html.escape(e.visitor or '')}</td>"
        f"<td>{html.escape(e.url or '')}</td></tr>"
        for e in events
    )
    return f"<table><tr><th>kind</th><th>visitor</th><th>url</th></tr>{rows}</table>"


def asgi_site(settings: Settings) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from .lookup import get_visitor

    async def page(request: Request) -> HTMLResponse:
        visitor = get_visitor(request)
        status, body = render(request.url.path, visitor.code if visitor else None, settings)
        return HTMLResponse(body, status_code=status)

    paths = [*_PAGES, "/events"]
    return Starlette(routes=[Route(path, page) for path in paths])


def wsgi_site(settings: Settings) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    from werkzeug.wrappers import Request, Response

    from .lookup import get_visitor

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        visitor = get_visitor(request)
        status, body = render(request.path, visitor.code if visitor else None, settings)
        return Response(body, status=status, mimetype="text/html")(environ, start_response)

    return app
