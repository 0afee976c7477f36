"""The lifespan around the app, in process (the server cases are in test_dispatch_processes.py): when the
dispatcher starts and drains, and the protocol answered for an app that refuses it."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

import trackgate
from trackgate import lifespan

MESSAGES = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]


class _Dispatcher:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def start(self) -> None:
        self.seen.append("start")

    def drain(self, timeout: float) -> int:
        self.seen.append("drain")
        return 0


def _run(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What happened, in order: the dispatcher's start and drain, and every message sent to the server."""
    seen: list[str] = []
    monkeypatch.setattr("trackgate.dispatch.get_dispatcher", lambda settings: _Dispatcher(seen))
    incoming = list(MESSAGES)

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        seen.append(message["type"])

    gate = types.SimpleNamespace(settings=trackgate.Settings(), wake=_Dispatcher(seen).start)
    asyncio.run(lifespan.run_lifespan(app, {"type": "lifespan"}, receive, send, gate))  # type: ignore[arg-type]
    return seen


async def _answers(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _refuses(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")


async def _ignores(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _returns_without_a_word(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()


ANSWERED = ["start", "lifespan.startup.complete", "drain", "lifespan.shutdown.complete"]


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (_answers, ANSWERED),  # drained after the app's shutdown: what it recorded there goes too
        (_refuses, ANSWERED),  # answered here: without it a SIGTERM under uvicorn drains nothing
        (_ignores, ANSWERED),
        (_returns_without_a_word, ["start", "lifespan.startup.complete", "drain"]),
    ],
    ids=["answers", "refuses", "ignores", "returns-after-shutdown"],
)
def test_the_dispatcher_starts_with_the_app_and_drains_after_it(
    app: Any, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run(app, monkeypatch) == expected


def test_an_app_whose_startup_fails_says_so_to_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        _run(fails, monkeypatch)
