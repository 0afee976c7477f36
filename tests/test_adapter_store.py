"""The event store on real SQLite files and a real PostgreSQL: round trip, idempotent redelivery, tail."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from trackgate import ConfigError, Event, Settings
from trackgate.adapters.store import TABLE, EventStore, StoreSink, create_sink, default_store_url, open_store
from trackgate.dispatch.sink import Outcome, RetryLater

pytestmark = pytest.mark.timeout(60)


def sample(n: int, start: float = 1_700_000_000.0) -> list[Event]:
    return [
        Event(
            "custom",
            name=f"e{i}",
            visitor="v",
            user_id=None if i % 2 else "bob",
            timestamp=start + i,
            properties={"i": i, "nested": {"a": [1, 2]}},
            metadata={"campaign": "x"},
            revenue=i / 4,
        )
        for i in range(n)
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'deep' / 'events.sqlite3'}"
        return
    yield request.getfixturevalue("empty_postgres")


@pytest.fixture
def empty_postgres(postgres_url: str) -> str:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    return postgres_url


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    store = open_store(store_url)
    yield store
    store.close()


def test_events_come_back_equal_newest_last(store: EventStore) -> None:
    events = sample(30)
    assert store.insert(events) == 30
    assert store.tail(5) == events[-5:]
    assert store.tail(100) == events


def test_redelivery_never_duplicates(store: EventStore) -> None:
    events = sample(10)
    store.insert(events[:6])
    assert store.insert(events) == 4  # the six already stored are skipped
    assert store.insert(events) == 0
    assert store.count() == 10


def test_values_json_cannot_hold_and_nul_characters_survive(store: EventStore) -> None:
    import datetime

    event = Event("custom", name="a\x00b", visitor="v\x00", properties={"when": datetime.date(2024, 1, 2)})
    store.insert([event])
    [back] = store.tail(1)
    assert (back.id, back.name, back.visitor, back.properties) == (event.id, "a\x00b", "v\x00", {"when": "2024-01-02"})


async def test_the_sink_stores_batches_and_redelivered_batches_once(store_url: str) -> None:
    sink = create_sink(Settings.from_environ({"TRACKGATE_STORE_URL": store_url}))
    events = sample(1200)
    async with aiohttp.ClientSession() as session:
        for start in range(0, 1200, sink.batch_size):
            assert await sink.send(session, events[start : start + sink.batch_size]) == Outcome()
        await sink.send(session, events[:700])  # a retry after a lost confirmation
    await sink.aclose()
    reader = open_store(store_url)
    assert reader.count() == 1200
    assert reader.tail(1) == events[-1:]
    reader.close()


def test_several_writers_on_one_store_lose_nothing(store_url: str) -> None:
    events = sample(2000)
    stores = [open_store(store_url) for _ in range(4)]
    chunks = [events[i::4] for i in range(4)]
    threads = [
        threading.Thread(target=lambda s=s, c=c: [s.insert(c[j : j + 50]) for j in range(0, len(c), 50)])
        for s, c in zip(stores, chunks, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].count() == 2000
    assert stores[0].tail(2000) == events
    for s in stores:
        s.close()


def test_creating_the_sink_touches_no_file(tmp_path: Path) -> None:
    path = tmp_path / "lazy" / "events.sqlite3"
    create_sink(Settings.from_environ({"TRACKGATE_STORE_URL": f"sqlite:///{path}"}))
    assert not path.parent.exists()


def test_default_location_is_the_users_data_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACKGATE_STORE_URL")
    import platformdirs

    assert default_store_url() == f"sqlite:///{Path(platformdirs.user_data_dir('trackgate')) / 'events.sqlite3'}"
    assert create_sink(Settings.from_environ({})).url == default_store_url()


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "events.sqlite3", "sqlite://"])
def test_unknown_urls_name_the_variable_and_hide_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    assert caught.value.name == "TRACKGATE_STORE_URL"
    assert "secret" not in str(caught.value)


@pytest.mark.postgres
async def test_postgres_unreachable_is_retry_later() -> None:
    sink = StoreSink("postgresql://trackgate:trackgate@127.0.0.1:1/trackgate")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetryLater):
            await sink.send(session, sample(1))
    await sink.aclose()


@pytest.mark.postgres
async def test_a_dropped_postgres_connection_is_retried_then_reopened(empty_postgres: str) -> None:
    import psycopg

    postgres_url = empty_postgres
    sink = StoreSink(postgres_url)
    events = sample(3)
    async with aiohttp.ClientSession() as session:
        await sink.send(session, events[:1])
        with psycopg.connect(postgres_url, autocommit=True) as admin:  # the server restarts, say
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(RetryLater):
            await sink.send(session, events[1:])
        await sink.send(session, events[1:])
    await sink.aclose()
    reader = open_store(postgres_url)
    assert reader.tail(10) == events
    reader.close()


def test_sqlite_locked_by_another_writer_is_retry_later(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    open_store(url).close()
    blocker = sqlite3.connect(tmp_path / "events.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    sink = StoreSink(url)
    sink.store._conn.execute("PRAGMA busy_timeout = 50")  # type: ignore[attr-defined]

    async def attempt() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(RetryLater):
                await sink.send(session, sample(1))
            blocker.execute("ROLLBACK")
            await sink.send(session, sample(1))
        await sink.aclose()

    asyncio.run(attempt())
    blocker.close()
    reader = open_store(url)
    assert reader.count() == 1
    reader.close()


async def test_an_event_the_store_cannot_hold_is_dead_lettered_alone(store_url: str) -> None:
    # A lone surrogate (from json.loads('"\\ud800"')) cannot be written as UTF-8: that event is refused for
    # good, the rest of its batch is stored, and nothing waits behind it.
    good = sample(3)
    bad = Event("custom", name="bad\ud800", visitor="v")
    sink = StoreSink(store_url)
    async with aiohttp.ClientSession() as session:
        outcome = await sink.send(session, [good[0], bad, *good[1:]])
    await sink.aclose()
    assert list(outcome.rejected) == [bad.id] and "refused" in outcome.rejected[bad.id]
    reader = open_store(store_url)
    assert reader.tail(10) == good
    reader.close()


def test_an_event_holding_nan_or_infinity_cannot_be_submitted() -> None:
    # Not JSON (RFC 8259): strict receivers and PostgreSQL's json type refuse it.
    nan, infinity = float("nan"), float("inf")
    for event in (Event("custom", name="x", properties={"ratio": nan}), Event("conversion", revenue=infinity)):
        with pytest.raises(TypeError, match="cannot be stored"):
            event.snapshot()


async def test_a_store_that_cannot_be_opened_is_retry_later_with_the_reason(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    sink = StoreSink(f"sqlite:///{blocked / 'events.sqlite3'}")  # its folder would be a file
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetryLater, match="cannot be opened"):
            await sink.send(session, sample(1))
    await sink.aclose()


@pytest.mark.postgres
@pytest.mark.parametrize("privileges", ["SELECT, INSERT", "INSERT"], ids=["read-and-insert", "insert-only"])
async def test_a_postgres_role_that_may_only_insert_uses_the_existing_table(
    empty_postgres: str, privileges: str
) -> None:
    from urllib.parse import urlsplit

    import psycopg

    made = open_store(empty_postgres)  # the table, made by an administrator
    assert made.count() == 0
    made.close()
    with psycopg.connect(empty_postgres, autocommit=True) as admin:
        _drop_role(admin, "tg_insert_only")
        admin.execute("CREATE ROLE tg_insert_only LOGIN PASSWORD 'tg'")
        admin.execute("GRANT USAGE ON SCHEMA public TO tg_insert_only")  # (no CREATE: PostgreSQL 15's default)
        # (ON CONFLICT naming a column needed SELECT on it: an insert-only role's events waited for ever)
        admin.execute(f"GRANT {privileges} ON {TABLE} TO tg_insert_only")
    try:
        parts = urlsplit(empty_postgres)
        url = parts._replace(netloc="tg_insert_only:tg@" + parts.netloc.rpartition("@")[2]).geturl()
        sink = StoreSink(url)
        async with aiohttp.ClientSession() as session:
            assert await sink.send(session, sample(2)) == Outcome()
            # Without INSERT it is the store's problem, not the events': they wait, none is dead-lettered.
            with psycopg.connect(empty_postgres, autocommit=True) as admin:
                admin.execute(f"REVOKE INSERT ON {TABLE} FROM tg_insert_only")
            with pytest.raises(RetryLater, match="InsufficientPrivilege"):
                await sink.send(session, sample(3, start=1_800_000_000.0))
        await sink.aclose()
    finally:
        with psycopg.connect(empty_postgres, autocommit=True) as admin:
            _drop_role(admin, "tg_insert_only")


def _drop_role(admin: Any, role: str) -> None:
    if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        admin.execute(f"DROP OWNED BY {role}")  # its privileges, which would keep the role
        admin.execute(f"DROP ROLE {role}")


def test_an_event_whose_fields_are_of_the_wrong_type_cannot_be_submitted() -> None:
    for event in (Event("custom", name=42), Event("custom", visitor=b"x")):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="cannot be stored"):
            event.snapshot()
    with pytest.raises(TypeError, match="timestamp must be a number"):  # (its id is made of it: at once)
        Event("custom", timestamp=None)  # type: ignore[arg-type]


class _PickyStore:
    """A store of the app's own that refuses one event with a plain Exception (or, picky=True, all)."""

    def __init__(self, *, refuse_all: bool = False) -> None:
        self.rows: list[str] = []
        self.refuse_all = refuse_all

    def insert(self, events: Any) -> int:
        if self.refuse_all or any(event.name == "bad" for event in events):
            raise Exception("no")  # what any store of ones own may raise
        self.rows += [event.name for event in events]
        return len(events)

    def close(self) -> None:
        return None


