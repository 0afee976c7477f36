"""The KISSmetrics sink against a real tracking-API receiver: mapping of event kinds, failures, settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from sinks import KissmetricsReceiver

from trackgate import ConfigError, Event, Settings
from trackgate.adapters.kissmetrics import KissmetricsSink, create_sink
from trackgate.dispatch.sink import Outcome, Rejected, RetryLater

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

KEY = "sink-key"
WHEN = 1_700_000_000.6


@pytest.fixture
def receiver() -> Iterator[KissmetricsReceiver]:
    with KissmetricsReceiver() as receiver:
        yield receiver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(**more: str) -> dict[str, str]:
    return {"_k": KEY, "_p": "v1", "_d": "1", "_t": "1700000000", **more}


CASES: list[tuple[str, Event, str, dict[str, str]]] = [
    (
        "pageview",
        Event("pageview", visitor="v1", url="https://s.example/a?b=1", referrer="https://r.example/", timestamp=WHEN),
        "/e",
        base(_n="Page View", **{"Viewed URL": "https://s.example/a?b=1", "Referrer": "https://r.example/"}),
    ),
    (
        "open",
        Event("open", visitor="v1", metadata={"campaign": "spring", "n": 2}, timestamp=WHEN),
        "/e",
        base(_n="Opened Email", campaign="spring", n="2"),
    ),
    (
        "click",
        Event("click", visitor="v1", url="https://d.example/", metadata={"campaign": "spring"}, timestamp=WHEN),
        "/e",
        base(_n="Clicked Link", campaign="spring", URL="https://d.example/"),
    ),
    (
        "conversion",
        Event("conversion", name="Upgraded", visitor="v1", revenue=49.5, timestamp=WHEN),
        "/e",
        base(_n="Upgraded", **{"Billing Amount": "49.5"}),
    ),
    ("conversion-without-goal", Event("conversion", visitor="v1", timestamp=WHEN), "/e", base(_n="Converted")),
    (
        "custom",
        Event("custom", name="Invited Friend", visitor="v1", properties={"Friends": 3, "vip": True}, timestamp=WHEN),
        "/e",
        base(_n="Invited Friend", Friends="3", vip="true"),
    ),
    ("custom-user-id-wins", Event("custom", name="x", visitor="v0", user_id="v1", timestamp=WHEN), "/e", base(_n="x")),
    (
        "exposure",
        Event("exposure", name="checkout-test", visitor="v1", properties={"Variation": "b"}, timestamp=WHEN),
        "/e",
        base(_n="Viewed Experiment", Experiment="checkout-test", Variation="b"),
    ),
    (
        "set",
        Event("set", visitor="v1", properties={"Plan": "Pro", "tags": ["a", "b"], "gone": None}, timestamp=WHEN),
        "/s",
        base(Plan="Pro", tags='["a","b"]'),
    ),
    (
        "identify",
        Event("identify", visitor="anon", user_id="bob@example.org", timestamp=WHEN),
        "/a",
        {"_k": KEY, "_p": "anon", "_n": "bob@example.org"},
    ),
    (
        "alias",
        Event("alias", visitor="anon", user_id="bob", timestamp=WHEN),
        "/a",
        {"_k": KEY, "_p": "anon", "_n": "bob"},
    ),
    (
        "reserved-properties-cannot-overwrite",
        Event("custom", name="x", visitor="v1", timestamp=WHEN, properties={"_k": "evil", "_p": "someone", "ok": "1"}),
        "/e",
        base(_n="x", ok="1"),
    ),
]


@pytest.mark.parametrize(("event", "path", "params"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_kind_becomes_the_tracking_api_request_kissmetrics_users_expect(
    receiver: KissmetricsReceiver, session: aiohttp.ClientSession, event: Event, path: str, params: dict[str, str]
) -> None:
    outcome = await KissmetricsSink(KEY, receiver.base_url).send(session, [event])
    assert outcome == Outcome()
    assert receiver.requests() == [(path, params)]


async def test_query_is_encoded_with_quote_plus(receiver: KissmetricsReceiver, session: aiohttp.ClientSession) -> None:
    await KissmetricsSink(KEY, receiver.base_url).send(session, [Event("custom", name="a b&c", visitor="zoë")])
    raw = receiver.received[0]
    assert raw.params["_n"] == "a b&c"
    assert raw.params["_p"] == "zoë"


async def test_event_names_are_configurable(receiver: KissmetricsReceiver, session: aiohttp.ClientSession) -> None:
    sink = KissmetricsSink(KEY, receiver.base_url, event_names={"pageview": "Viewed Page", "open": "Read Mail"})
    await sink.send(session, [Event("pageview", visitor="v"), Event("open", visitor="v")])
    assert [p["_n"] for _, p in receiver.requests()] == ["Viewed Page", "Read Mail"]


@pytest.mark.parametrize(
    "event",
    [
        Event("custom", name="x"),
        Event("alias", visitor="anon"),
        Event("set", visitor="v"),
        # (json.loads('"\\ud800"') makes such text: no URL can carry it; it was retried for ever)
        Event("custom", name="lone \ud800 surrogate", visitor="v"),
    ],
    ids=["no-person", "alias-without-user-id", "set-without-properties", "lone-surrogate"],
)
async def test_events_the_api_cannot_express_are_rejected_not_sent(
    receiver: KissmetricsReceiver, session: aiohttp.ClientSession, event: Event
) -> None:
    outcome = await KissmetricsSink(KEY, receiver.base_url).send(session, [event])
    assert list(outcome.rejected) == [event.id]
    assert receiver.received == []


@pytest.mark.parametrize(
    ("failure", "error"),
    [(500, RetryLater), (503, RetryLater), (429, RetryLater), ("close", RetryLater), (400, Rejected), (403, Rejected)],
    ids=["500", "503", "429", "connection-dropped", "400", "403"],
)
async def test_failures_map_onto_retry_or_reject(
    receiver: KissmetricsReceiver, session: aiohttp.ClientSession, failure: Any, error: type[Exception]
) -> None:
    # Until recover(): aiohttp itself may retry an idempotent GET once on a dropped connection.
    receiver.fail(failure, retry_after=2 if failure == 429 else None)
    sink = KissmetricsSink(KEY, receiver.base_url)
    event = Event("custom", name="x", visitor="v")
    with pytest.raises(error) as caught:
        await sink.send(session, [event])
    if failure == 429:
        assert isinstance(caught.value, RetryLater)
        assert caught.value.retry_after == 2
    assert KEY not in str(caught.value)  # the API key is in the query; it must not reach logs
    receiver.recover()
    await sink.send(session, [event])
    assert len(receiver.delivered) == 1


async def test_a_redirect_loop_is_retried_and_the_key_stays_out_of_the_reason(
    receiver: KissmetricsReceiver, session: aiohttp.ClientSession
) -> None:
    # aiohttp's TooManyRedirects names the last URL whole, query and key included.
    receiver.fail(302, location=f"{receiver.base_url}/e?_k={KEY}&_p=v&_n=x")
    with pytest.raises(RetryLater) as caught:
        await KissmetricsSink(KEY, receiver.base_url).send(session, [Event("custom", name="x", visitor="v")])
    assert "TooManyRedirects" in str(caught.value) and KEY not in str(caught.value)


async def test_down_then_up(receiver: KissmetricsReceiver, session: aiohttp.ClientSession) -> None:
    sink = KissmetricsSink(KEY, receiver.base_url)
    receiver.down()
    with pytest.raises(RetryLater):
        await sink.send(session, [Event("custom", name="x", visitor="v")])
    receiver.up()
    await sink.send(session, [Event("custom", name="x", visitor="v")])
    assert len(receiver.delivered) == 1


async def test_one_rejected_event_in_a_larger_batch_does_not_block_the_others(
    receiver: KissmetricsReceiver, session: aiohttp.ClientSession
) -> None:
    events = [Event("custom", name=f"e{i}", visitor="v") for i in range(3)]
    receiver.fail(400, times=1)
    outcome = await KissmetricsSink(KEY, receiver.base_url).send(session, events)
    assert list(outcome.rejected) == [events[0].id]
    assert [p["_n"] for _, p in receiver.requests()] == ["e1", "e2"]


def test_create_sink_needs_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        create_sink(Settings.from_environ({}))
    assert caught.value.name == "TRACKGATE_KISSMETRICS_KEY"


def test_create_sink_reads_key_and_url() -> None:
    sink = create_sink(
        Settings.from_environ({"TRACKGATE_KISSMETRICS_KEY": "k", "TRACKGATE_KISSMETRICS_URL": "http://127.0.0.1:9/"})
    )
    assert (sink.key, sink.url, sink.name, sink.batch_size) == ("k", "http://127.0.0.1:9", "kissmetrics", 1)
    with pytest.raises(ConfigError) as caught:
        create_sink(Settings.from_environ({"TRACKGATE_KISSMETRICS_KEY": "k", "TRACKGATE_KISSMETRICS_URL": "trk"}))
    assert caught.value.name == "TRACKGATE_KISSMETRICS_URL"
