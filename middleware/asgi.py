"""ASGI shell: scope/receive/send -> core; a pure ASGI middleware (no BaseHTTPMiddleware).

    from trackgate import ASGIMiddleware
    app = ASGIMiddleware(app)                        # TRACKGATE_* variables
    app = ASGIMiddleware(app, rewrite="all")          # a keyword beats the environment

Websocket traffic passes straight through; lifespan passes through too, and on the way starts the event
dispatcher (startup) and drains it within TRACKGATE_SHUTDOWN_TIMEOUT once the app has shut down; for an app
that refuses lifespan, trackgate answers it (lifespan.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._boundary import guarded, swallow
from .facts import below_mount
from .gate import Emit, Gate
from .identity import VisitorState
from .lifespan import run_lifespan
from .lookup import EMIT_KEY, STATE_KEY, VISITOR_KEY
from .requestfacts import from_scope, header_fields, scope_client_addr
from .settings import Settings
from .shell_common import (
    OPT_OUT_HEADER,
    compiled_visit_config,
    endpoint_visitor,
    looks_like_html,
    make_settings,
    revalidated_copy_headers,
    rewritten_headers,
    visitor_cookie_parts,
)

if TYPE_CHECKING:
    from .bodyfilter import BodyFilter
    from .endpoints import Reply

# The send of responses that need no rewriting, and the reading of the request's headers, in C
# (_asgi_send.c); the Python code below is the reference. Set to None, the Python code runs.
# prepare() is the start of __call__ for a first visit and a known returning visitor, with that Responder.
# Call is the type of ASGIMiddleware.__call__ when built (see there).
Responder: Callable[[tuple[Any, ...], Any, VisitorState, Any], Any] | None
request_headers: Callable[[Any], tuple[str | None, str | None] | None] | None
prepare: Callable[[tuple[Any, ...], Any, Any], Any] | None
Call: Callable[[], Any] | None
try:
    from ._asgi_send import Call, Responder, prepare, request_headers
except ImportError:  # pragma: no cover - built wherever a C compiler is at hand
    Responder = request_headers = prepare = Call = None

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_OPT_OUT = OPT_OUT_HEADER.encode()


class ASGIMiddleware:
    def __init__(
        self, app: ASGIApp, settings: Settings | None = None, *, emit: Emit | None = None, **overrides: Any
    ) -> None:
        self.app = app
        self.settings = make_settings(settings, overrides)
        # emit: where events go instead of the background dispatcher (a callback, for tests and embedding).
        self.gate = Gate(self.settings, emit=emit)
        self._uses_dispatcher = emit is None
        # Bound once, not once per request.
        self._emit = self.gate.emit
        self._resolve = self.gate.identity.resolve
        self._send_config = _send_config(self.gate)
        self._visit_config = _visit_config(self.gate, self._send_config)
        # The compiled start's configuration (see prepare): None when not built, switched off
        # (asgi.prepare = None) or given a set-up it cannot read. Used once the gate is awake (the first
        # request, or lifespan's startup).
        usable = prepare is not None and Responder is not None and self._visit_config is not None
        self._compiled = self._visit_config if usable else None
        self._fast = None if self.gate.asleep else self._compiled

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan" and self._uses_dispatcher:
                await run_lifespan(self.app, scope, receive, send, self.gate)
                return
            await self.app(scope, receive, send)
            return
        if self.gate.asleep:
            self.gate.wake()
        self._fast = self._compiled  # awake now (this request woke it, or lifespan's startup did)
        # ASGI's path includes root_path (servers and Starlette's Mount keep it whole): our paths are below it.
        path = scope["path"]
        root = scope.get("root_path")
        route = below_mount(path, root) if root else path
        if self.gate.owns(route):
            reply, head = self._answer(scope, route)
            await send({"type": "http.response.start", "status": reply.status, "headers": list(reply.asgi_headers)})
            await send({"type": "http.response.body", "body": b"" if head else reply.body})
            return
        try:
            cookie, gpc = _cookie_and_gpc(scope["headers"])
            query = scope.get("query_string")
            state = self._resolve(cookie, query.decode("latin-1") if query else "", gpc)
            request_state = scope.get("state")
            if request_state is None:
                request_state = scope["state"] = {}
            request_state[STATE_KEY] = state
            request_state[VISITOR_KEY] = state.visitor
            request_state[EMIT_KEY] = self._emit
        except Exception as error:
            swallow("visitor identity", error)
            await self.app(scope, receive, send)
            return
        if Responder is not None and self._send_config is not None:
            await self.app(scope, receive, Responder(self._send_config, scope, state, send))
        else:
            await self.app(scope, receive, _responder(self.gate, scope, state, send))

    # Calling the middleware: with the extension built, Call (_asgi_send.c) hands the requests the compiled
    # start decides to the app with its Responder, returning the app's own awaitable (no Python frame or
    # coroutine of ours), and the rest to _serve. Looked up on an instance, as servers do to choose ASGI 3,
    # it gives _serve, a coroutine function.
    __call__ = Call() if Call is not None else _serve

    def _answer(self, scope: Scope, route: str) -> tuple[Reply, bool]:
        """The reply for a path of ours, and whether the request was a HEAD (the reply goes without body)."""
        raw_headers = scope["headers"]
        cookie, gpc = _cookie_and_gpc(raw_headers)
        headers = header_fields(raw_headers, _EVENT_HEADERS)
        method = scope.get("method", "GET").upper()
        request = _TrackingRequest(
            route, method, headers, scope_client_addr(scope, headers, self.settings.trusted_proxies)
        )
        return self.gate.answer(request, endpoint_visitor(self.gate.identity, cookie, gpc)), method == "HEAD"


class _TrackingRequest:
    """What answering a tracking path reads of its request (endpoints.TrackingRequest), without the rest
    of RequestFacts: a click pays for nothing it does not read."""

    __slots__ = ("client_addr", "headers", "method", "route_path")

    def __init__(self, route_path: str, method: str, headers: dict[str, str], client_addr: str | None) -> None:
        self.route_path = route_path
        self.method = method
        self.headers = headers
        self.client_addr = client_addr


# The request headers a tracking path reads into its event (and X-Forwarded-For for the address).
_EVENT_HEADERS = frozenset(("user-agent", "referer", "accept-language", "x-forwarded-for"))


def _send_config(gate: Gate) -> tuple[Any, ...] | None:
    """What the compiled Responder needs of a middleware: the Python code it hands a start to that it does
    not send whole (see _asgi_send.c), and what a new visitor's cookie is made of."""
    parts = visitor_cookie_parts(gate)
    if parts is None:
        return None
    try:
        cookie_parts = [part.encode("latin-1") for part in parts]
    except UnicodeEncodeError as error:
        swallow("preparing the visitor cookie", error)
        return None  # the Python responder says what is wrong, response by response
    return (gate, _start, _nothing, _OPT_OUT, gate.rewrites, *cookie_parts)


