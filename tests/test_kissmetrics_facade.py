"""The py-KISSmetrics facade sends the same requests as py-KISSmetrics 1.1 itself, through a real receiver."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import KISSmetrics
import pytest
from hypothesis import given
from hypothesis import strategies as st
from KISSmetrics.query_string import create_query as their_create_query
from sinks import GIF_1X1, KissmetricsReceiver

import trackgate.dispatch
from trackgate import Event, Settings
from trackgate.adapters import kissmetrics as km

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

KEY = "facade-key"


@pytest.fixture(scope="module")
def receiver() -> Iterator[KissmetricsReceiver]:
    with KissmetricsReceiver() as receiver:
        yield receiver


@pytest.fixture
def fresh(receiver: KissmetricsReceiver) -> KissmetricsReceiver:
    receiver.recover()
    receiver.clear()
    return receiver


def requests_of(receiver: KissmetricsReceiver, calls: Callable[[Any], None], client: Any) -> list[Any]:
    receiver.clear()
    try:
        calls(client)
    finally:
        close(client)
    return receiver.requests()


def close(client: Any) -> None:
    """Both libraries keep connections alive; unclosed sockets would be warnings (errors here)."""
    inner = getattr(client, "client", client)
    if isinstance(inner, KISSmetrics.Client):
        inner.http.clear()
    else:
        inner.close()


CALLS: dict[str, Callable[[Any], None]] = {
    "record": lambda c: c.record("bob@example.org", "Signed Up"),
    "record-properties": lambda c: c.record("bob", "Bought", {"Plan": "Pro", "Amount": 99.95, "n": 3}),
    "record-timestamp": lambda c: c.record("bob", "Bought", timestamp=1_700_000_000.9),
    "record-unicode-and-reserved-characters": lambda c: c.record(
        "zoë+1@example.org", "Clicked: a&b=c, d", {"Prix €": "1 000 & more?", "#": "/%"}
    ),
    "record-other-path": lambda c: c.record("bob", "Signed Up", path="s"),
    "set": lambda c: c.set("bob", {"Gender": "F", "Age": 30}),
    "set-timestamp": lambda c: c.set("bob", {"Gender": "F"}, timestamp=1_600_000_000),
    "set-nothing": lambda c: c.set("bob"),
    "alias": lambda c: c.alias("anon-123", "bob@example.org"),
    "several": lambda c: [c.record("p", f"e{i}", {"i": i}) for i in range(5)],
}


@pytest.mark.parametrize("name", list(CALLS))
def test_client_sends_what_py_kissmetrics_sends(fresh: KissmetricsReceiver, name: str) -> None:
    host = f"127.0.0.1:{fresh.port}"
    theirs = requests_of(fresh, CALLS[name], KISSmetrics.Client(KEY, trk_host=host, trk_scheme="http"))
    ours = requests_of(fresh, CALLS[name], km.Client(KEY, trk_host=host, trk_scheme="http"))
    assert theirs
    assert ours == theirs


COMPAT_CALLS: dict[str, Callable[[Any], None]] = {
    "record": lambda k: (k.identify("bob"), k.record("Signed Up")),
    "record-props": lambda k: (k.identify("bob"), k.record("Signed Up", {"Plan": "Pro"})),
    "set": lambda k: (k.identify("bob"), k.set({"Plan": "Pro"})),
    "alias": lambda k: k.alias("anon", "bob"),
}


@pytest.mark.parametrize("name", list(COMPAT_CALLS))
def test_client_compat_sends_what_py_kissmetrics_sends(fresh: KissmetricsReceiver, name: str) -> None:
    host = f"127.0.0.1:{fresh.port}"
    theirs_km = KISSmetrics.KM(KEY)
    theirs_km.client = KISSmetrics.Client(KEY, trk_host=host)  # their ClientCompat only takes ports 80/443
    ours_km = km.KM(KEY)
    ours_km.client = km.Client(KEY, trk_host=host)
    assert requests_of(fresh, COMPAT_CALLS[name], ours_km) == requests_of(fresh, COMPAT_CALLS[name], theirs_km)


def test_responses_carry_status_and_data(fresh: KissmetricsReceiver) -> None:
    with km.Client(KEY, trk_host=f"127.0.0.1:{fresh.port}") as client:
        response = client.record("bob", "Signed Up")
        assert (response.status, response.data) == (200, GIF_1X1)
        fresh.fail(503, times=1)
        assert client.record("bob", "x").status == 503


def test_a_closed_keep_alive_connection_is_reopened(fresh: KissmetricsReceiver) -> None:
    with km.Client(KEY, trk_host=f"127.0.0.1:{fresh.port}") as client:
        client.record("bob", "one")
        fresh.down()  # closes the kept-alive connection
        fresh.up()
        assert client.record("bob", "two").status == 200
    assert [params["_n"] for _, params in fresh.requests()] == ["one", "two"]


def test_compat_behaves_like_py_kissmetrics_without_identity_or_key(fresh: KissmetricsReceiver) -> None:
    for module in (KISSmetrics, km):
        client = module.KM(KEY)
        with pytest.raises(Exception, match="identify first"):
            client.record("x")
        client.identify("bob")
        client.reset()
        with pytest.raises(Exception, match="initialize first"):
            client.alias("a", "b")
        assert client.log_file() == "/tmp/kissmetrics_error.log"
        with pytest.raises(ValueError, match="80 or 443"):
            module.KM(KEY, host="127.0.0.1:8080")
    assert fresh.received == []


def test_compat_host_picks_the_scheme_from_the_port() -> None:
    assert km.KM(KEY, host="trk.example:443").client.trk_scheme == "https"
    assert km.KM(KEY, host="trk.example:80").client.trk_scheme == "http"
    with pytest.raises(ValueError, match="trk_scheme"):
        km.Client(KEY, trk_scheme="ftp")


def test_now_is_naive_utc() -> None:
    now = km.KM(KEY).now()
    assert now.tzinfo is None
    assert abs(now - datetime.datetime.now(datetime.UTC).replace(tzinfo=None)) < datetime.timedelta(seconds=5)


def test_resp_true_returns_the_response(fresh: KissmetricsReceiver) -> None:
    client = km.KM(KEY)
    client.client = km.Client(KEY, trk_host=f"127.0.0.1:{fresh.port}")
    client.identify("bob")
    assert client.record("x") is None
    response = client.record("x", resp=True)
    client.client.close()
    assert response is not None
    assert response.status == 200


async def test_background_calls_become_the_same_requests_through_the_sink(
    fresh: KissmetricsReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[Event] = []
    monkeypatch.setattr(trackgate.dispatch, "submit", submitted.append, raising=False)
    background = km.Client(KEY, background=True)
    calls = [
        *(CALLS[name] for name in ("record-properties", "record-timestamp", "set", "alias")),
        # Values py-KISSmetrics writes with str(): the same values must reach KISSmetrics in both modes.
        lambda c: c.record("bob", "Odd values", {"on": True, "gone": None, "list": [1, 2], "map": {"x": 1}}),
        lambda c: c.set("bob", {"off": False}),
        lambda c: c.record("bob", None),  # no event name: no _n
        lambda c: c.record("bob", ""),
        # bytes as their text, a non-finite float as str() writes it, properties as pairs (urlencode takes them)
        lambda c: c.record("bob", "More values", {"raw": b"bytes", "big": float("inf")}),
        lambda c: c.record("bob", "Pairs", [("plan", "pro"), ("seats", 3)]),
    ]
    for call in calls:
        call(background)
    assert background.record("bob", "x").status == 202  # accepted, not yet sent
    assert fresh.received == []  # nothing touched the network in the caller's thread
    submitted.pop()

    sink = km.KissmetricsSink(KEY, fresh.base_url)
    async with aiohttp.ClientSession() as session:
        for event in submitted:
            await sink.send(session, [event])
    ours = fresh.requests()

    blocking = KISSmetrics.Client(KEY, trk_host=f"127.0.0.1:{fresh.port}")
    theirs = []
    for call in calls:
        theirs += requests_of(fresh, call, blocking)
    # The dispatcher always back-dates (events arrive late): _d/_t are the only additions.
    for (our_path, our_params), (their_path, their_params) in zip(ours, theirs, strict=True):
        assert our_path == their_path
        assert {k: v for k, v in our_params.items() if k not in ("_d", "_t")} == {
            k: v for k, v in their_params.items() if k not in ("_d", "_t")
        }
        assert "_t" not in their_params or our_params["_t"] == their_params["_t"]


def test_a_background_set_or_alias_of_nothing_sends_nothing_and_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # py-KISSmetrics sends a /s that sets no property; kept, it would only come back as a dead letter.
    submitted: list[Event] = []
    monkeypatch.setattr(trackgate.dispatch, "submit", submitted.append, raising=False)
    background = km.Client(KEY, background=True)
    assert background.set("bob").status == 202 and background.set("bob", {}).status == 202
    assert background.alias("bob", None).status == 202 and background.alias("bob", "").status == 202
    assert submitted == []


def test_background_rejects_a_custom_path() -> None:
    with pytest.raises(ValueError, match="standard path"):
        km.Client(KEY, background=True).record("bob", "x", path="s")


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    person=text,
    event=st.none() | text,
    timestamp=st.none() | st.integers(0, 2**33) | st.floats(0, 2e9),
    identity=st.none() | text,
    properties=st.none()
    | st.dictionaries(
        text,
        text | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.binary(max_size=4)
        | st.lists(text, max_size=2),
        max_size=4,
    ),
)
def test_query_strings_equal_py_kissmetrics_for_any_input(
    person: str, event: str | None, timestamp: float | None, identity: str | None, properties: dict[str, Any] | None
) -> None:
    ours = km.create_query(KEY, person, event=event, timestamp=timestamp, identity=identity, properties=properties)
    theirs = their_create_query(KEY, person, event=event, timestamp=timestamp, identity=identity, properties=properties)
    assert ours == theirs


def test_background_through_the_real_dispatcher_reaches_kissmetrics(
    fresh: KissmetricsReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from trackgate.dispatch import instances

    # A dispatcher of this test's own, forgotten afterwards so no other test submits to it.
    monkeypatch.setattr(instances, "_default", [])
    monkeypatch.setattr(instances, "_by_settings", {})
    monkeypatch.setattr(instances, "_by_identity", {})
    settings = Settings.from_environ(
        {},
        sinks="kissmetrics",
        kissmetrics_key=KEY,
        kissmetrics_url=fresh.base_url,
        spool_path=str(tmp_path / "spool.sqlite3"),
    )
    dispatcher = trackgate.dispatch.get_dispatcher(settings)
    client = km.Client(KEY, background=True)
    client.record("bob", "Signed Up", {"Plan": "Pro"}, timestamp=1_700_000_000)
    client.set("bob", {"Age": 30}, timestamp=1_700_000_001)
    client.alias("anon", "bob")
    assert fresh.wait_delivered(3, timeout=30)
    assert dispatcher.drain(5) == 0
    blocking = KISSmetrics.Client(KEY, trk_host=f"127.0.0.1:{fresh.port}")
    delivered = fresh.requests()
    expected = requests_of(
        fresh,
        lambda c: (
            c.record("bob", "Signed Up", {"Plan": "Pro"}, timestamp=1_700_000_000),
            c.set("bob", {"Age": 30}, timestamp=1_700_000_001),
            c.alias("anon", "bob"),
        ),
        blocking,
    )
    assert sorted(delivered, key=repr) == sorted(expected, key=repr)  # the dispatcher may reorder sends


def test_one_client_is_safe_from_many_threads(fresh: KissmetricsReceiver) -> None:
    import threading

    with km.Client(KEY, trk_host=f"127.0.0.1:{fresh.port}") as client:
        threads = [
            threading.Thread(target=lambda t=t: [client.record(f"p{t}", "e", {"i": i}) for i in range(25)])
            for t in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(fresh.unique()) == 100


def test_an_unreachable_host_raises_what_py_kissmetrics_raises(fresh: KissmetricsReceiver) -> None:
    from urllib3.exceptions import MaxRetryError

    fresh.down()
    try:
        host = f"127.0.0.1:{fresh.port}"
        for client in (KISSmetrics.Client(KEY, trk_host=host), km.Client(KEY, trk_host=host)):
            with pytest.raises(MaxRetryError):
                client.record("bob", "x")
            close(client)
    finally:
        fresh.up()


def test_a_redirect_is_followed_headers_read_any_case_and_a_new_host_is_used(fresh: KissmetricsReceiver) -> None:
    """What urllib3 does for py-KISSmetrics (a tracking host moving http to https answers 301)."""
    with KissmetricsReceiver() as other, km.Client(KEY, trk_host="127.0.0.1:1") as client:
        client.trk_host = f"127.0.0.1:{fresh.port}"  # set after construction, as callers may
        response = client.record("bob", "one")
        assert (response.status, response.data) == (200, GIF_1X1)
        assert response.headers["content-type"] == response.headers["Content-Type"]  # type: ignore[attr-defined]
        client.trk_host = f"127.0.0.1:{other.port}"
        client.record("bob", "two")
        fresh.fail(301, times=1, location=f"http://127.0.0.1:{other.port}/e?_k={KEY}&_p=bob&_n=moved")
        client.trk_host = f"127.0.0.1:{fresh.port}"
        assert client.record("bob", "three").status == 200
        assert [p["_n"] for _, p in other.requests()] == ["two", "moved"]
