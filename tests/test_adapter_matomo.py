"""The Matomo sink against a real bulk-tracking receiver: parameters per kind, invalid requests, failures."""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sinks import MATOMO_SITE_ID, MATOMO_TOKEN, MatomoReceiver

from trackgate import ConfigError, Event, Settings
from trackgate.adapters.matomo import MatomoSink, create_sink, visitor_id
from trackgate.dispatch.sink import Outcome, Rejected, RetryLater

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

WHEN = 1_700_000_000.4
VID = visitor_id("v1")


@pytest.fixture
def receiver() -> Iterator[MatomoReceiver]:
    with MatomoReceiver() as receiver:
        yield receiver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sink(receiver: MatomoReceiver, **kw: Any) -> MatomoSink:
    return MatomoSink(receiver.url, MATOMO_SITE_ID, **kw)


def common(**more: str) -> dict[str, str]:
    return {"idsite": str(MATOMO_SITE_ID), "rec": "1", "apiv": "1", "send_image": "0", "_id": VID, **more}


REQUEST = {"user_agent": "Mozilla/5.0 (X11)", "language": "fr-FR,fr", "ip": "192.0.2.0"}

CASES: list[tuple[str, Event, dict[str, str]]] = [
    (
        "pageview",
        Event(
            "pageview",
            visitor="v1",
            url="https://s.example/p?q=1",
            title="Prices & plans",
            referrer="https://r.example/",
            timestamp=WHEN,
            **REQUEST,
        ),  # type: ignore[arg-type]
        common(
            url="https://s.example/p?q=1",
            action_name="Prices & plans",
            urlref="https://r.example/",
            ua="Mozilla/5.0 (X11)",
            lang="fr-FR,fr",
        ),
    ),
    (
        "click",
        Event("click", visitor="v1", url="https://d.example/x", timestamp=WHEN),
        common(url="https://d.example/x", link="https://d.example/x"),
    ),
    (
        "click-from-a-page",  # as Matomo's JavaScript reports an outlink: on the page the link was on
        Event("click", visitor="v1", url="https://d.example/x", referrer="https://s.example/p", timestamp=WHEN),
        common(url="https://s.example/p", link="https://d.example/x"),
    ),
    (
        "open",
        Event("open", visitor="v1", name="newsletter-12", timestamp=WHEN),
        common(e_c="email", e_a="open", e_n="newsletter-12"),
    ),
    (
        "conversion",
        Event("conversion", name="4", visitor="v1", user_id="bob", revenue=19.9, timestamp=WHEN),
        common(uid="bob", idgoal="4", revenue="19.9"),
    ),
    (
        "custom",
        Event(
            "custom",
            name="play",
            visitor="v1",
            timestamp=WHEN,
            properties={"category": "video", "label": "intro", "value": 12.5},
        ),
        common(e_c="video", e_a="play", e_n="intro", e_v="12.5"),
    ),
    (
        "custom-plain",
        Event("custom", name="share", visitor="v1", properties={"value": "n/a"}, timestamp=WHEN),
        common(e_c="custom", e_a="share"),
    ),
    (
        "exposure",
        Event("exposure", name="checkout", visitor="v1", properties={"variation": "b"}, timestamp=WHEN),
        common(e_c="experiment", e_a="checkout", e_n="b"),
    ),
    (
        "identify",
        Event("identify", visitor="v1", user_id="bob", timestamp=WHEN),
        common(uid="bob", e_c="visitor", e_a="identify"),
    ),
]


