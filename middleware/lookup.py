"""Find trackgate's per-request state on whatever the app holds: a WSGI environ, an ASGI scope, or a
werkzeug, Flask, starlette or Django request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .events import Event
from .identity import Visitor, VisitorState

STATE_KEY = "trackgate.state"
VISITOR_KEY = "trackgate.visitor"
EMIT_KEY = "trackgate.emit"  # where this request's middleware sends events (its dispatcher, or a callback)


def get_source(request: Any) -> Mapping[str, Any] | None:
    """The WSGI environ or ASGI scope a request came with (a request object's, or the mapping itself)."""
    if isinstance(request, Mapping):
        if "wsgi.version" in request or request.get("type") in ("http", "websocket"):
            return request
        return None
    for attribute in ("environ", "META", "scope"):  # werkzeug/Flask, Django (WSGI), starlette/Django (ASGI)
        inner = getattr(request, attribute, None)
        if isinstance(inner, Mapping) and get_source(inner) is not None:
            return inner
    return None


def _holder(request: Any) -> Mapping[str, Any] | None:
    """The mapping the shells store their keys in: the environ, or the scope's "state" dict."""
    if isinstance(request, Mapping) and STATE_KEY in request:
        return request  # an environ as a test or a server stub makes it, or a scope's state itself
    source = get_source(request)
    if source is None or "wsgi.version" in source:
        return source
    state = source.get("state")
    return state if isinstance(state, Mapping) else None


def get_state(request: Any) -> VisitorState | None:
    holder = _holder(request)
    state = holder.get(STATE_KEY) if holder is not None else None
    return state if isinstance(state, VisitorState) else None


def get_emit(request: Any) -> Callable[[Event], None] | None:
    """The event destination of the middleware this request passed through, if any."""
    holder = _holder(request)
    emit = holder.get(EMIT_KEY) if holder is not None else None
    return emit if callable(emit) else None


def get_visitor(request: Any) -> Visitor | None:
    """The visitor of this request, or None when the request did not pass through trackgate."""
    state = get_state(request)
    return state.visitor if state is not None else None


def set_consent(request: Any, granted: bool = True) -> Visitor:
    """Grant (or withdraw) tracking consent for this visitor; the response stores (or deletes) the cookie.

    Call it before the response starts: that is when the shell writes the Set-Cookie header.
    """
    state = get_state(request)
    if state is None:
        raise LookupError("this request did not pass through trackgate's middleware")
    state.set_consent(granted)
    holder = _holder(request)
    if holder is not None and isinstance(holder, dict):
        holder[VISITOR_KEY] = state.visitor
    return state.visitor