def _visit_config(gate: Gate, send_config: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """What the compiled prepare() needs of a middleware (see _asgi_send.c): the prefix, and the visits
    identity.py decides without reading anything (see Identity.resolve)."""
    identity = gate.identity
    if send_config is None or not identity.visitor_param.isascii():
        return None
    return compiled_visit_config(gate, (identity.visitor_param + "=").encode("ascii"), send_config)


def _responder(gate: Gate, scope: Scope, state: VisitorState, send: Send) -> Send:
    """The app's ``send`` for one response: adds the visitor cookie to the start and, when the body is HTML
    to rewrite, hands the rest of the response to a _Rewriting. A closure: it is made for every request.

    It is a plain function returning the awaitable to await (the server's ``send``, most of the time), so
    that each message costs one coroutine, not two.
    """
    rewriting: _Rewriting | None = None

    def send_wrapper(message: Message) -> Awaitable[None]:
        nonlocal rewriting
        if rewriting is not None:
            return rewriting.send(message)
        if message["type"] == "http.response.start":
            message, rewriting = _start(gate, scope, state, message, send)
            if rewriting is not None:
                return _nothing()  # held back until the first body message
        return send(message)

    return _mark_coroutine_function(send_wrapper)


def _mark_coroutine_function(function: Send) -> Send:
    """Say that ``function`` is awaited like a coroutine function (what an ASGI ``send`` is, and what asgiref's
    WsgiToAsgi and async_to_sync check, warning on every call otherwise)."""
    if _MARK is not None:
        return _MARK(function)
    function._is_coroutine = _IS_COROUTINE  # type: ignore[attr-defined]
    return function


# Python 3.12 and later mark with inspect's own; 3.11 with the attribute asyncio.iscoroutinefunction reads.
_MARK: Callable[[Send], Send] | None = getattr(inspect, "markcoroutinefunction", None)
_IS_COROUTINE = getattr(asyncio.coroutines, "_is_coroutine", None)


async def _nothing() -> None:
    return None


def _start(
    gate: Gate, scope: Scope, state: VisitorState, message: Message, send: Send
) -> tuple[Message, _Rewriting | None]:
    """The start message to send (cookie in, opt-out header out) and a _Rewriting when the body is HTML to
    rewrite. The app's message and header list are never changed: an app may send the same constant start
    for every response, and one visitor's cookie must not stay in it for the next."""
    headers = message.get("headers", ())
    if type(headers) is not list and type(headers) is not tuple:
        # Any iterable will do (ASGI says so), and this loop would use up an iterator the server reads next.
        headers = list(headers)
        message = {**message, "headers": headers}
    content_type = None
    opted_out = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-type":
            # Only HTML types are worth decoding for a closer look (text/plain, JSON, images pay nothing).
            content_type = value.decode("latin-1") if b"html" in value.lower() else None
        elif lowered == _OPT_OUT:
            opted_out = True
    cookie = None
    if state.cookie_action is not None:
        try:
            cookie = gate.identity.set_cookie_header(state, scope.get("scheme") == "https")
        except Exception as error:
            swallow("visitor cookie", error)
    if opted_out:
        content_type = None if _says_off(headers) else content_type
        edited = [(name, value) for name, value in headers if name.lower() != _OPT_OUT]
    elif cookie is not None:
        edited = list(headers)
    else:
        edited = headers  # nothing to change (a returning visitor): no copy
    if cookie is not None:
        edited.append((b"set-cookie", cookie.encode("latin-1")))
    if edited is not headers:
        message = {**message, "headers": edited}
    if message.get("status") == 304 and gate.rewrites:
        with guarded("revalidating a rewritten page"):
            message = _revalidated(scope, message, edited)
        return message, None
    if content_type is None or not looks_like_html(content_type):
        return message, None
    body_filter = None
    with guarded("choosing to rewrite"):
        facts = from_scope(scope, 0)
        text_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in edited]
        body_filter = gate.body_filter(facts, state.visitor, message["status"], text_headers)
        head = body_filter is None and gate.head_of_rewritten(facts, message["status"], text_headers)
        if body_filter is not None or head:
            rewritten = {
                **message,
                "headers": [
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in rewritten_headers(text_headers, head=head)
                ],
            }
            if body_filter is not None:
                # The start as the app made it stays at hand for a body the server sends itself (a file).
                return rewritten, _Rewriting(body_filter, rewritten, message, send)
            message = rewritten
    return message, None


