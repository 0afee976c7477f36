"""WSGI shell: environ -> core -> start_response and the body iterable.

    from trackgate import WSGIMiddleware
    app = WSGIMiddleware(app)                       # TRACKGATE_* variables
    app = WSGIMiddleware(app, cookie_name="vid")     # a keyword beats the environment

The wrapped iterable's ``close()`` is always forwarded, and a response that is not rewritten (anything but
a 200 text/html body) is handed back untouched, ``wsgi.file_wrapper`` included.
"""

from __future__ import annotations

import http
import itertools
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ._boundary import guarded, swallow
from .gate import Emit, Gate
from .identity import VisitorState
from .lookup import EMIT_KEY, STATE_KEY, VISITOR_KEY
from .requestfacts import from_environ
from .settings import Settings
from .shell_common import (
    OPT_OUT_HEADER,
    compiled_visit_config,
    edit_headers,
    endpoint_visitor,
    looks_like_html,
    make_settings,
    revalidated_copy_headers,
    rewritten_headers,
    visitor_cookie_parts,
)

if TYPE_CHECKING:
    from .bodyfilter import BodyFilter

# The start of __call__ for a first visit and a known returning visitor, in C (_asgi_send.c, beside the ASGI
# shell's): WSGICall is the type of WSGIMiddleware.__call__ when built (see there), wsgi_prepare its first
# step (for tests). The Python code below is the reference; set to None, it runs.
WSGICall: Callable[[], Any] | None
wsgi_prepare: Callable[[tuple[Any, ...], Any, Any], Any] | None
try:
    from ._asgi_send import WSGICall, wsgi_prepare
