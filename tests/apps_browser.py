"""The shop site of the browser test, wrapped by trackgate and configured only through TRACKGATE_*.

``asgi_app`` runs under uvicorn, ``wsgi_app`` under gunicorn; ``DEST_URL`` is the partner site the
outbound link points at (another host, so the default ``outbound`` rewriting tracks it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from werkzeug.wrappers import Request as WSGIRequest
from werkzeug.wrappers import Response as WSGIResponse

import trackgate

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Shop &amp; Co</title></head>
<body>
<h1>Café shop</h1>
<p>Visitor <span id="visitor">{visitor}</span></p>
<a id="out" href="{dest}?ref=shop&amp;lang=fr">Partner café</a>
<a id="in" href="/about">About us</a>
<a id="mail" href="mailto:shop@example.org">Write</a>
</body></html>
"""


def page(path: str, visitor: trackgate.Visitor | None) -> str:
    code = visitor.code if visitor is not None else "-"
    return PAGE.format(visitor=code, dest=os.environ["DEST_URL"]) if path == "/" else "<p>About</p>"


async def _home(request: Request) -> HTMLResponse:
    return HTMLResponse(page(request.url.path, trackgate.get_visitor(request)))


asgi_app = trackgate.ASGIMiddleware(Starlette(routes=[Route("/", _home), Route("/about", _home)]))


def _wsgi_site(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    request = WSGIRequest(environ)
    response = WSGIResponse(page(request.path, trackgate.get_visitor(request)), mimetype="text/html")
    return response(environ, start_response)


wsgi_app = trackgate.WSGIMiddleware(_wsgi_site)
