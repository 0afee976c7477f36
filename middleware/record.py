"""Helpers for apps: record what a visitor did, from wherever the app holds the visitor.

    trackgate.record(request, "signed-up", {"plan": "pro"})
    trackgate.identify(request, user_id="u-42")          # ties the visitor code to the app's user
    trackgate.set_properties(request, {"country": "NZ"})
    trackgate.track_conversion(request, "checkout", revenue=49.0)

``request`` may be a WSGI environ, an ASGI scope, a werkzeug/Flask/starlette/Django request that passed
through trackgate's middleware, a ``trackgate.Visitor``, or a visitor code string. Each helper returns the
Event it submitted; submitting never blocks (see ``trackgate.dispatch``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .events import Event, EventKind
from .gate import Gate
from .identity import Visitor
from .lookup import get_emit, get_source, get_visitor
from .requestfacts import from_environ, from_scope

__all__ = ["identify", "record", "set_properties", "track_conversion"]

def record(request_or_visitor: Any, name: str, properties: Mapping[str, Any] | None = None) -> Event:
    """A custom event ``name`` for this visitor."""
    return _submit(request_or_visitor, "custom", name=name, properties=properties)


def set_properties(request_or_visitor: Any, properties: Mapping[str, Any]) -> Event:
    """Properties of the visitor (KISSmetrics "set", Matomo custom data)."""
    return _submit(request_or_visitor, "set", name="set", properties=properties)


def identify(request_or_visitor: Any, user_id: str) -> Event:
    """The visitor is the app's user ``user_id`` (an alias from the visitor code to the user id)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("identify() needs a non-empty user id string")
    return _submit(request_or_visitor, "identify", name="identify", user_id=user_id)


def track_conversion(
    request_or_visitor: Any, goal: str, revenue: float | None = None, properties: Mapping[str, Any] | None = None
) -> Event:
    """The visitor reached ``goal``, worth ``revenue`` if given."""
    if revenue is not None and not isinstance(revenue, int | float):
        raise TypeError(f"revenue must be a number, not {type(revenue).__name__}")
    return _submit(
        request_or_visitor, "conversion", name=goal, properties=properties,
        revenue=None if revenue is None else float(revenue),
    )


def visitor_code(request_or_visitor: Any) -> str:
    """The visitor code held by a request, a Visitor or a string; ``LookupError`` when there is none."""
    if isinstance(request_or_visitor, str):
        if not request_or_visitor:
            raise LookupError("empty visitor code")
        return request_or_visitor
    code = getattr(request_or_visitor, "code", None)
    if isinstance(code, str) and code:
        return code
    visitor = get_visitor(request_or_visitor)
    if visitor is None:
        raise LookupError(
            f"no trackgate visitor on this {type(request_or_visitor).__name__}: pass a request that went "
            "through trackgate's middleware, a trackgate.Visitor or a visitor code"
        )
    return visitor.code


def _submit(
    request_or_visitor: Any, kind: EventKind, *, name: str, properties: Mapping[str, Any] | None = None,
    user_id: str | None = None, revenue: float | None = None,
) -> Event:
    if properties is not None and not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a mapping, not {type(properties).__name__}")
    # Where the middleware the request came through sends events; none for a code or a Visitor.
    emit = None if isinstance(request_or_visitor, str | Visitor) else get_emit(request_or_visitor)
    event = Event(
        kind, name=name, visitor=visitor_code(request_or_visitor), user_id=user_id,
        properties=dict(properties or {}), revenue=revenue, **_request_fields(request_or_visitor, emit),
    )
    event.snapshot()  # what cannot be stored fails here, in the caller, whatever the destination
    if emit is None:
        from .dispatch import submit  # the dispatcher loads on first use, not on import

        emit = submit
    emit(event)
    return event


def _request_fields(request: Any, emit: Callable[[Event], None] | None) -> dict[str, Any]:
    """What the event keeps of a request that came through the middleware: its page, referrer, browser,
    language and address, as the middleware's own events keep them."""
    gate = getattr(emit, "__self__", None)  # the emit a shell left is its gate's
    source = get_source(request)
    if not isinstance(gate, Gate) or source is None:
        return {}
    trusted = gate.settings.trusted_proxies
    facts = from_environ(source, trusted) if "wsgi.version" in source else from_scope(source, trusted)
    return gate.request_fields(facts)