except ImportError:  # pragma: no cover - built wherever a C compiler is at hand
    WSGICall = wsgi_prepare = None

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Environ = dict[str, Any]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = ..., /
    ) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class WSGIMiddleware:
    def __init__(
        self, app: WSGIApp, settings: Settings | None = None, *, emit: Emit | None = None, **overrides: Any
    ) -> None:
        self.app = app
        self.settings = make_settings(settings, overrides)
        # emit: where events go instead of the background dispatcher (a callback, for tests and embedding).
        self.gate = Gate(self.settings, emit=emit)
        # Bound once, not once per request.
        self._emit = self.gate.emit
        self._resolve = self.gate.identity.resolve
        # The compiled start's configuration: None when not built, switched off (wsgi.WSGICall = None before
        # the middleware is made) or given a set-up it cannot read. Used once the gate is awake.
        self._compiled = _wsgi_config(self.gate) if WSGICall is not None else None
        self._fast = None if self.gate.asleep else self._compiled

    def _serve(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        gate = self.gate
        if gate.asleep:
            gate.wake()
        self._fast = self._compiled  # awake now
        if gate.owns(environ.get("PATH_INFO", "")):
            return self._answer(environ, start_response)
        # A bare try, not ``guarded``: this runs for every request of the app.
        try:
            state = self._resolve(
                environ.get("HTTP_COOKIE"), environ.get("QUERY_STRING", ""), environ.get("HTTP_SEC_GPC")
            )
            environ[STATE_KEY] = state
            environ[VISITOR_KEY] = state.visitor
            environ[EMIT_KEY] = self._emit
        except Exception as error:
            swallow("visitor identity", error)
            return self.app(environ, start_response)
        return _Responder(gate, environ, state, start_response).run(self.app)

    # Calling the middleware: with the extension built, WSGICall (_asgi_send.c) starts the requests the
    # compiled start decides (the visitor in the environ, a start_response of its own that hands any response
    # it does not start itself to a _Responder) and leaves the rest to _serve. Looked up on an instance, it
    # gives _serve.
    __call__ = WSGICall() if WSGICall is not None else _serve

    def _answer(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        facts = from_environ(environ, self.settings.trusted_proxies)
        visitor = endpoint_visitor(self.gate.identity, environ.get("HTTP_COOKIE"), environ.get("HTTP_SEC_GPC"))
        reply = self.gate.answer(facts, visitor)
        status = f"{reply.status} {http.HTTPStatus(reply.status).phrase}"
        start_response(status, list(reply.headers))
        return [] if facts.method == "HEAD" else [reply.body]


class _Responder:
    """One response: adds the visitor cookie, and routes an HTML body through a rewriting filter."""

    __slots__ = (
        "_environ", "_filter", "_gate", "_pending", "_server_write", "_start_response", "_started", "_state"
    )

    def __init__(self, gate: Gate, environ: Environ, state: VisitorState, start_response: StartResponse) -> None:
        self._gate = gate
        self._environ = environ
        self._state = state
        self._start_response = start_response
        self._filter: BodyFilter | None = None
        self._pending: tuple[str, list[tuple[str, str]]] | None = None  # held until we know the body's shape
        self._started = False
        self._server_write: Callable[[bytes], object] | None = None

    def run(self, app: WSGIApp) -> Iterable[bytes]:
        return self.after_app(app(self._environ, self._on_start))

    def after_app(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """What the server gets of what the app returned."""
        if self._pending is not None:
            if isinstance(result, list | tuple):
                return self._whole(result)
            return self._stream(result)
        if self._filter is not None:  # the app used write(): the body already streams through the filter
            return _FilteredBody(result, self)
        if not self._started:  # a generator app calls start_response on its first iteration
            return _FilteredBody(result, self, late_start=True)
        return result

    def _on_start(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        self._started = True
        self._filter = None
        self._pending = None
        cookie = None
        if self._state.cookie_action is not None:
            try:
                secure = self._environ.get("wsgi.url_scheme") == "https"
                cookie = self._gate.identity.set_cookie_header(self._state, secure)
            except Exception as error:
                swallow("visitor cookie", error)
        headers, content_type = edit_headers(headers, cookie)
        if status[:3] == "304" and self._gate.rewrites:
            with guarded("revalidating a rewritten page"):
                kept = revalidated_copy_headers(headers, self._environ.get("HTTP_IF_NONE_MATCH"))
                headers = kept if kept is not None else headers
            return self._start_response(status, headers, exc_info)
        if exc_info is None and looks_like_html(content_type):
            with guarded("choosing to rewrite"):
                facts = from_environ(self._environ, 0)
                body_filter = self._gate.body_filter(facts, self._state.visitor, int(status[:3]), headers)
                head = body_filter is None and self._gate.head_of_rewritten(facts, int(status[:3]), headers)
                if body_filter is not None or head:
                    headers = rewritten_headers(headers, head=head)
                # Only now: headers that could not be made for a rewritten body (an ETag werkzeug cannot
                # weaken) leave the body as the app made it, as the ASGI shell does.
                self._filter = body_filter
        if self._filter is None or exc_info is not None:
            self._filter = None
            return self._start_response(status, headers, exc_info)
        self._pending = (status, headers)
        return self._write

    def _write(self, data: bytes) -> None:
        """The legacy write() callable: once it is used, the body streams (PEP 3333: any number of calls)."""
        if self._server_write is None:
            self._server_write = self._begin_streaming()
        self._server_write(self._feed(data))

    def _begin_streaming(self) -> Callable[[bytes], object]:
        assert self._pending is not None
        status, headers = self._pending
        self._pending = None
        return self._start_response(status, _without_length(headers))

    def _whole(self, body_parts: list[bytes] | tuple[bytes, ...]) -> list[bytes]:
        assert self._pending is not None
        status, headers = self._pending
        self._pending = None
        original = b"".join(body_parts)
        body = original
        with guarded("rewriting an HTML body"):
            assert self._filter is not None
            body = self._filter.feed(original) + self._filter.close()
        headers = _without_length(headers)
        headers.append(("Content-Length", str(len(body))))
        self._start_response(status, headers)
        return [body]

    def _stream(self, result: Iterable[bytes]) -> Iterable[bytes]:
        if self._pending is not None:
            self._begin_streaming()
        return _FilteredBody(result, self)

    def _feed(self, chunk: bytes) -> bytes:
        if self._filter is None:
            return chunk
        out = chunk
        with guarded("rewriting an HTML stream"):
            out = self._filter.feed(chunk)
            return out
        self._filter = None  # it failed: the rest of the body passes through as it is
        return chunk

    def _finish(self) -> bytes:
        if self._filter is None:
            return b""
        tail = b""
        with guarded("closing the HTML rewriter"):
            tail = self._filter.close()
        self._filter = None
        return tail


class _FilteredBody:
    """Iterates the app's body through the responder's filter; close() reaches the app's iterable whatever
    happens. With ``late_start`` the app calls start_response only when its body is first iterated, so the
    first chunk decides whether the body is filtered at all."""

    def __init__(self, result: Iterable[bytes], responder: _Responder, *, late_start: bool = False) -> None:
        self._result = result
        self._responder = responder
        self._late_start = late_start

    def __iter__(self) -> Iterator[bytes]:
        responder = self._responder
        chunks: Iterator[bytes] = iter(self._result)
        if self._late_start:
            first = next(chunks, None)  # runs the app up to its start_response
            if responder._pending is None and responder._filter is None:  # not HTML to rewrite: straight through
                if first is not None:
                    yield first
                # Not "yield from": closing this generator would close the app's iterable too, and close()
                # below (the server's call) would then close it a second time.
                for chunk in chunks:
                    yield chunk
                return
            if responder._pending is not None:  # (else the app used write(), which began the stream)
                responder._begin_streaming()
            if first is not None:
                chunks = itertools.chain((first,), chunks)
        for chunk in chunks:
            out = responder._feed(chunk)
            if out:
                yield out
        tail = responder._finish()
        if tail:
            yield tail

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


def _wsgi_config(gate: Gate) -> tuple[Any, ...] | None:
    """What the compiled start needs of a middleware (see compiled_visit_config), with what a new visitor's
    cookie is made of."""
    identity = gate.identity
    cookie_parts = visitor_cookie_parts(gate)
    if cookie_parts is None or not all(part.isascii() for part in [*cookie_parts, identity.visitor_param]):
        return None
    send_config = (gate, _Responder, OPT_OUT_HEADER, gate.rewrites, *cookie_parts)
    return compiled_visit_config(gate, identity.visitor_param + "=", send_config)


def _without_length(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() != "content-length"]


