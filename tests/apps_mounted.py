"""Apps wrapped by trackgate and mounted below the root of a larger app: a Starlette Mount (``asgi_app``,
under uvicorn) and werkzeug's DispatcherMiddleware (``wsgi_app``, under gunicorn), both at /shop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import trackgate

PAGE = '<!DOCTYPE html><html><body><a href="https://partner.example/deal">deal</a></body></html>'


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


_shop = Starlette(routes=[Route("/page", _page), Route("/page/{rest:path}", _page)])
asgi_app = Starlette(routes=[Mount("/shop", app=trackgate.ASGIMiddleware(_shop))])


def _wsgi_page(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if not environ.get("PATH_INFO", "").startswith("/page"):
        return NotFound()(environ, start_response)
    body = PAGE.encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


wsgi_app = DispatcherMiddleware(NotFound(), {"/shop": trackgate.WSGIMiddleware(_wsgi_page)})
