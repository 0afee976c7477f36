"""The console sink writes one JSON line per event on stderr; every adapter is found by its name."""

from __future__ import annotations

import json

import aiohttp
import pytest

from trackgate import Event, Settings
from trackgate.adapters.console import create_sink
from trackgate.dispatch.registry import create_sinks
from trackgate.dispatch.sink import Outcome, Sink


async def test_one_json_line_per_event_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    events = [Event("pageview", visitor="v", url="https://s.example/\nnext"), Event("custom", name="x")]
    async with aiohttp.ClientSession() as session:
        assert await create_sink(Settings.from_environ({})).send(session, events) == Outcome()
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in events]


def test_every_adapter_is_registered_under_its_name() -> None:
    settings = Settings.from_environ(
        {
            "TRACKGATE_SINKS": "store,kissmetrics,matomo,webhook,console",
            "TRACKGATE_KISSMETRICS_KEY": "k",
            "TRACKGATE_MATOMO_URL": "https://m.example",
            "TRACKGATE_MATOMO_SITE_ID": "1",
            "TRACKGATE_WEBHOOK_URL": "https://h.example/hook",
        }
    )
    sinks = create_sinks(settings)
    assert [s.name for s in sinks] == ["store", "kissmetrics", "matomo", "webhook", "console"]
    assert all(isinstance(s, Sink) for s in sinks)
