"""The ASGI lifespan around the app, for the event dispatcher: started at startup, drained once the app has
shut down (so that events its own shutdown code records go out too), within TRACKGATE_SHUTDOWN_TIMEOUT.

An app that refuses lifespan (Django's ASGI handler raises on it; a bare app returns at once) gets the
protocol answered here: without it a server's SIGTERM ends the process with no drain, and events of the
last moments, still in memory, go with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._boundary import guarded
from .settings import Settings

if TYPE_CHECKING:
    from .gate import Gate

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_SHUTDOWN_ANSWERS = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


async def run_lifespan(app: App, scope: MutableMapping[str, Any], receive: Receive, send: Send, gate: Gate) -> None:
    """The app's lifespan, ``gate``'s dispatcher started (Gate.wake) and drained around it."""
    settings = gate.settings
    received = shutting_down = drained = False

    async def watched_receive() -> Message:
        nonlocal received, shutting_down
        message = await receive()
        received = True
        if message["type"] == "lifespan.startup":
            gate.wake()
        elif message["type"] == "lifespan.shutdown":
            shutting_down = True
        return message

    async def watched_send(message: Message) -> None:
        nonlocal drained
        if message["type"] in _SHUTDOWN_ANSWERS and not drained:
            drained = True
            await _drain(settings)
        await send(message)

    try:
        await app(scope, watched_receive, watched_send)
    except Exception:
        if not received:
            await _answer(receive, send, gate)  # it refused lifespan before reading a message
            return
        if shutting_down and not drained:
            await _drain(settings)
        raise  # the app's own startup or shutdown failed: the server says so
    if not received:
        await _answer(receive, send, gate)  # it returned without reading one
    elif shutting_down and not drained:
        await _drain(settings)  # it returned from its shutdown without a word


async def _answer(receive: Receive, send: Send, gate: Gate) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            gate.wake()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _drain(gate.settings)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _drain(settings: Settings) -> None:
    with guarded("draining the event dispatcher"):
        from .dispatch import get_dispatcher

        await asyncio.to_thread(get_dispatcher(settings).drain, settings.shutdown_timeout)
