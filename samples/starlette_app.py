"""A Starlette site wrapped by trackgate through its Starlette glue.

Run it:  uvicorn samples.starlette_app:app     (from the repository root; TRACKGATE_* variables configure it)

Every page shows the visitor code; the partner link leaves the site and so becomes a click-tracking link;
/signup records a "signup" event.
"""

from __future__ import annotations

import html

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

import trackgate
from trackgate.adapters.starlette import middleware, visitor


def _page(request: Request, title: str, text: str) -> HTMLResponse:
    found = visitor(request)
    code = found.code if found else "(not tracked)"
    return HTMLResponse(
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
        f"<p>Your visitor code: <code>{html.escape(code)}</code></p><p>{text}</p>"
        '<p><a href="/">Home</a> · <a href="/signup">Sign up</a> · '
        '<a href="https://partner.example/offer">Partner offer</a></p></body></html>'
    )


async def home(request: Request) -> HTMLResponse:
    return _page(request, "Home", "Welcome.")


async def signup(request: Request) -> HTMLResponse:
    trackgate.record(request, "signup")
    return _page(request, "Signed up", "Thanks for signing up.")


app = Starlette(routes=[Route("/", home), Route("/signup", signup)], middleware=[middleware()])
