"""Flask glue: ``init_app(app)`` wraps ``app.wsgi_app`` with trackgate's WSGI middleware.

    from trackgate.adapters.flask import init_app, visitor
    app.config["TRACKGATE_COOKIE_NAME"] = "vid"      # any TRACKGATE_* key of app.config
    init_app(app, consent="required")                 # keywords beat app.config, which beats the environment
    ...
    visitor()                                         # inside a request: this visitor, or None

Needs the ``flask`` extra (``pip install 'trackgate[flask]'``).
"""

from __future__ import annotations

from typing import Any

from ..gate import Emit
from ..identity import Visitor
from ..lookup import get_visitor
from ..settings import Settings
from ..wsgi import WSGIMiddleware
from ._extras import require, settings_keywords

_flask = require("flask", "flask")


_MARK = "_trackgate_flask_init_app"  # set on the middleware init_app made (not on one a user added)


def init_app(
    app: Any, settings: Settings | None = None, *, emit: Emit | None = None, **overrides: Any
) -> WSGIMiddleware:
    """Wrap ``app.wsgi_app``; returns the middleware. With ``settings`` given, app.config is not read.

    Called again for the same app (a factory run twice, a test fixture), it replaces its first middleware
    rather than wrap it: two would set two visitor cookies and count every page view twice."""
    if settings is None:
        settings = Settings(**(settings_keywords(dict(app.config)) | overrides))
    elif overrides:
        settings = settings.replace(**overrides)
    inner = app.wsgi_app
    if isinstance(inner, WSGIMiddleware) and getattr(inner, _MARK, False):
        inner = inner.app
    middleware = WSGIMiddleware(inner, settings, emit=emit)
    setattr(middleware, _MARK, True)
    app.wsgi_app = middleware
    return middleware


def visitor() -> Visitor | None:
    """The visitor of the current Flask request (call it inside a request)."""
    return get_visitor(_flask.request)
