"""Starlette glue: ``Starlette(middleware=[trackgate.adapters.starlette.middleware()])``.

from trackgate.adapters.starlette import middleware, visitor
app = Starlette(routes=..., middleware=[middleware(consent="required")])
...
visitor(request)                                  # in an endpoint: this visitor, or None
"""

from __future__ import annotations

from typing import Any, cast

from starlette.middleware import Middleware

from ..asgi import ASGIMiddleware
from ..identity import Visitor
from ..lookup import get_visitor


def middleware(**overrides: Any) -> Middleware:
    """A ``starlette.middleware.Middleware`` entry; keywords are Settings fields (and ``emit``/``settings``)."""
    # starlette is a core dependency of trackgate, so unlike Flask and Django it needs no extra.
    # cast: trackgate's ASGI types use MutableMapping messages where starlette's factory protocol says Any.
    return Middleware(cast(Any, ASGIMiddleware), **overrides)


def visitor(request: Any) -> Visitor | None:
    return get_visitor(request)