async def test_a_store_refusing_one_event_dead_letters_it_and_refusing_all_makes_them_wait() -> None:
    good, bad = sample(2), Event("custom", name="bad")
    picky = _PickyStore()
    async with aiohttp.ClientSession() as session:
        outcome = await StoreSink(store=picky).send(session, [good[0], bad, good[1]])  # type: ignore[arg-type]
        assert list(outcome.rejected) == [bad.id] and picky.rows == ["e0", "e1"]
        with pytest.raises(RetryLater, match="refuses every event"):
            await StoreSink(store=_PickyStore(refuse_all=True)).send(session, sample(3))  # type: ignore[arg-type]


async def test_a_batch_of_events_each_refused_for_its_own_content_is_dead_lettered(tmp_path: Path) -> None:
    bad = [Event("custom", name="x\ud800"), Event("custom", name="y\ud800")]  # lone surrogates, both
    sink = StoreSink(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    async with aiohttp.ClientSession() as session:
        outcome = await sink.send(session, bad)
    await sink.aclose()
    assert sorted(outcome.rejected) == sorted(event.id for event in bad)


def test_text_of_a_str_subclass_is_text() -> None:
    import enum

    class Goal(enum.StrEnum):
        SIGNUP = "signup"

    class UserId(str):
        pass

    Event("conversion", name=Goal.SIGNUP, user_id=UserId("42"), timestamp=True).snapshot()  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_a_postgres_table_dropped_under_the_store_is_made_again(empty_postgres: str) -> None:
    # A reset or a migration drops it while the app runs: events waited until a restart.
    import psycopg

    sink = StoreSink(empty_postgres)
    async with aiohttp.ClientSession() as session:
        assert await sink.send(session, sample(2)) == Outcome()
        with psycopg.connect(empty_postgres, autocommit=True) as admin:
            admin.execute(f"DROP TABLE {TABLE}")
        later = sample(3, start=1_800_000_000.0)
        with contextlib.suppress(RetryLater):  # (the batch that meets the missing table waits)
            await sink.send(session, later)
        assert await sink.send(session, later) == Outcome()
    await sink.aclose()
    with psycopg.connect(empty_postgres) as conn:
        assert conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0] == 3
