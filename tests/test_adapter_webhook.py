"""The webhook sink against a real receiver: pytracking's payload, the signature, failure mapping."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from pytracking.tracking import TrackingResult
from pytracking.webhook import send_webhook
from sinks import WEBHOOK_SECRET, WebhookReceiver

from trackgate import ConfigError, Event, Settings
from trackgate.adapters.webhook import WebhookSink, create_sink
from trackgate.dispatch.sink import Rejected, RetryLater

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

REQUEST = {"user_agent": "Mozilla/5.0", "user_ip": "10.0.0.0", "language": "fr", "referer": None}


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=WEBHOOK_SECRET) as receiver:
        yield receiver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def mail_event(kind: str, url: str | None = None) -> Event:
    return Event(
        kind,
        visitor="v1",
        url=url,
        metadata={"customer": 42, "campaign": "spring"},  # type: ignore[arg-type]
        user_agent="Mozilla/5.0",
        ip="10.0.0.0",
        language="fr",
        timestamp=1_700_000_000.75,
    )


@pytest.mark.parametrize(
    ("kind", "url"), [("open", None), ("click", "https://example.org/a?b=1")], ids=["open", "click"]
)
async def test_open_and_click_carry_exactly_pytrackings_payload_plus_id_kind_and_visitor(
    hook: WebhookReceiver,
    session: aiohttp.ClientSession,
    kind: str,
    url: str | None,
) -> None:
    event = mail_event(kind, url)
    theirs = TrackingResult(
        is_open_tracking=kind == "open",
        is_click_tracking=kind == "click",
        tracked_url=url,
        webhook_url=hook.url,
        metadata=dict(event.metadata),
        request_data=REQUEST,
        timestamp=1_700_000_000,
    )
    plain = WebhookReceiver()
    with plain:
        theirs.webhook_url = plain.url
        send_webhook(theirs)
        [expected] = plain.payloads()
    await WebhookSink(hook.url, secret=WEBHOOK_SECRET).send(session, [event])
    [ours] = hook.payloads()
    assert ours == {**expected, "id": event.id, "kind": kind, "visitor": "v1"}


async def test_other_kinds_post_the_whole_event(
    hook: WebhookReceiver,
    session: aiohttp.ClientSession,
) -> None:
    event = Event("conversion", name="signup", visitor="v1", revenue=9.5, properties={"plan": "pro"})
    await WebhookSink(hook.url, secret=WEBHOOK_SECRET).send(session, [event])
    assert hook.payloads() == [event.to_dict()]


async def test_values_json_cannot_encode_are_sent_as_text(
    hook: WebhookReceiver,
    session: aiohttp.ClientSession,
) -> None:
    event = Event("custom", name="x", properties={"when": datetime.date(2024, 5, 1)})
    await WebhookSink(hook.url, secret=WEBHOOK_SECRET).send(session, [event])
    assert hook.payloads()[0]["properties"] == {"when": "2024-05-01"}


async def test_a_wrong_secret_is_refused_by_the_receiver_and_rejected(
    hook: WebhookReceiver,
    session: aiohttp.ClientSession,
) -> None:
    with pytest.raises(Rejected) as caught:
        await WebhookSink(hook.url, secret="not-the-secret").send(session, [Event("pageview")])
    assert caught.value.status == 401
    assert hook.delivered == []


async def test_unsigned_posts_when_no_secret_is_set(session: aiohttp.ClientSession) -> None:
    with WebhookReceiver() as receiver:
        await WebhookSink(receiver.url).send(session, [Event("pageview")])
        assert "X-Trackgate-Signature" not in receiver.received[0].headers
        assert len(receiver.delivered) == 1


@pytest.mark.parametrize(
    ("failure", "retry_after", "error"),
    [
        (500, None, RetryLater),
        (503, None, RetryLater),
        (408, None, RetryLater),
        (429, 3, RetryLater),
        ("close", None, RetryLater),
        (400, None, Rejected),
        (404, None, Rejected),
    ],
    ids=["500", "503", "408", "429-retry-after", "connection-dropped", "400", "404"],
)
async def test_failures_map_onto_retry_or_reject(
    hook: WebhookReceiver,
    session: aiohttp.ClientSession,
    failure: int | str,
    retry_after: float | None,
    error: type[Exception],
) -> None:
    hook.fail(failure, times=1, retry_after=retry_after)  # type: ignore[arg-type]
    sink = WebhookSink(hook.url, secret=WEBHOOK_SECRET)
    with pytest.raises(error) as caught:
        await sink.send(session, [Event("pageview")])
    if isinstance(caught.value, RetryLater):
        assert caught.value.retry_after == retry_after
    await sink.send(session, [Event("pageview")])  # the receiver recovered: delivered
    assert len(hook.delivered) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirected_post_is_a_dead_letter_naming_where_it_points(
    hook: WebhookReceiver, session: aiohttp.ClientSession, status: int
) -> None:
    # Followed, a 301/302/303 turns the POST into a GET without its body (the event lost, the final 200
    # counted as delivered), and a 307/308 sends the body wherever it points, in a loop if it loops.
    hook.fail(status, times=1, location="https://elsewhere.example/hook?token=abc")  # type: ignore[arg-type]
    with pytest.raises(Rejected, match=f"HTTP {status}: the receiver redirects to https://elsewhere.example/hook;"):
        await WebhookSink(hook.url, secret=WEBHOOK_SECRET).send(session, [Event("pageview")])
    assert [r.method for r in hook.received] == ["POST"]  # one request, nothing sent on


async def test_a_redirect_without_a_location_says_so(hook: WebhookReceiver, session: aiohttp.ClientSession) -> None:
    hook.fail(302, times=1)  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="HTTP 302: the receiver redirects nowhere"):
        await WebhookSink(hook.url, secret=WEBHOOK_SECRET).send(session, [Event("pageview")])


def test_a_failing_urls_user_name_and_password_stay_out_of_the_log() -> None:
    from trackgate.adapters._http import _origin

    assert _origin("https://hookuser:s3cret@hooks.example/in?token=abc") == "https://hooks.example/in"
    assert _origin("http://hooks.example") == "http://hooks.example"


async def test_receiver_down_is_retry_later_and_up_again_delivers(
    hook: WebhookReceiver,
    session: aiohttp.ClientSession,
) -> None:
    sink = WebhookSink(hook.url, secret=WEBHOOK_SECRET)
    event = Event("pageview")
    hook.down()
    with pytest.raises(RetryLater):
        await sink.send(session, [event])
    hook.up()
    await sink.send(session, [event])
    assert hook.delivered == [event.id]


def test_create_sink_names_the_missing_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        create_sink(Settings.from_environ({}))
    assert caught.value.name == "TRACKGATE_WEBHOOK_URL"


def test_create_sink_reads_url_and_secret() -> None:
    sink = create_sink(
        Settings.from_environ({"TRACKGATE_WEBHOOK_URL": "https://h.example/x", "TRACKGATE_WEBHOOK_SECRET": "s"})
    )
    assert (sink.url, sink.secret, sink.batch_size) == ("https://h.example/x", "s", 1)
