"""The dispatcher in this process, against real loopback receivers (tests/sinks.py) and in-process sinks."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sinks import WebhookReceiver

import trackgate
from trackgate import Event, Settings
from trackgate.dispatch import Dispatcher, Outcome, RetryLater, get_dispatcher, register
from trackgate.dispatch.registry import unregister
from trackgate.dispatch.spool import Spool

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

MakeDispatcher = Callable[..., Dispatcher]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Bounded wait for something the dispatcher does in its own thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def custom(count: int, prefix: str = "e") -> list[Event]:
    return [Event("custom", name=f"{prefix}{i}") for i in range(count)]


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite3"


@pytest.fixture
def make_dispatcher(spool_path: Path) -> Iterator[MakeDispatcher]:
    made: list[Dispatcher] = []

    def make(**overrides: Any) -> Dispatcher:
        dispatcher = Dispatcher(Settings(spool_path=str(spool_path), **overrides))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.drain(0)


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


class MemorySink:
    """In-process sink: records batches; ``answer`` decides each batch's fate."""

    def __init__(self, name: str, answer: Callable[[Sequence[Event]], Outcome] | None = None,
                 batch_size: int = 100, concurrency: int = 2) -> None:
        self.name, self.batch_size, self.concurrency = name, batch_size, concurrency
        self.answer = answer or (lambda events: Outcome())
        self.batches: list[list[Event]] = []
        self.lock = threading.Lock()

    async def send(self, session: object, events: Sequence[Event]) -> Outcome:
        outcome = self.answer(events)
        with self.lock:
            self.batches.append(list(events))
        return outcome

    async def aclose(self) -> None:
        return None

    @property
    def ids(self) -> list[str]:
        with self.lock:
            return [event.id for batch in self.batches for event in batch]


@pytest.fixture
def memory_sink() -> Iterator[Callable[..., MemorySink]]:
    names: list[str] = []

    def make(name: str = "memory", **kw: Any) -> MemorySink:
        sink = MemorySink(name, **kw)
        register(name, lambda settings: sink)  # type: ignore[arg-type,return-value]
        names.append(name)
        return sink

    yield make
    for name in names:
        unregister(name)


def delivered_once(
    dispatcher: Dispatcher, hook: WebhookReceiver, sent: Sequence[Event], expected: Sequence[Event]
) -> None:
    """Submit ``sent``; the receiver gets exactly ``expected``, each once."""
    for event in sent:
        dispatcher.submit(event)
    assert hook.wait_delivered(len(expected), 30), hook.payloads()
    assert hook.unique() == {event.id for event in expected}
    assert not hook.duplicates()


# --- delivery --------------------------------------------------------------------------------------------


def test_every_event_reaches_the_receiver_once(make_dispatcher: MakeDispatcher, hook: WebhookReceiver) -> None:
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = custom(300)
    delivered_once(dispatcher, hook, sent, sent)
    assert wait_for(lambda: dispatcher.stats()["delivered"] == 300)
    figures = dispatcher.stats()
    assert (figures["submitted"], figures["spooled"], figures["backlog"]) == (300, 300, 0)