@pytest.mark.parametrize(("event", "params"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_kind_becomes_a_bulk_request_line(
    receiver: MatomoReceiver, session: aiohttp.ClientSession, event: Event, params: dict[str, str]
) -> None:
    assert await sink(receiver).send(session, [event]) == Outcome()
    assert receiver.tracked() == [params]
    assert receiver.received[0].json().get("token_auth") is None


async def test_with_the_token_ip_and_time_are_sent(receiver: MatomoReceiver, session: aiohttp.ClientSession) -> None:
    event = Event("pageview", visitor="v1", url="https://s.example/", ip="192.0.2.0", timestamp=WHEN)
    await sink(receiver, token=MATOMO_TOKEN).send(session, [event])
    [tracked] = receiver.tracked()
    assert (tracked["cip"], tracked["cdt"]) == ("192.0.2.0", "1700000000")
    assert receiver.received[0].json()["token_auth"] == MATOMO_TOKEN


async def test_without_the_token_a_recent_events_time_is_sent_an_old_ones_not(
    receiver: MatomoReceiver, session: aiohttp.ClientSession
) -> None:
    # Matomo takes a time up to 24 hours old from anyone: a backlog sent after a short outage keeps its times.
    now = time.time()
    recent = Event("pageview", visitor="v1", url="https://s.example/", ip="192.0.2.0", timestamp=now - 3600)
    old = Event("pageview", visitor="v1", url="https://s.example/", timestamp=now - 2 * 86400)
    assert await sink(receiver).send(session, [recent, old]) == Outcome()
    first, second = receiver.tracked()
    assert first["cdt"] == str(int(now - 3600)) and "cip" not in first
    assert "cdt" not in second


def test_visitor_id_is_16_hex_digits_stable_per_visitor() -> None:
    assert visitor_id("v1") == hashlib.sha1(b"v1").hexdigest()[:16] == visitor_id("v1") != visitor_id("v2")
    assert len(visitor_id("")) == 16


async def test_a_batch_is_one_post(receiver: MatomoReceiver, session: aiohttp.ClientSession) -> None:
    events = [Event("custom", name=f"e{i}", visitor=f"v{i}") for i in range(250)]
    good = sink(receiver, batch_size=250)
    outcome = await good.send(session, events)
    assert outcome == Outcome()
    assert len(receiver.received) == 1
    assert len(receiver.tracked()) == 250


async def test_requests_matomo_marks_invalid_come_back_as_rejected(session: aiohttp.ClientSession) -> None:
    # A receiver for another site id: each request is invalid, each event rejected, none silently lost.
    with MatomoReceiver(site_id=MATOMO_SITE_ID + 1) as other:
        events = [Event("pageview", visitor="v", url=f"https://s.example/{i}") for i in range(3)]
        outcome = await MatomoSink(other.url, MATOMO_SITE_ID).send(session, events)
    assert set(outcome.rejected) == {e.id for e in events}
    assert "invalid" in next(iter(outcome.rejected.values()))


async def test_only_the_invalid_indices_are_rejected(receiver: MatomoReceiver, session: aiohttp.ClientSession) -> None:
    class HalfWrong(MatomoSink):
        def request_for(self, event: Event) -> str | None:
            line = super().request_for(event)
            return line.replace(f"idsite={MATOMO_SITE_ID}", "idsite=999") if event.name == "bad" and line else line

    events = [Event("custom", name=n, visitor="v") for n in ("ok", "bad", "ok", "bad")]
    outcome = await HalfWrong(receiver.url, MATOMO_SITE_ID).send(session, events)
    assert set(outcome.rejected) == {events[1].id, events[3].id}
    assert len(receiver.tracked()) == 2


async def test_conversion_names_map_to_goal_ids_or_are_rejected(
    receiver: MatomoReceiver, session: aiohttp.ClientSession
) -> None:
    mapped = Event("conversion", name="signup", visitor="v1")
    unknown = Event("conversion", name="mystery", visitor="v1")
    outcome = await sink(receiver, goal_ids={"signup": 2}).send(session, [mapped, unknown])
    assert list(outcome.rejected) == [unknown.id]
    assert "goal_ids" in outcome.rejected[unknown.id]
    assert [t["idgoal"] for t in receiver.tracked()] == ["2"]


async def test_set_has_no_matomo_request_and_counts_as_delivered(
    receiver: MatomoReceiver, session: aiohttp.ClientSession
) -> None:
    assert await sink(receiver).send(session, [Event("set", visitor="v", properties={"a": 1})]) == Outcome()
    assert receiver.received == []


@pytest.mark.parametrize(
    ("failure", "error"),
    [(500, RetryLater), (503, RetryLater), (429, RetryLater), ("close", RetryLater), (400, Rejected)],
    ids=["500", "503", "429", "connection-dropped", "400"],
)
async def test_failures_map_onto_retry_or_reject(
    receiver: MatomoReceiver, session: aiohttp.ClientSession, failure: Any, error: type[Exception]
) -> None:
    receiver.fail(failure, retry_after=5 if failure == 429 else None)
    events = [Event("pageview", visitor="v", url="https://s.example/")]
    with pytest.raises(error) as caught:
        await sink(receiver).send(session, events)
    if failure == 429:
        assert isinstance(caught.value, RetryLater)
        assert caught.value.retry_after == 5
    receiver.recover()
    await sink(receiver).send(session, events)
    assert len(receiver.tracked()) == 1


async def test_a_wrong_token_is_rejected_with_matomos_message(
    receiver: MatomoReceiver, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(Rejected) as caught:
        await sink(receiver, token="wrong").send(session, [Event("pageview", visitor="v")])
    assert caught.value.status == 400
    assert "token_auth" in caught.value.body


async def test_an_answer_that_is_not_matomos_is_rejected(session: aiohttp.ClientSession) -> None:
    from sinks import WebhookReceiver

    # A WebhookReceiver answers 200 {"ok": true} to any POST.
    with WebhookReceiver() as not_matomo, pytest.raises(Rejected, match="not a Matomo"):
        await MatomoSink(not_matomo.base_url + "/x", MATOMO_SITE_ID).send(session, [Event("pageview")])


async def test_down_then_up(receiver: MatomoReceiver, session: aiohttp.ClientSession) -> None:
    events = [Event("pageview", visitor="v", url="https://s.example/")]
    receiver.down()
    with pytest.raises(RetryLater):
        await sink(receiver).send(session, events)
    receiver.up()
    await sink(receiver).send(session, events)
    assert len(receiver.tracked()) == 1


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "TRACKGATE_MATOMO_URL"),
        ({"TRACKGATE_MATOMO_URL": "https://m.example"}, "TRACKGATE_MATOMO_SITE_ID"),
        ({"TRACKGATE_MATOMO_URL": "m.example", "TRACKGATE_MATOMO_SITE_ID": "1"}, "TRACKGATE_MATOMO_URL"),
    ],
    ids=["no-url", "no-site", "not-http"],
)
def test_create_sink_names_the_missing_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create_sink(Settings.from_environ(env))
    assert caught.value.name == variable


