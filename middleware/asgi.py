"""ASGI shell: scope/receive/send -> core; a pure ASGI middleware (no BaseHTTPMiddleware).

    from trackgate import ASGIMiddleware
    app = ASGIMiddleware(app)                        # TRACKGATE_* variables
    app = ASGIMiddleware(app, rewrite="all")          # a keyword beats the environment

Websocket traffic passes straight through; lifespan passes through too, and on the way starts the event
dispatcher (startup) and drains it within TRACKGATE_SHUTDOWN_TIMEOUT (shutdown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

from ._boundary import guarded, swallow
from .facts import RequestFacts
from .gate import Emit, Gate
from .identity import VisitorState
from .lookup import EMIT_KEY, STATE_KEY, VISITOR_KEY
from .settings import Settings
from .shell_common import OPT_OUT_HEADER, client_address, looks_like_html, make_settings

if TYPE_CHECKING:
    from .bodyfilter import BodyFilter

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan" and self._uses_dispatcher:
                receive = self._watch_lifespan(receive)
            await self.app(scope, receive, send)
            return
        if self.gate.owns(scope["path"]):
            await self._answer(scope, send)
            return
        try:
            cookie, gpc = _identity_headers(scope["headers"])
            state = self.gate.identity.resolve(cookie, scope.get("query_string", b"").decode("latin-1"), gpc)
            request_state = scope.setdefault("state", {})
            request_state[STATE_KEY] = state
            request_state[VISITOR_KEY] = state.visitor
            request_state[EMIT_KEY] = self.gate.emit
        except Exception as error:
            swallow("visitor identity", error)
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Responder(self.gate, scope, state, send).send)

    async def _answer(self, scope: Scope, send: Send) -> None:
        facts = _facts(scope, self.settings.trusted_proxies)
        cookie, gpc = _identity_headers(scope["headers"])
        visitor = self.gate.identity.resolve(cookie, "", gpc).visitor
        reply = self.gate.answer(facts, visitor.code if visitor.consent and not visitor.is_new else None)
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if facts.method == "HEAD" else reply.body})

    def _watch_lifespan(self, receive: Receive) -> Receive:
        settings = self.settings

        async def watched() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                with guarded("starting the event dispatcher"):
                    from .dispatch import get_dispatcher

                    get_dispatcher(settings).start()
            elif message["type"] == "lifespan.shutdown":
                with guarded("draining the event dispatcher"):
                    from .dispatch import get_dispatcher

                    await asyncio.to_thread(get_dispatcher(settings).drain, settings.shutdown_timeout)
            return message

        return watched


class _Responder:
    """One response. ``http.response.start`` is held back only when the body is HTML to rewrite: the
    first body message then says whether it came whole (new Content-Length) or streams (none)."""

    __slots__ = ("_filter", "_gate", "_held", "_scope", "_send", "_state", "_streaming")

    def __init__(self, gate: Gate, scope: Scope, state: VisitorState, send: Send) -> None:
        self._gate = gate
        self._scope = scope
        self._state = state
        self._send = send
        self._filter: BodyFilter | None = None
        self._held: Message | None = None
        self._streaming = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self._filter is not None:
            await self._body(message)
        else:
            await self._send(message)

    async def _start(self, message: Message) -> None:
        try:
            cookie = self._gate.identity.set_cookie_header(self._state, self._scope.get("scheme") == "https")
        except Exception as error:
            swallow("visitor cookie", error)
            cookie = None
        headers, content_type = _edit_headers(message.get("headers", ()), cookie)
        message["headers"] = headers
        if content_type is not None and looks_like_html(content_type):
            with guarded("choosing to rewrite"):
                facts = _facts(self._scope, 0)
                text_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
                self._filter = self._gate.body_filter(facts, self._state.visitor, message["status"], text_headers)
        if self._filter is None:
            await self._send(message)
        else:
            # Don't send the start until the first body message says whether the body comes whole.
            self._held = message

    async def _body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        held, self._held = self._held, None
        if held is not None and not more:
            await self._whole(held, body)
            return
        if held is not None:
            held["headers"] = [(k, v) for k, v in held["headers"] if k.lower() != b"content-length"]
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
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
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


def _identity_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    cookies: list[str] = []
    gpc = None
    for name, value in headers:
        if name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name == b"sec-gpc":
            gpc = value.decode("latin-1")
    # HTTP/2 may split cookies over several header lines; they form one list.
    return ("; ".join(cookies) if cookies else None), gpc


def _edit_headers(
    headers: Any, set_cookie: str | None
) -> tuple[list[tuple[bytes, bytes]], str | None]:
    content_type = None
    opted_out = False
    edited: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == _OPT_OUT:
            opted_out = opted_out or value.strip().lower() == b"off"
            continue
        if lowered == b"content-type" and (value[:4].lower() == b"text" or value[:5].lower() == b"appli"):
            content_type = value.decode("latin-1")  # only HTML-ish types are worth decoding for a closer look
        edited.append((name, value))
    if set_cookie is not None:
        edited.append((b"set-cookie", set_cookie.encode("latin-1")))
    return edited, None if opted_out else content_type


def _facts(scope: Scope, trusted_proxies: int) -> RequestFacts:
    headers = Headers(scope=scope)
    scheme = scope.get("scheme", "http")
    host = headers.get("host") or _server_host(scope, scheme)
    peer = scope["client"][0] if scope.get("client") else None
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and not path.startswith(root):
        path = root + path
    return RequestFacts(
        method=scope.get("method", "GET").upper(),
        scheme=scheme,
        host=host,
        path=path,
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        client_addr=client_address(peer, headers.get("x-forwarded-for") if trusted_proxies else None, trusted_proxies),
    )


def _server_host(scope: Scope, scheme: str) -> str:
    server = scope.get("server")
    if not server:
        return "localhost"
    name, port = server[0], server[1]
    default = 443 if scheme == "https" else 80
    return name if port in (None, default) else f"{name}:{port}"

