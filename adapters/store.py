"""The local event store: every event kept in a table you own (``TRACKGATE_SINKS=store``, the default).

    TRACKGATE_STORE_URL=sqlite:////var/lib/myapp/events.sqlite3       # an absolute path: four slashes
    TRACKGATE_STORE_URL=postgresql://user:password@db.example/analytics    # pip install trackgate[postgresql]

Without a URL the store is SQLite in the user's data directory (``platformdirs.user_data_dir("trackgate")``
when platformdirs is installed, else ``$XDG_DATA_HOME/trackgate`` or ``~/.local/share/trackgate``).
SQLite suits one host (WAL mode lets several processes write); PostgreSQL suits several hosts.

Events land in table ``trackgate_events`` (id, kind, name, visitor, user_id, occurred_at, data) with the
whole event as JSON in ``data``. The insert ignores an id already stored, so a redelivery after a
crash or a retry never makes a duplicate row. Read the newest with::

    from trackgate.adapters.store import open_store
    for event in open_store(settings.store_url).tail(20): ...
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from trackgate import ConfigError, Event, Settings
from trackgate.dispatch.sink import Outcome, RetryLater
from trackgate.dispatch.spool import enable_wal

__all__ = ["EventStore", "PostgresStore", "SQLiteStore", "StoreSink", "create_sink", "default_store_url", "open_store"]

TABLE = "trackgate_events"

_CREATE_LOCK = 0x7472_6B67_6174_6501  # any constant shared by every trackgate process

_Row = tuple[str, str, str, str | None, str | None, float, str]


def default_store_url() -> str:
    try:
        platformdirs: Any = importlib.import_module("platformdirs")
        folder = Path(platformdirs.user_data_dir("trackgate"))
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        folder = Path(base) / "trackgate"
    return f"sqlite:///{folder / 'events.sqlite3'}"


class EventStore(Protocol):
    def insert(self, events: Sequence[Event]) -> int:
        """Store the events whose id is new; returns how many were new."""

    def tail(self, count: int = 20) -> list[Event]:
        """The newest ``count`` events, oldest first (like ``tail``)."""

    def count(self) -> int: ...

    def close(self) -> None: ...


def open_store(url: str | None = None) -> EventStore:
    """The store a ``TRACKGATE_STORE_URL`` names (the default SQLite file when None)."""
    url = url or default_store_url()
    if url.startswith("sqlite://"):
        path = _sqlite_path(url)
        if not path:
            raise ConfigError("TRACKGATE_STORE_URL", url, "expected sqlite:///<path>")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    scheme = url.split(":", 1)[0] if ":" in url else url[:20]
    raise ConfigError("TRACKGATE_STORE_URL", f"{scheme}:...", "expected sqlite:///<path> or postgresql://...")


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite://").removeprefix("/")  # sqlite:///rel, sqlite:////abs


def _row(event: Event) -> _Row:
    data = event.to_json()
    return (
        event.id,
        event.kind,
        _text(event.name),
        _opt(event.visitor),
        _opt(event.user_id),
        float(event.timestamp),
        data,
    )


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; the JSON copy in ``data`` keeps the original (escaped as \u0000).
    return value.replace("\x00", "\ufffd")


def _opt(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _event(data: Any) -> Event:
    if isinstance(data, bytes):
        data = data.decode()
    return Event.from_json(data) if isinstance(data, str) else Event.from_dict(data)


class SQLiteStore:
    transient_errors: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
    # What one event can cause (text that cannot be encoded, a number too large): that event is refused.
    event_errors: tuple[type[Exception], ...] = (UnicodeError, ValueError, OverflowError, sqlite3.DataError)

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection used from the dispatcher's worker threads, one statement at a time.
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        enable_wal(self._conn)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,"
            " visitor TEXT, user_id TEXT, occurred_at REAL NOT NULL, data TEXT NOT NULL)"
        )

    def insert(self, events: Sequence[Event]) -> int:
        rows = [_row(e) for e in events]
        with self._lock:
            before = self._conn.total_changes
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING", rows
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return self._conn.total_changes - before

    def tail(self, count: int = 20) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(f"SELECT data FROM {TABLE} ORDER BY id DESC LIMIT ?", (count,)).fetchall()
        return [_event(data) for (data,) in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            (number,) = self._conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        return int(number)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_NEEDS_PSYCOPG = "needs psycopg: pip install 'trackgate[postgresql]'"


class StoreUnavailable(Exception):
    """The store cannot be reached or prepared now: every event waits (no single one is at fault)."""


class PostgresStore:
    def __init__(self, url: str) -> None:
        try:
            self._psycopg: Any = importlib.import_module("psycopg")
        except ImportError:
            raise ConfigError("TRACKGATE_STORE_URL", "postgresql://...", _NEEDS_PSYCOPG) from None
        self.url = url
        # Connection trouble is worth a retry (server restarting, failover); anything else is a bug.
        self.transient_errors: tuple[type[Exception], ...] = (
            self._psycopg.OperationalError,
            self._psycopg.InterfaceError,
            StoreUnavailable,
            # The table dropped under us (a reset, a migration): the next connection looks for it, and makes it.
            self._psycopg.errors.UndefinedTable,
        )
        # What one event can cause (a value a column's type refuses, text it cannot hold): that event is refused.
        self.event_errors: tuple[type[Exception], ...] = (UnicodeError, ValueError, self._psycopg.DataError)
        self._lock = threading.Lock()
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = self._psycopg.connect(self.url, connect_timeout=10)
            try:
                with conn.transaction():
                    # A table made beforehand is used as it is: a role that may only read and insert (the
                    # least privilege an app needs; PostgreSQL 15 lets no one create in "public" by default)
                    # must not be asked to create it.
                    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0]
                    if not exists:
                        # Several hosts may start at once; CREATE TABLE IF NOT EXISTS alone races on the catalog.
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                        conn.execute(
                            f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
                            " name TEXT NOT NULL, visitor TEXT, user_id TEXT,"
                            " occurred_at DOUBLE PRECISION NOT NULL, data JSON NOT NULL)"
                        )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, work: Any) -> Any:
        with self._lock:
            try:
                conn = self._connection()
            except self._psycopg.Error as exc:
                # Reaching or preparing the store (a password, a privilege, a server down) is no event's fault.
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}".strip()) from exc
            try:
                with conn.transaction():
                    return work(conn)
            except self.transient_errors:
                self._drop()
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def insert(self, events: Sequence[Event]) -> int:
        rows = [_row(e) for e in events]

        def work(conn: Any) -> int:
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    rows,
                    returning=False,
                )
                return int(cursor.rowcount)

        return int(self._run(work))

    def tail(self, count: int = 20) -> list[Event]:
        rows: Iterable[Any] = self._run(
            lambda conn: conn.execute(f"SELECT data FROM {TABLE} ORDER BY id DESC LIMIT %s", (count,)).fetchall()
        )
        return [_event(data) for (data,) in reversed(list(rows))]

    def count(self) -> int:
        return int(self._run(lambda conn: conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]))

    def close(self) -> None:
        with self._lock:
            self._drop()


class StoreSink:
    name = "store"
    batch_size = 500  # one transaction per batch: a disk sync per 500 events, not per event
    concurrency = 1  # one writer; SQLite serialises writers anyway

    def __init__(self, url: str | None = None, *, store: EventStore | None = None) -> None:
        self.url = url
        self._store = store

    @property
    def location(self) -> str:
        """The store's URL: the configured one, else the default SQLite file's (check-config shows it)."""
        return self.url or default_store_url()

    def missing(self) -> str | None:
        """The path of a SQLite store that does not exist yet (a reader must not make it), else None."""
        url = self.url or default_store_url()
        if url.startswith("sqlite://") and not Path(_sqlite_path(url)).exists():
            return _sqlite_path(url)
        return None

    @property
    def store(self) -> EventStore:
        # Opened on first use, in the dispatcher, not at construction (no files made by reading settings).
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    async def send(self, session: aiohttp.ClientSession, events: Sequence[Event]) -> Outcome:
        try:
            store = await asyncio.to_thread(lambda: self.store)
        except ConfigError:
            raise
        except Exception as exc:  # a folder that cannot be made, a read-only file, a locked one: wait
            raise RetryLater(f"event store cannot be opened: {type(exc).__name__}: {exc}") from exc
        transient = getattr(store, "transient_errors", ())
        refused = getattr(store, "event_errors", ())
        try:
            await asyncio.to_thread(store.insert, events)
        except transient as exc:
            raise RetryLater(f"event store unavailable: {type(exc).__name__}: {exc}") from exc
        except Exception:
            # Find which events the store refuses, so that they alone go to the dead letters and the rest
            # is stored; when it refuses every one, it is the store's problem (a privilege, a table of
            # another shape), and every event waits for it to be fixed.
            return await self._one_by_one(store, events, transient, refused)
        return Outcome()

    @staticmethod
    async def _one_by_one(store: EventStore, events: Sequence[Event], transient: Any, refused: Any) -> Outcome:
        rejected: dict[str, str] = {}
        stored = 0
        unexplained: Exception | None = None  # an error no single event is known to cause
        for event in events:
            try:
                await asyncio.to_thread(store.insert, [event])
            except transient as exc:
                raise RetryLater(f"event store unavailable: {type(exc).__name__}: {exc}") from exc
            except Exception as exc:
                rejected[event.id] = f"the event store refused it: {type(exc).__name__}: {exc}"
                if not isinstance(exc, refused):
                    unexplained = exc
            else:
                stored += 1
        if unexplained is not None and not stored:
            raise RetryLater(f"event store refuses every event: {type(unexplained).__name__}: {unexplained}")
        return Outcome(rejected)

    async def aclose(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)


def create_sink(settings: Settings) -> StoreSink:
    url = settings.store_url or default_store_url()
    if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        open_store(url)  # raises the ConfigError that names TRACKGATE_STORE_URL
    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg") is None:
        # Said here (at start-up, by check-config), not by every retry of every event in the worker.
        raise ConfigError("TRACKGATE_STORE_URL", "postgresql://...", _NEEDS_PSYCOPG)
    return StoreSink(url)
