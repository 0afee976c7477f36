"""Apps that report the visitor trackgate gave them, for the identity tests on real servers: ``asgi_app``
(Starlette, under uvicorn) and ``wsgi_app`` (a plain WSGI callable, under gunicorn). Events are dropped:
identity is the subject here."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import trackgate


def _drop(event: trackgate.Event) -> None:
    """Events are not what these apps are for."""


def _describe(visitor: trackgate.Visitor | None) -> dict[str, Any]:
    if visitor is None:
        return {"code": None}
    return {"code": visitor.code, "is_new": visitor.is_new, "consent": visitor.consent}


async def _who(request: Request) -> JSONResponse:
    return JSONResponse(_describe(trackgate.get_visitor(request)))


asgi_app = trackgate.ASGIMiddleware(Starlette(routes=[Route("/", _who)]), emit=_drop)


def _plain_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps(_describe(trackgate.get_visitor(environ))).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


wsgi_app = trackgate.WSGIMiddleware(_plain_wsgi, emit=_drop)


def _start_reporting_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The visitor, and the kind of start_response the app got: the compiled start's (WSGIStart) or the
    Python shell's (a bound method)."""
    report = {**_describe(trackgate.get_visitor(environ)), "start": type(start_response).__name__}
    body = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


# The default set-up (events to the background dispatcher, which the first request starts).
start_reporting_wsgi_app = trackgate.WSGIMiddleware(_start_reporting_wsgi)


def _glue_app() -> Starlette:
    """A Starlette app configured through trackgate's Starlette glue, as a user would write it."""
    from trackgate.adapters.starlette import middleware, visitor

    async def who(request: Request) -> JSONResponse:
        return JSONResponse(_describe(visitor(request)))

    return Starlette(routes=[Route("/", who)], middleware=[middleware(emit=_drop, cookie_name="glue_vid")])


glue_app = _glue_app()


_CONSTANT_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


async def _constant_start(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that sends one and the same start message for every response (a module constant)."""
    if scope["type"] != "http":
        return
    await send(_CONSTANT_START)
    await send({"type": "http.response.body", "body": b"hello"})


constant_start_app = trackgate.ASGIMiddleware(_constant_start, emit=_drop)


def _consent_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """/grant and /withdraw call set_consent, as a cookie banner's endpoints would."""
    if environ.get("PATH_INFO") in ("/grant", "/withdraw"):
        trackgate.set_consent(environ, environ["PATH_INFO"] == "/grant")
    return _plain_wsgi(environ, start_response)


consent_wsgi_app = trackgate.WSGIMiddleware(_consent_wsgi, emit=_drop, consent="required")


async def _consent_grant(request: Request) -> JSONResponse:
    trackgate.set_consent(request, request.url.path == "/grant")
    return JSONResponse(_describe(trackgate.get_visitor(request)))


consent_asgi_app = trackgate.ASGIMiddleware(
    Starlette(routes=[Route("/grant", _consent_grant), Route("/withdraw", _consent_grant)]),
    emit=_drop,
    consent="required",
)


def dispatching_app() -> trackgate.ASGIMiddleware:
    """(uvicorn --factory: made in the server only.) The default set-up (events to the background dispatcher,
    which the server's lifespan starts), with a route that says whether the requests before it took the ASGI
    shell's compiled start."""

    async def fast(request: Request) -> JSONResponse:
        return JSONResponse({"compiled": app._fast is not None and app._fast is app._visit_config})

    app = trackgate.ASGIMiddleware(Starlette(routes=[Route("/", _who), Route("/fast", fast)]))
    return app