def test_create_sink_reads_the_settings() -> None:
    made = create_sink(
        Settings.from_environ(
            {
                "TRACKGATE_MATOMO_URL": "https://m.example/matomo.php",
                "TRACKGATE_MATOMO_SITE_ID": "3",
                "TRACKGATE_MATOMO_TOKEN": "t",
            }
        )
    )
    assert (made.endpoint, made.site_id, made.token) == ("https://m.example/matomo.php", 3, "t")


text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(
    visitor=text,
    user_id=st.none() | text,
    url=st.none() | text,
    title=st.none() | text,
    name=text,
    category=st.none() | text,
    value=st.none() | st.floats(-1e6, 1e6) | st.integers(-1000, 1000),
)
def test_any_text_survives_the_request_line(
    *,
    visitor: str,
    user_id: str | None,
    url: str | None,
    title: str | None,
    name: str,
    category: str | None,
    value: float | None,
) -> None:
    made = MatomoSink("https://m.example", 3)
    page = made.request_for(Event("pageview", visitor=visitor, user_id=user_id, url=url, title=title))
    assert page is not None and page.startswith("?")
    params = dict(urllib.parse.parse_qsl(page[1:], keep_blank_values=True))
    assert params["_id"] == visitor_id(visitor)
    assert (params.get("uid"), params.get("url"), params.get("action_name")) == (user_id, url, title)
    custom = made.request_for(
        Event("custom", name=name, visitor=visitor, properties={"category": category, "value": value})
    )
    assert custom is not None
    params = dict(urllib.parse.parse_qsl(custom[1:], keep_blank_values=True))
    assert (params["e_c"], params["e_a"]) == (category or "custom", name)
    assert ("e_v" in params) == (value is not None)