def test_an_event_that_cannot_be_stored_fails_in_the_caller_and_holds_nothing_up(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    with pytest.raises(TypeError, match="cannot be stored"):
        dispatcher.submit(Event("custom", name="bad", properties={("a", "b"): 1}))
    good = custom(5)
    for event in good:
        dispatcher.submit(event)
    assert hook.wait_delivered(5, 30)
    assert hook.unique() == {event.id for event in good}
    assert dispatcher.stats()["dropped"] == 0


def test_what_is_delivered_is_the_event_as_submitted(make_dispatcher: MakeDispatcher, hook: WebhookReceiver) -> None:
    # An app that reuses one dictionary for its next event, or changes a nested one after submitting.
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    properties: dict[str, Any] = {"cart": ["a"]}
    for step in range(3):
        properties["step"] = step
        dispatcher.submit(Event("custom", name=f"step {step}", properties=properties))
        properties["cart"].append("b")
    assert hook.wait_delivered(3, 30)
    delivered = sorted(hook.payloads(), key=lambda payload: payload["name"])
    assert [(p["properties"]["step"], len(p["properties"]["cart"])) for p in delivered] == [(0, 1), (1, 2), (2, 3)]


def test_a_receiver_down_for_a_while_then_up_gets_everything_once(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    hook.down()
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = custom(200)
    for event in sent[:100]:
        dispatcher.submit(event)
    assert wait_for(lambda: dispatcher.stats()["retried"] >= 1)
    for event in sent[100:]:
        dispatcher.submit(event)
    assert wait_for(lambda: dispatcher.stats()["spooled"] == 200)
    assert dispatcher.stats()["backlog"] == 200
    hook.up()
    assert hook.wait_delivered(200, 60)
    assert hook.unique() == {event.id for event in sent}
    assert not hook.duplicates()


def test_drain_waits_for_a_retry_due_before_its_deadline(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    hook.fail(500, times=1)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    dispatcher.submit(Event("custom", name="once refused"))
    assert wait_for(lambda: dispatcher.stats()["retried"] == 1)
    assert dispatcher.drain(10) == 0  # the retry is due within a second: drain waits for it
    assert [r.status for r in hook.received] == [500, 200]


def test_a_down_receiver_gets_one_probe_per_backoff_step(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    hook.fail(503)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)  # 8 sends in flight when healthy
    for event in custom(100):
        dispatcher.submit(event)
    time.sleep(3)
    # The first sends all go out at once; after them, one probe a step. (Eight a step would be over 24 in
    # three seconds: the first two steps' delays are at most half a second and a second.)
    assert len(hook.received) < 24, len(hook.received)
    assert dispatcher.stats()["delivered"] == 0


def test_sends_in_flight_with_a_failing_one_do_not_stretch_its_pause(
    make_dispatcher: MakeDispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Full jitter: the pause is one draw. Each failing send drawing its own and the longest winning would
    # make it nearly the ceiling every time.
    import trackgate.dispatch.worker
    from trackgate.dispatch.worker import _SinkState

    # A draw that cannot run out while the loop below runs (a draw near zero would, and then a new pause is
    # rightly drawn); a second draw would still show, as a later end.
    monkeypatch.setattr(trackgate.dispatch.worker, "retry_delay", lambda failures, retry_after: 30.0)
    dispatcher = make_dispatcher(sinks="store")
    state = _SinkState(sink=None)  # type: ignore[arg-type]
    started = time.monotonic()
    dispatcher._later("store", state, [], started=started, reason="HTTP 503", retry_after=None)
    first_pause = state.paused_until
    for _ in range(7):  # the other sends that were in flight with it fail too
        dispatcher._later("store", state, [], started=started, reason="HTTP 503", retry_after=None)
    assert (state.paused_until, state.failures) == (first_pause, 1)


def test_a_spool_error_in_a_sinks_pump_is_waited_out(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    real_claim = Spool.claim
    failures = {"left": 3}

    def flaky_claim(self: Spool, *args: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return real_claim(self, *args, **kwargs)

    monkeypatch.setattr(Spool, "claim", flaky_claim)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    for event in custom(10):
        dispatcher.submit(event)
    assert hook.wait_delivered(10, 30)  # the pump lived through the errors
    assert failures["left"] == 0


def test_the_first_submit_does_not_wait_for_a_locked_spool(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, spool_path: Path
) -> None:
    import sqlite3

    Spool(spool_path).close()
    other = sqlite3.connect(spool_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
        began = time.monotonic()
        dispatcher.submit(Event("custom", name="while locked"))
        assert time.monotonic() - began < 5  # (SQLite's busy wait is 30 s: the worker waits, not the caller)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert hook.wait_delivered(1, 60)


def test_a_500_is_retried_until_delivered(make_dispatcher: MakeDispatcher, hook: WebhookReceiver) -> None:
    hook.fail(500, times=3)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = custom(20)
    for event in sent:
        dispatcher.submit(event)
    assert hook.wait_delivered(20, 30)
    assert not hook.duplicates()
    assert dispatcher.stats()["retried"] >= 3
    assert dispatcher.stats()["failed"] == 0


def test_429_retry_after_decides_when_the_next_attempt_is_due(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, spool_path: Path
) -> None:
    hook.fail(429, times=1, retry_after=600)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    before = time.time()
    dispatcher.submit(Event("custom", name="throttled"))
    assert wait_for(lambda: dispatcher.stats()["retried"] == 1)
    due = Spool(spool_path).next_ready("webhook")
    assert due is not None and due >= before + 600
    assert len(hook.received) == 1  # no second attempt before the receiver's time


def test_a_short_retry_after_is_waited_out_then_delivered(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    hook.fail(429, times=1, retry_after=1)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    dispatcher.submit(Event("custom", name="throttled"))
    assert hook.wait_delivered(1, 20)
    assert [r.status for r in hook.received] == [429, 200]


def test_a_4xx_goes_to_the_dead_letters_with_the_response_and_can_be_resent(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    hook.fail(422, times=1, body="field x is invalid")
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    refused = Event("custom", name="refused")
    dispatcher.submit(refused)
    assert wait_for(lambda: dispatcher.stats()["failed"] == 1)
    (dead,) = dispatcher.spool.dead()
    assert (dead.event_id, dead.status, dead.sink) == (refused.id, 422, "webhook")
    assert "field x is invalid" in dead.response
    assert dispatcher.stats()["backlog"] == 0
    assert dispatcher.retry_dead() == 1
    assert hook.wait_delivered(1, 20)
    assert hook.unique() == {refused.id}
    assert dispatcher.spool.dead() == []


def test_events_a_sink_refuses_one_by_one_are_dead_lettered_and_the_rest_delivered(
    make_dispatcher: MakeDispatcher, memory_sink: Callable[..., MemorySink]
) -> None:
    def refuse_odd(events: Sequence[Event]) -> Outcome:
        return Outcome({e.id: "odd one out" for e in events if int(e.name[1:]) % 2})

    memory_sink(answer=refuse_odd)
    dispatcher = make_dispatcher(sinks="memory")
    for event in custom(10):
        dispatcher.submit(event)
    assert wait_for(lambda: dispatcher.stats()["delivered"] + dispatcher.stats()["failed"] == 10)
    assert (dispatcher.stats()["delivered"], dispatcher.stats()["failed"]) == (5, 5)
    assert {row.reason for row in dispatcher.spool.dead()} == {"odd one out"}


def test_a_sink_that_crashes_is_retried_not_lost(
    make_dispatcher: MakeDispatcher, memory_sink: Callable[..., MemorySink], caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def crash_once(events: Sequence[Event]) -> Outcome:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("adapter bug")
        return Outcome()

    sink = memory_sink(answer=crash_once)
    dispatcher = make_dispatcher(sinks="memory")
    dispatcher.submit(Event("custom", name="survivor"))
    assert wait_for(lambda: dispatcher.stats()["delivered"] == 1)
    assert len(sink.ids) == 1
    assert "failed unexpectedly" in caplog.text


def test_each_sink_gets_every_event_and_the_event_stays_until_both_confirm(
    make_dispatcher: MakeDispatcher, memory_sink: Callable[..., MemorySink]
) -> None:
    def later(events: Sequence[Event]) -> Outcome:
        raise RetryLater("not now", retry_after=600)

    fine = memory_sink("fine")
    memory_sink("slow", answer=later)
    dispatcher = make_dispatcher(sinks="fine,slow")
    sent = custom(50)
    for event in sent:
        dispatcher.submit(event)
    assert wait_for(lambda: len(fine.ids) == 50)
    assert wait_for(lambda: dispatcher.spool.pending("fine") == 0)  # confirmed rows go in the pump's next pass
    assert dispatcher.spool.pending("slow") == 50
    assert dispatcher.stats()["backlog"] == 50


def test_batches_respect_the_sinks_batch_size(
    make_dispatcher: MakeDispatcher, memory_sink: Callable[..., MemorySink]
) -> None:
    sink = memory_sink(batch_size=7)
    dispatcher = make_dispatcher(sinks="memory")
    for event in custom(100):
        dispatcher.submit(event)
    assert wait_for(lambda: len(sink.ids) == 100)
    assert max(len(batch) for batch in sink.batches) <= 7


def test_submit_from_many_threads_and_an_event_loop(
    make_dispatcher: MakeDispatcher, memory_sink: Callable[..., MemorySink]
) -> None:
    sink = memory_sink()
    dispatcher = make_dispatcher(sinks="memory")
    sent: list[Event] = []

    def produce(prefix: str) -> None:
        batch = custom(500, prefix)
        sent.extend(batch)
        for event in batch:
            dispatcher.submit(event)

    async def from_a_loop() -> None:
        produce("loop")
        await asyncio.sleep(0)

    threads = [threading.Thread(target=produce, args=(f"t{n}-",)) for n in range(8)]
    for thread in threads:
        thread.start()
    asyncio.run(from_a_loop())
    for thread in threads:
        thread.join()
    assert wait_for(lambda: len(sink.ids) == 4500)
    assert sorted(sink.ids) == sorted(event.id for event in sent)


# --- durability and lifecycle ------------------------------------------------------------------------------


def test_an_id_no_row_can_hold_fails_in_the_caller(make_dispatcher: MakeDispatcher, hook: WebhookReceiver) -> None:
    # json.loads('"\\ud800"') makes such text: bound into SQLite, it stalled every event submitted after it.
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    with pytest.raises(TypeError, match="lone surrogates"):
        dispatcher.submit(Event("custom", name="poison", id="evt-\ud800"))
    good = [*custom(3), Event("custom", name="accented", id="événement-1")]
    for event in good:
        dispatcher.submit(event)
    assert hook.wait_delivered(4, 30)
    assert hook.unique() == {event.id for event in good}


def refuse_adds(monkeypatch: pytest.MonkeyPatch, refuse: Callable[[Sequence[Event]], Exception | None]) -> list[int]:
    """Spool.add raising what ``refuse`` says for a group (None: added); returns the sizes of the groups asked."""
    real_add = Spool.add
    sizes: list[int] = []

    def add(self: Spool, events: Sequence[Event], sinks: Sequence[str]) -> int:
        sizes.append(len(events))
        error = refuse(events)
        if error is not None:
            raise error
        return real_add(self, events, sinks)

    monkeypatch.setattr(Spool, "add", add)
    return sizes


def poison(events: Sequence[Event]) -> Exception | None:
    """A row fault: the group holds an event named "poison", which no row can hold."""
    return ValueError("cannot store this one") if any(event.name == "poison" for event in events) else None


def test_an_event_the_spool_refuses_holds_up_none_of_its_group(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever makes one event unwritable (a fault of ours the checks at submit missed), its group is written
    # one event at a time: it alone is dropped, counted and logged; the rest are delivered.
    refuse_adds(monkeypatch, poison)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = [*custom(3, "a"), Event("custom", name="poison"), *custom(3, "b")]
    delivered_once(dispatcher, hook, sent, [event for event in sent if event.name != "poison"])
    assert wait_for(lambda: dispatcher.stats()["dropped"] == 1 and dispatcher.stats()["submitted"] == 7)


def test_a_spool_that_fails_for_every_event_drops_none_of_them(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spool's own trouble (here a malformed file, twice) is no event's fault: nothing is written one by
    # one and dropped; everything waits in memory and goes out once the spool takes it.
    failures = [sqlite3.DatabaseError("database disk image is malformed") for _ in range(2)]
    refuse_adds(monkeypatch, lambda events: failures.pop() if failures else None)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = custom(5)
    delivered_once(dispatcher, hook, sent, sent)
    assert dispatcher.stats()["dropped"] == 0


def test_a_spool_failing_while_a_group_is_written_one_by_one_is_waited_out_once(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first spool fault ends the one-by-one writing: each next event would wait out the same lock.
    locked = [sqlite3.OperationalError("database is locked")]

    def refuse(events: Sequence[Event]) -> Exception | None:
        if len(events) == 1 and events[0].name == "a2" and locked:
            return locked.pop()
        return poison(events)

    calls = refuse_adds(monkeypatch, refuse)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = [Event("custom", name="poison"), *custom(6, "a")]
    delivered_once(dispatcher, hook, sent, sent[1:])
    assert calls[:5] == [7, 1, 1, 1, 1]  # the group; poison, a0, a1 one by one; a2 meets the lock: no more
    assert dispatcher.stats()["dropped"] == 1


def test_spool_sync_drops_an_event_no_row_can_hold_and_commits_the_next_at_once(
    make_dispatcher: MakeDispatcher, spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_adds(monkeypatch, poison)
    dispatcher = make_dispatcher(sinks="webhook", webhook_url="http://127.0.0.1:9/down", spool_sync=True)
    dispatcher.submit(Event("custom", name="poison"))
    dispatcher.submit(Event("custom", name="good"))
    assert Spool(spool_path).backlog() == 1  # committed before submit() returned, no pause for one bad event
    assert dispatcher.stats()["dropped"] == 1


def test_a_failing_size_check_neither_stops_the_intake_nor_reaches_the_caller(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = iter([sqlite3.OperationalError("database is locked")])

    def enforce_cap(self: Spool, max_bytes: int) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return 0

    monkeypatch.setattr(Spool, "enforce_cap", enforce_cap)
    for sync in (False, True):
        failures = iter([sqlite3.OperationalError("database is locked")])
        hook.clear()
        dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url, spool_sync=sync)
        dispatcher.submit(Event("custom", name="first"))  # its size check fails
        later = custom(3, f"later-{sync}-")
        for event in later:
            dispatcher.submit(event)
        assert hook.wait_delivered(4, 30), (sync, hook.payloads())
        dispatcher.drain(5)


def test_spool_sync_keeps_an_event_the_spool_cannot_take_now(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver, spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "safer" mode lost what the default mode keeps: a locked spool dropped the event.
    refusals = [sqlite3.OperationalError("database is locked")]
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url, spool_sync=True)
    dispatcher.start()
    refuse_adds(monkeypatch, lambda events: refusals.pop() if refusals else None)
    event = Event("custom", name="kept")
    dispatcher.submit(event)
    assert hook.wait_delivered(1, 30)
    assert hook.unique() == {event.id}
    assert dispatcher.stats()["dropped"] == 0


def test_spool_sync_commits_before_submit_returns(make_dispatcher: MakeDispatcher, spool_path: Path) -> None:
    dispatcher = make_dispatcher(sinks="webhook", webhook_url="http://127.0.0.1:9/down", spool_sync=True)
    event = Event("custom", name="durable")
    dispatcher.submit(event)
    assert Spool(spool_path).backlog() == 1  # another connection sees it at once


def test_drain_leaves_what_it_cannot_send_for_the_next_start(
    make_dispatcher: MakeDispatcher, hook: WebhookReceiver
) -> None:
    hook.down()
    first = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    sent = custom(40)
    for event in sent:
        first.submit(event)
    assert first.drain(1.0) == 40
    hook.up()
    second = make_dispatcher(sinks="webhook", webhook_url=hook.url).start()
    assert hook.wait_delivered(40, 30)
    assert hook.unique() == {event.id for event in sent}
    assert wait_for(lambda: second.stats()["delivered"] == 40)


def test_submit_after_drain_starts_again(make_dispatcher: MakeDispatcher, hook: WebhookReceiver) -> None:
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    dispatcher.submit(Event("custom", name="one"))
    assert dispatcher.drain(5) == 0
    dispatcher.submit(Event("custom", name="two"))
    assert hook.wait_delivered(2, 20)


def test_the_size_cap_drops_oldest_counts_and_logs(
    make_dispatcher: MakeDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = make_dispatcher(sinks="webhook", webhook_url="http://127.0.0.1:9/down", spool_max_mb=1)
    blob = {"blob": "x" * 1000}
    for i in range(3000):  # about 3 MB against a 1 MB cap
        dispatcher.submit(Event("custom", name=f"e{i}", properties=blob))
    assert wait_for(lambda: dispatcher.stats()["spooled"] == 3000)
    dropped = dispatcher.stats()["dropped"]
    assert 0 < dropped < 3000
    assert dispatcher.stats()["backlog"] == 3000 - dropped
    assert "TRACKGATE_SPOOL_MAX_MB" in caplog.text


def test_an_unknown_sink_does_not_break_submit_and_the_event_is_kept(
    make_dispatcher: MakeDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = make_dispatcher(sinks="nosuchsink")
    dispatcher.submit(Event("custom", name="kept"))
    assert "TRACKGATE_SINKS" in caplog.text
    assert dispatcher.stats()["backlog"] == 1


def _child_submits(spool: str, url: str, count: int) -> None:
    dispatcher = _inherited[0]
    for event in custom(count, "child"):
        dispatcher.submit(event)
    left = dispatcher.drain(20)
    raise SystemExit(left)


_inherited: list[Dispatcher] = []


def test_a_forked_child_starts_its_own_worker(make_dispatcher: MakeDispatcher, hook: WebhookReceiver,
                                              spool_path: Path) -> None:
    dispatcher = make_dispatcher(sinks="webhook", webhook_url=hook.url)
    for event in custom(10, "parent"):
        dispatcher.submit(event)
    assert hook.wait_delivered(10, 20)  # the parent's worker thread runs and holds a session and a spool
    _inherited[:] = [dispatcher]
    child = multiprocessing.get_context("fork").Process(
        target=_child_submits, args=(str(spool_path), hook.url, 25)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0  # nothing left in the spool after the child's drain
    assert hook.wait_delivered(35, 20)
    assert not hook.duplicates()
    dispatcher.submit(Event("custom", name="parent-after"))
    assert hook.wait_delivered(36, 20)


# --- module-level API ----------------------------------------------------------------------------------------


def test_get_dispatcher_shares_one_per_settings_and_stats_adds_them_up(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    settings = Settings(sinks="webhook", webhook_url=hook.url, spool_path=str(tmp_path / "shared.sqlite3"))
    dispatcher = get_dispatcher(settings)
    try:
        assert get_dispatcher(settings) is dispatcher
        assert get_dispatcher(settings.replace()) is dispatcher  # equal settings, same dispatcher
        before = trackgate.stats()["delivered"]
        trackgate.dispatch.submit(Event("custom", name="via-module"))
        assert hook.wait_delivered(1, 20)
        assert wait_for(lambda: trackgate.stats()["delivered"] == before + 1)
        assert set(trackgate.stats()) >= {"submitted", "spooled", "delivered", "retried", "failed", "dropped",
                                          "backlog"}
    finally:
        dispatcher.drain(5)


def test_backoff_leaves_the_apps_random_sequence_alone() -> None:
    # A seeded random module (an app's, a test framework's) moved under it from the dispatcher's thread.
    import random

    from trackgate.dispatch.backoff import retry_delay

    random.seed(7)
    expected = random.random()
    random.seed(7)
    for failures in range(1, 20):
        assert 0.0 <= retry_delay(failures, None) <= 300.0
    assert random.random() == expected
