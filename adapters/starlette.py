"""Starlette glue: ``Starlette(middleware=[trackgate.adapters.starlette.middleware()])``.

from trackgate.adapters.starlette import middleware, visitor
app = Starlette(routes=..., middleware=[middleware(consent="required")])
...
visitor(request)                                  # in an endpoint: this visitor, or None
"""

from __future__ import annotations

from typing import Any

from ..asgi import ASGIMiddleware
from ..identity import Visitor
from ..lookup import get_visitor
from ._extras import require

_middleware = require("starlette.middleware", "starlette")


def middleware(**overrides: Any) -> Any:
    """A ``starlette.middleware.Middleware`` entry; keywords are Settings fields (and ``emit``/``settings``)."""
    return _middleware.Middleware(ASGIMiddleware, **overrides)


def visitor(request: Any) -> Visitor | None:
    return get_visitor(request)
