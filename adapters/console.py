"""Console sink: one JSON line per event on stderr (``TRACKGATE_SINKS=console``), for development and
for log pipelines that collect a process's stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

import aiohttp

from trackgate import Event, Settings
from trackgate.dispatch.sink import Outcome


class ConsoleSink:
    name = "console"
    batch_size = 500
    concurrency = 1  # lines from one batch stay together and in order

    def __init__(self, stream: TextIO | None = None) -> None:
        # None: whatever sys.stderr is at write time, so pytest's capture and redirections see the lines.
        self._stream = stream

    async def send(self, session: aiohttp.ClientSession, events: Sequence[Event]) -> Outcome:
        stream = self._stream or sys.stderr
        stream.write("".join(json.dumps(e.to_dict(), default=str, separators=(",", ":")) + "\n" for e in events))
        stream.flush()
        return Outcome()

    async def aclose(self) -> None:
        return None


def create_sink(settings: Settings) -> ConsoleSink:
    return ConsoleSink()