def _revalidated(scope: Scope, message: Message, headers: Any) -> Message:
    """A 304 that confirms a rewritten copy keeps that copy's headers (see revalidated_copy_headers)."""
    if_none_match = None
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            text = value.decode("latin-1")
            if_none_match = text if if_none_match is None else if_none_match + ", " + text
    text_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
    kept = revalidated_copy_headers(text_headers, if_none_match)
    if kept is None:
        return message
    return {**message, "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in kept]}


class _Rewriting:
    """An HTML response being rewritten. ``http.response.start`` is held back until the first body message
    says whether the body came whole (new Content-Length) or streams (none)."""

    __slots__ = ("_filter", "_held", "_send", "_unrewritten")

    def __init__(self, body_filter: BodyFilter, start: Message, unrewritten: Message, send: Send) -> None:
        self._filter: BodyFilter | None = body_filter
        self._held: Message | None = start  # a message of our own: its headers may be changed
        self._unrewritten = unrewritten  # the start without the rewriting's headers (weak ETag, no length)
        self._send = send

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and self._filter is not None:
            await self._body(message)
            return
        if self._held is not None:
            # A body the server sends itself (the pathsend and zerocopysend extensions: a file) cannot be
            # rewritten; the start goes out as the app made it (the cookie added), and the body after it.
            self._held = self._filter = None
            await self._send(self._unrewritten)
        await self._send(message)

    async def _body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        held, self._held = self._held, None
        if held is not None and not more:
            await self._whole(held, body)
            return
        if held is not None:
            held["headers"] = _without_length(held["headers"])
            await self._send(held)
        out = self._feed(body)
        if not more:
            out += self._finish()
        await self._send({"type": "http.response.body", "body": out, "more_body": more})

    async def _whole(self, start: Message, body: bytes) -> None:
        out = body
        with guarded("rewriting an HTML body"):
            assert self._filter is not None
            out = self._filter.feed(body) + self._filter.close()
        self._filter = None
        headers = _without_length(start["headers"])
        if not any(name.lower() == b"transfer-encoding" for name, _ in headers):  # never both (RFC 9112 6.2)
            headers.append((b"content-length", str(len(out)).encode()))
        start["headers"] = headers
        await self._send(start)
        await self._send({"type": "http.response.body", "body": out, "more_body": False})

    def _feed(self, chunk: bytes) -> bytes:
        with guarded("rewriting an HTML stream"):
            assert self._filter is not None
            return self._filter.feed(chunk)
        self._filter = None  # it failed: the rest of the body passes through as it is
        return chunk

    def _finish(self) -> bytes:
        tail = b""
        with guarded("closing the HTML rewriter"):
            if self._filter is not None:
                tail = self._filter.close()
        self._filter = None
        return tail


def _cookie_and_gpc(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The Cookie (its lines joined) and Sec-GPC headers: the compiled reading, else _identity_headers."""
    found = request_headers(headers) if request_headers is not None else None
    return found if found is not None else _identity_headers(headers)


def _identity_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    cookie = gpc = None
    for name, value in headers:
        if name == b"cookie":
            # HTTP/2 may split cookies over several header lines; they form one list.
            text = value.decode("latin-1")
            cookie = text if cookie is None else cookie + "; " + text
        elif name == b"sec-gpc":
            gpc = value.decode("latin-1")
    return cookie, gpc


def _says_off(headers: Any) -> bool:
    return any(name.lower() == _OPT_OUT and value.strip().lower() == b"off" for name, value in headers)


def _without_length(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name.lower() != b"content-length"]
