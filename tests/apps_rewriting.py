"""Apps whose HTML responses trackgate rewrites in the rewriting tests: compressed, streamed, opted out,
a fragment, HEAD and 304, under uvicorn (``asgi_app``) and gunicorn (``wsgi_app``); an HTML file
response (``file_app``) for granian, which sends files itself."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

import trackgate

STATIC_PAGE = Path(__file__).parent / "static" / "page.html"
PAGE = (
    "<!DOCTYPE html><html><head><title>Shop</title></head><body>"
    '<a href="https://partner.example/deal?a=1&amp;b=2">deal</a> <a href="/about">about</a>'
    "</body></html>"
)


async def _page(request: Request) -> Response:
    headers = {
        "/off": {"X-Trackgate": "off"},
        "/export": {"Content-Disposition": 'attachment; filename="shop.html"'},
        "/tagged": {"ETag": '"shop-v1"'},
        "/cached": {"Cache-Control": "public, max-age=300"},
    }.get(request.url.path)
    return HTMLResponse(PAGE, headers=headers)


async def _streamed(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        data = PAGE.encode()
        for start in range(0, len(data), 7):
            yield data[start : start + 7]

    return StreamingResponse(parts(), media_type="text/html")


async def _fragment(request: Request) -> Response:
    # What htmx, Turbo frames or fetch() get to put into a page already shown.
    return HTMLResponse(
        '<li><a href="//partner.example/item/6">item 6</a></li>'
        '<li><a href="https://partner.example/item/7">item 7</a></li>'
    )


XHTML = (
    '<html xmlns="http://www.w3.org/1999/xhtml"><body><p><![CDATA[ a > <a href="https://partner.example/in">'
    ' ]]></p><a href="https://partner.example/out">out</a></body></html>'
)


async def _xhtml(request: Request) -> Response:
    return Response(XHTML, media_type="application/xhtml+xml")


async def _revalidated(request: Request) -> Response:
    """Conditional GET as frameworks do it: If-None-Match compared weakly (RFC 9110), a 304 with the app's
    own (strong) validators."""
    headers = {"ETag": '"shop-v2"', "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT", "Accept-Ranges": "bytes"}
    if "shop-v2" in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return HTMLResponse(PAGE, headers=headers)


async def _not_modified(request: Request) -> Response:
    return Response(status_code=304, headers={"Content-Type": "text/html"})


asgi_app = trackgate.ASGIMiddleware(
    GZipMiddleware(
        Starlette(
            routes=[
                Route("/", _page, methods=["GET", "HEAD"]),
                Route("/off", _page),
                Route("/export", _page),
                Route("/tagged", _page),
                Route("/cached", _page),
                Route("/streamed", _streamed),
                Route("/not-modified", _not_modified),
                Route("/revalidated", _revalidated),
                Route("/fragment", _fragment),
                Route("/xhtml", _xhtml),
            ]
        ),
        minimum_size=0,
    )
)


def _wsgi_site(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if "site-v1" in environ.get("HTTP_IF_NONE_MATCH", ""):  # (compared weakly, as RFC 9110 asks)
        start_response("304 Not Modified", [("ETag", '"site-v1"'), ("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")])
        return []
    body = gzip.compress(PAGE.encode())
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(body))),
            ("ETag", '"site-v1"'),
        ],
    )
    return [body]


wsgi_app = trackgate.WSGIMiddleware(_wsgi_site)


async def _file(request: Request) -> FileResponse:
    # With a server that offers the pathsend extension (granian), Starlette lets the server send the file.
    return FileResponse(STATIC_PAGE, media_type="text/html")


async def _generated_headers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # ASGI allows any iterable of header pairs; this app hands over a generator.
    pairs = [(b"content-type", b"text/html; charset=utf-8"), (b"x-app", b"kept")]
    await send({"type": "http.response.start", "status": 200, "headers": (pair for pair in pairs)})
    await send({"type": "http.response.body", "body": PAGE.encode()})


generated_headers_app = trackgate.ASGIMiddleware(_generated_headers)
file_app = trackgate.ASGIMiddleware(Starlette(routes=[Route("/page.html", _file)]))
