"""Programs for tests/test_dispatch_processes.py and bench/, each run in a process of its own.

Configured through TRACKGATE_* variables (sinks, webhook URL, spool path, shutdown timeout).

    gunicorn dispatch_apps:app            GET /?n=3 submits 3 events tagged with the worker's pid
    python dispatch_apps.py spool N       submits N events, prints "spooled" once they are committed, sleeps
    python dispatch_apps.py rss N         submits N small events, prints RSS figures as JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from trackgate import Event, Settings
from trackgate.dispatch import get_dispatcher

SETTINGS = Settings()

if os.environ.get("TRACKGATE_TEST_SUBMIT_AT_IMPORT"):
    # Under gunicorn --preload this runs in the master: its worker thread exists before the fork.
    get_dispatcher(SETTINGS).submit(Event("custom", name="master", properties={"pid": os.getpid()}))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = environ.get("QUERY_STRING", "")
    count = int(query[2:]) if query.startswith("n=") else 1
    dispatcher = get_dispatcher(SETTINGS)
    for i in range(count):
        dispatcher.submit(Event("custom", name=f"req-{i}", properties={"pid": os.getpid()}))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def spool_and_wait(count: int) -> None:
    dispatcher = get_dispatcher(SETTINGS)
    for i in range(count):
        dispatcher.submit(Event("custom", name=f"killed-{i}"))
    while dispatcher.counts()["spooled"] < count:
        time.sleep(0.01)
    print("spooled", flush=True)
    time.sleep(600)


def submit_many(count: int) -> None:
    dispatcher = get_dispatcher(SETTINGS)
    warm = min(count // 10, 100_000)
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    for i in range(count):
        if i == warm:
            figures["rss_warm_kib"] = rss_kib()
        dispatcher.submit(Event("custom", name="e", visitor="v", properties={"i": i}))
    figures["submit_seconds"] = time.perf_counter() - started
    while dispatcher.counts()["spooled"] + dispatcher.counts()["dropped"] < count:
        time.sleep(0.05)
    figures["rss_end_kib"] = rss_kib()
    figures["seconds"] = time.perf_counter() - started
    figures.update(dispatcher.stats())
    print(json.dumps(figures), flush=True)
    os._exit(0)  # the backlog stays spooled; skip the exit drain against a sink that is down


if __name__ == "__main__":
    mode, number = sys.argv[1], int(sys.argv[2])
    {"spool": spool_and_wait, "rss": submit_many}[mode](number)


def _helpers_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    import trackgate

    event = trackgate.record(environ, "signed-up", {"plan": "pro"})
    trackgate.identify(environ, "user-1")
    trackgate.track_conversion(environ, "checkout", revenue=12.5)
    body = (event.visitor or "").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def helpers_app() -> Any:
    """The app helpers behind trackgate's WSGI middleware (gunicorn 'dispatch_apps:helpers_app()')."""
    from trackgate import WSGIMiddleware

    return WSGIMiddleware(_helpers_app)


def _records_by_visitor(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    import trackgate

    visitor = environ["trackgate.visitor"]
    trackgate.record(visitor, "by-visitor")  # a Visitor, as a background job would keep it
    trackgate.record(visitor.code, "by-code")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [visitor.code.encode()]


def keyword_configured_app() -> Any:
    """Sinks given as keywords, none in the environment (gunicorn 'dispatch_apps:keyword_configured_app()'):
    events recorded with a Visitor or a code must go where the middleware's go."""
    import os

    from trackgate import WSGIMiddleware

    return WSGIMiddleware(
        _records_by_visitor, sinks="webhook", webhook_url=os.environ["HOOK_URL"],
        spool_path=os.environ["HOOK_SPOOL"],
    )


async def _lifespan(receive: Callable[..., Any], send: Callable[..., Any], *, at_shutdown: int = 0) -> None:
    """Answer lifespan; record ``at_shutdown`` events in the app's own shutdown."""
    import trackgate

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            for i in range(at_shutdown):
                trackgate.record(f"server-{i}", "stopped")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _record_and_answer(scope: dict[str, Any], send: Callable[..., Any], prefix: str) -> None:
    """GET /?n=N records N events named prefix-0..., then answers "ok"."""
    import trackgate

    query = scope.get("query_string", b"").decode()
    for i in range(int(query[2:]) if query.startswith("n=") else 1):
        trackgate.record(scope, f"{prefix}-{i}")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _asgi_inner(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await _record_and_answer(scope, send, "asgi")


def asgi_app() -> Any:
    """The helpers behind trackgate's ASGI middleware (uvicorn --factory dispatch_apps:asgi_app)."""
    from trackgate import ASGIMiddleware

    return ASGIMiddleware(_asgi_inner)


async def _refuses_lifespan(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """As Django's ASGI handler does: lifespan is refused, raising before any message is read."""
    if scope["type"] != "http":
        raise ValueError(f"can only handle http, not {scope['type']}")
    await _record_and_answer(scope, send, "refusing")


def refuses_lifespan_app() -> Any:
    from trackgate import ASGIMiddleware

    return ASGIMiddleware(_refuses_lifespan)


async def _records_at_shutdown(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """An app whose own lifespan shutdown records events (a 'server stopped' event, a queue flushed)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send, at_shutdown=5)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def records_at_shutdown_app() -> Any:
    from trackgate import ASGIMiddleware

    return ASGIMiddleware(_records_at_shutdown)


def record_in_pool(n: int) -> int:
    """A multiprocessing.Pool task that records five events (tests/test_dispatch_processes.py)."""
    import trackgate

    for i in range(5):
        trackgate.record(f"pool-{n}", f"task-{i}")
    return n
