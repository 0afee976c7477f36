"""The durable spool: a SQLite file in WAL mode that holds every accepted event until its sinks confirm.

Tables:

* ``events``     one row per accepted event (its JSON); deleted by a trigger once no delivery is pending.
* ``deliveries`` one row per (event, sink) still to deliver. ``ready_at`` is when it may next be tried:
  a claim pushes it ``lease`` seconds ahead under the claimer's ``owner`` tag, so several processes
  sharing the file never send the same row at the same time; a retry pushes it to the backoff's end.
* ``dead``       deliveries refused for good, with the reason and the receiver's answer, until retried.
* ``counters``   the last sequence number handed out: numbers are never reused, even once the events table
  has emptied, so a send still in flight for a dropped row can never confirm a new row of the same number.

Every method takes the spool's lock: one connection is shared by the worker thread and by callers that
write themselves (``TRACKGATE_SPOOL_SYNC``, or a worker that has fallen far behind).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..events import Event
from ..settings import Settings

logger = logging.getLogger("trackgate.dispatch")

__all__ = ["Claimed", "DeadRow", "Spool", "default_spool_path", "peek_backlog"]

# A new file's first sequence number is its creation time in milliseconds times this: numbers then grow
# across the files a path has held (a deleted one's never reach a later one's, short of a million events a
# second since it was made), so a confirmation for a row of a deleted file never matches a row of the new one.
_FIRST_SEQ_PER_MS = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER NOT NULL,
    sink TEXT NOT NULL,
    ready_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    PRIMARY KEY (seq, sink)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (sink, ready_at, seq);
CREATE TRIGGER IF NOT EXISTS events_done AFTER DELETE ON deliveries
WHEN NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = OLD.seq)
BEGIN
    DELETE FROM events WHERE seq = OLD.seq;
END;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    n INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    status INTEGER,
    response TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL
);
"""


_WAL_BYTES_KEPT = 16 * 1024 * 1024
_ROWS_PER_STATEMENT = 400  # (under SQLite's oldest limit of 999 bound values a statement)
_CONNECT_TRIES = 4  # (more than one only while something keeps replacing the file)


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device and inode), or None: gone, or a folder on the way is gone, is no
    folder, or may not be searched."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def enable_wal(db: sqlite3.Connection, *, patience: float = 30.0) -> None:
    """Put the database in WAL mode (once per file; it stays so). Switching needs the file to itself, and
    SQLite answers "locked" at once rather than through the busy timeout when another process is opening it
    too (workers starting together on a new file): wait for it as the busy timeout would."""
    if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def peek_backlog(path: Path, *, timeout: float = 0.5) -> int | None:
    """The backlog read on a read-only connection of its own that waits at most ``timeout`` (a health
    check must not wait for a write lock); None when the file cannot be read now."""
    return _peek_count(path, "events", timeout)


def _peek_count(path: Path, table: str, timeout: float = 0.5) -> int | None:
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=timeout)
        try:
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return None


def other_spools(path: Path) -> list[tuple[Path, int, int]]:
    """Spool files beside ``path`` in the default spool folder that still hold events or dead letters, with
    how many of each.

    The default file is named after the destinations: correcting a webhook URL or a key moves the app to a
    new file, and what waited in the old one (an outage's backlog, dead letters) would wait for ever."""
    if not path.name.startswith(_DEFAULT_SPOOL_PREFIX):
        return []
    found = []
    for other in sorted(path.parent.glob(_DEFAULT_SPOOL_PREFIX + "*.sqlite3")):
        if other != path:
            backlog, dead = _peek_count(other, "events") or 0, _peek_count(other, "dead") or 0
            if backlog or dead:
                found.append((other, backlog, dead))
    return found


_DEFAULT_SPOOL_PREFIX = "spool-"


def default_spool_path(settings: Settings) -> Path:
    """A file under ``platformdirs.user_cache_dir("trackgate")`` (else the XDG cache dir), one per set of
    destinations: rows name their sink, not its URL, so two apps of one user with different webhook URLs
    must not share a spool, or one would deliver the other's events to its own URL."""
    try:
        import platformdirs  # optional: only its cache-dir rule is used
    except ImportError:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trackgate"
    else:
        base = Path(platformdirs.user_cache_dir("trackgate"))
    destinations = (
        settings.sinks, settings.webhook_url, settings.kissmetrics_key, settings.kissmetrics_url,
        settings.matomo_url, settings.matomo_site_id, settings.store_url,
    )
    digest = hashlib.sha256(repr(destinations).encode()).hexdigest()[:12]
    return base / f"{_DEFAULT_SPOOL_PREFIX}{digest}.sqlite3"


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    seq: int
    attempts: int
    event: Event


@dataclasses.dataclass(frozen=True, slots=True)
class DeadRow:
    n: int
    event_id: str
    sink: str
    reason: str
    status: int | None
    response: str
    attempts: int
    failed_at: float
    body: str


class Spool:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stuck_logged = False
        # Who leases rows through this object (the dispatcher's owner tag), and, after a move to a new file,
        # the new numbers of the rows they held: a send in flight then still confirms, reschedules or buries
        # its row instead of the row going out again.
        self._owners: set[str] = set()
        self._renumbered: dict[int, int] = {}
        # Opened under the lock too: a fork() while another thread is in here (the dispatcher opens its spool
        # in its own thread) would leave the child SQLite's record of a lock no process holds, and the
        # child's own connection would wait on it for ever.
        with self._lock:
            with _registry_lock:  # a fork holds it: a spool is in its list, or added after the fork
                _open_spools.add(self)
            self._db, self._file = self._connect()
            self._sidecars = self._sidecar_ids()
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """A connection to the file at the path (made if missing), and which file that is.

        SQLite does not say which file it opened: a file replaced while it was being opened (the one at the
        path before is not the one after) is opened again, since a connection to a file deleted under it
        keeps its events only as long as the process. A file this call made is taken as it is: opening it
        again could take a -wal left beside it by a deleted file for its own."""
        for _ in range(_CONNECT_TRIES - 1):
            before = _file_id(self.path)
            db, found = self._connect_once()
            if before is None or found == before:
                return db, found
            db.close()
        return self._connect_once()

    def _connect_once(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE takes the write lock up front,
        # so two processes never both read "free" rows and then both claim them).
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            enable_wal(db)
            # NORMAL in WAL mode: a commit survives the process being killed; only a power cut may lose the tail.
            db.execute("PRAGMA synchronous=NORMAL")
            # The WAL shrinks back to this after a checkpoint: left alone it keeps the size of the largest
            # burst (an outage's backlog written, then delivered) on disk for good.
            db.execute(f"PRAGMA journal_size_limit={_WAL_BYTES_KEPT}")
            # One transaction, so processes opening a new file at once do not trip over each other. A new
            # file numbers its rows from its creation time (see _FIRST_SEQ_PER_MS): a send still in flight
            # from a file deleted meanwhile can then never confirm a row of the new one.
            first_seq = int(time.time() * 1000) * _FIRST_SEQ_PER_MS
            seed = f"INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', {first_seq});"
            db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}{seed}COMMIT;")
            found = _file_id(self.path)
            if found is None:
                raise FileNotFoundError(self.path)
        except BaseException:
            db.close()
            raise
        return db, found

    def _sidecar_ids(self) -> set[tuple[int, int]]:
        """Which -wal/-shm files are at the path now."""
        return {found for suffix in ("-wal", "-shm") if (found := _file_id(Path(f"{self.path}{suffix}")))}

    def follow_the_path(self) -> None:
        """Move the rows to the file at the path if the open one was deleted (see _follow_the_path)."""
        with self._lock:
            self._follow_the_path()

    def _follow_the_path(self) -> None:
        """(Under the lock.) When the file at the path is no longer the one open (deleted, by a cache
        cleaner or by hand, or deleted and made again by another process), move every row into the file
        at the path: the deleted one lives only as long as this connection, and events in it would be
        lost when the process ends."""
        current = _file_id(self.path)
        if current == self._file:
            return
        sidecars = self._sidecar_ids()
        if (current is None and sidecars) or sidecars & self._sidecars:
            # Only the database file went: a new one beside the old one's WAL would read that WAL as its
            # own. The rows stay in the open file, which is no worse than not noticing.
            if not self._stuck_logged:
                logger.error(
                    "trackgate: the spool file %s was deleted but its -wal/-shm files were not; events keep "
                    "going into the deleted file and are lost when this process ends", self.path,
                )
                self._stuck_logged = True
            return
        old, old_file = self._db, self._file
        try:
            self._db, self._file = self._connect()
        except (OSError, sqlite3.Error) as exc:
            if not self._stuck_logged:
                logger.error("trackgate: the spool file %s was deleted and cannot be made again: %s", self.path, exc)
                self._stuck_logged = True
            return
        self._stuck_logged = False
        try:
            moved = self._move_rows_from(old)
        except sqlite3.Error as exc:  # the new file cannot take them: stay on the old one
            self._db.close()
            self._db, self._file = old, old_file  # (the next use tries again)
            logger.error("trackgate: could not move the spool's rows to the new file %s: %s", self.path, exc)
            return
        old.close()
        self._sidecars = self._sidecar_ids()
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        logger.warning(
            "trackgate: the spool file %s was deleted or replaced while in use; moved its %d event(s) to the "
            "file now at that path", self.path, moved,
        )

    def _move_rows_from(self, old: sqlite3.Connection) -> int:
        """Copy the old file's rows into the current one, then empty the old one (so another process still
        using it does not move them a second time). Returns how many events moved."""
        now = time.time()
        old.execute("BEGIN IMMEDIATE")
        try:
            events = old.execute("SELECT seq, id, body FROM events ORDER BY seq").fetchall()
            deliveries = old.execute("SELECT seq, sink, ready_at, attempts, owner FROM deliveries").fetchall()
            dead = old.execute(
                "SELECT event_id, sink, body, reason, status, response, attempts, failed_at FROM dead ORDER BY n"
            ).fetchall()
            with self._transaction():
                first = self._allocate(len(events))
                renumbered = {seq: first + i for i, (seq, _, _) in enumerate(events)}
                self._db.executemany(
                    "INSERT INTO events (seq, id, body) VALUES (?, ?, ?)",
                    ((renumbered[seq], event_id, body) for seq, event_id, body in events),
                )
                # Our own leases move with their rows, and our sends in flight answer under the new numbers
                # (_current). Another process's are let go: its answers go to the file it has open, so its
                # events go out again (at least once, as after a crash).
                kept = self._owners
                self._db.executemany(
                    "INSERT INTO deliveries (seq, sink, ready_at, attempts, owner) VALUES (?, ?, ?, ?, ?)",
                    (
                        (renumbered[seq], sink, ready_at, attempts, owner)
                        if owner is None or owner in kept
                        else (renumbered[seq], sink, min(ready_at, now), attempts, None)
                        for seq, sink, ready_at, attempts, owner in deliveries
                        if seq in renumbered
                    ),
                )
                leased = {seq for seq, _, _, _, owner in deliveries if owner is not None and owner in kept}
                self._db.executemany(
                    "INSERT INTO dead (event_id, sink, body, reason, status, response, attempts, failed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    dead,
                )
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            raise
        # Numbers from an earlier move follow this one; a row no longer leased needs no remembering.
        self._renumbered = {first: renumbered[then] for first, then in self._renumbered.items() if then in renumbered}
        self._renumbered.update((seq, renumbered[seq]) for seq in leased)
        # The rows are in the new file now: failing to empty the old one must not send us back to it (the
        # next use would copy them all a second time). Another process still on it may move them again.
        try:
            old.execute("DELETE FROM deliveries")
            old.execute("DELETE FROM events")
            old.execute("DELETE FROM dead")
            old.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                old.execute("ROLLBACK")
            logger.error("trackgate: could not empty the deleted spool file after moving its rows: %s", exc)
        return len(events)

    def adopt(self, other: Path) -> tuple[int, int]:
        """Move every row of the spool file ``other`` (events, pending deliveries, dead letters) into this
        one, and empty it; returns how many events and dead letters moved. Its leases are let go: the
        process that held them, if one still runs, must not be using that file any more."""
        if _file_id(other) == self._file:
            raise ValueError(f"{other} is this spool")
        if not other.exists():
            raise FileNotFoundError(other)
        source = sqlite3.connect(other, timeout=30.0, isolation_level=None)
        try:
            dead = int(source.execute("SELECT COUNT(*) FROM dead").fetchone()[0])
            with self._lock:
                return self._move_rows_from(source), dead
        finally:
            source.close()

    def pending_by_sink(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT sink, COUNT(*) FROM deliveries GROUP BY sink").fetchall())

    # --- writing ---------------------------------------------------------------------------------------
    def add(self, events: Sequence[Event], sinks: Sequence[str]) -> int:
        """Store events with one pending delivery per sink, in one transaction; returns how many."""
        if not events:
            return 0
        rows = [(event.id, event.to_json()) for event in events]
        now = time.time()
        with self._lock:
            self._follow_the_path()
            with self._transaction():
                first = self._allocate(len(rows))
                self._db.executemany(
                    "INSERT INTO events (seq, id, body) VALUES (?, ?, ?)",
                    ((first + i, event_id, body) for i, (event_id, body) in enumerate(rows)),
                )
                for sink in sinks:
                    self._db.executemany(
                        "INSERT INTO deliveries (seq, sink, ready_at) VALUES (?, ?, ?)",
                        ((first + i, sink, now) for i in range(len(rows))),
                    )
        return len(rows)

    def claim(self, sink: str, limit: int, *, lease: float, owner: str) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries of ``sink``, oldest first."""
        now = time.time()
        with self._lock:
            self._owners.add(owner)
            self._follow_the_path()
            with self._transaction():
                # The bodies come back with the lease: one statement, not a second look-up by number.
                leased = self._db.execute(
                    "UPDATE deliveries SET ready_at = ?, owner = ? WHERE sink = ? AND seq IN ("
                    "SELECT seq FROM deliveries WHERE sink = ? AND ready_at <= ? ORDER BY ready_at, seq LIMIT ?"
                    ") RETURNING seq, attempts, (SELECT body FROM events WHERE events.seq = deliveries.seq)",
                    (now + lease, owner, sink, sink, now, limit),
                ).fetchall()
        found = sorted(row for row in leased if row[2] is not None)  # (RETURNING keeps no order)
        claimed = []
        for seq, attempts, body in found:
            try:
                event = Event.from_json(body)
            except (ValueError, TypeError) as exc:
                # A row this version cannot read: keep it, dead-lettered, rather than loop on it.
                self.bury(sink, [(seq, f"unreadable spool row: {exc}", None, "")], owner=owner)
                continue
            claimed.append(Claimed(seq, attempts, event))
        return claimed

    def done(self, sink: str, seqs: Iterable[int], *, owner: str) -> None:
        """Delete confirmed deliveries still leased by ``owner`` (a row whose lease ran out and that another
        process claimed is that process's to confirm)."""
        asked = list(seqs)
        with self._lock:
            with self._transaction():
                current = self._current(asked)
                # One statement per few hundred rows: a third cheaper than one per row, for every event delivered.
                for start in range(0, len(current), _ROWS_PER_STATEMENT):
                    chunk = current[start : start + _ROWS_PER_STATEMENT]
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(
                        f"DELETE FROM deliveries WHERE sink = ? AND owner = ? AND seq IN ({marks})",
                        (sink, owner, *chunk),
                    )
            self._forget(asked)

    def reschedule(self, sink: str, seqs: Iterable[int], *, at: float, owner: str) -> int:
        """Release our lease and make the rows due again at ``at``; returns how many were still ours."""
        asked = list(seqs)
        with self._lock:
            with self._transaction():
                cursor = self._db.executemany(
                    "UPDATE deliveries SET ready_at = ?, attempts = attempts + 1, owner = NULL "
                    "WHERE seq = ? AND sink = ? AND owner = ?",
                    ((at, seq, sink, owner) for seq in self._current(asked)),
                )
            self._forget(asked)
            return cursor.rowcount

    def bury(self, sink: str, failures: Sequence[tuple[int, str, int | None, str]], *, owner: str) -> int:
        """Move deliveries refused for good, as (seq, reason, status, response), to the dead table."""
        now = time.time()
        asked = [failure[0] for failure in failures]
        with self._lock:
            with self._transaction():
                seqs = self._current(asked)
                for seq, (_, reason, status, response) in zip(seqs, failures, strict=True):
                    self._db.execute(
                        "INSERT INTO dead (event_id, sink, body, reason, status, response, attempts, failed_at) "
                        "SELECT e.id, d.sink, e.body, ?, ?, ?, d.attempts + 1, ? FROM deliveries d "
                        "JOIN events e ON e.seq = d.seq WHERE d.seq = ? AND d.sink = ?",
                        (reason, status, response, now, seq, sink),
                    )
                self._db.executemany(
                    "DELETE FROM deliveries WHERE seq = ? AND sink = ?", ((seq, sink) for seq in seqs)
                )
            self._forget(asked)
        return len(failures)

    def _current(self, seqs: Iterable[int]) -> list[int]:
        """(Under the lock.) The numbers rows have now: a send claimed before a move answers for the rows
        under the numbers they had (each answered once: _forget once the answer is committed)."""
        if not self._renumbered:
            return list(seqs)
        return [self._renumbered.get(seq, seq) for seq in seqs]

    def _forget(self, seqs: Iterable[int]) -> None:
        """(Under the lock, after the commit.) Answered: their old numbers are needed no more."""
        if self._renumbered:
            for seq in seqs:
                self._renumbered.pop(seq, None)

    def reclaim(self, is_gone: Any) -> int:
        """Free rows leased by owners ``is_gone(owner)`` says are dead (a killed process on this host)."""
        with self._lock:
            owners = [row[0] for row in self._db.execute(
                "SELECT DISTINCT owner FROM deliveries WHERE owner IS NOT NULL AND ready_at > ?", (time.time(),)
            )]
            gone = [owner for owner in owners if is_gone(owner)]
            if not gone:
                return 0
            with self._transaction():
                cursor = self._db.executemany(
                    "UPDATE deliveries SET ready_at = ?, owner = NULL WHERE owner = ?",
                    ((time.time(), owner) for owner in gone),
                )
                return cursor.rowcount

    def enforce_cap(self, max_bytes: int) -> int:
        """Drop the oldest until the data fits in ``max_bytes``: dead letters first (deliveries that already
        failed for good, oldest first), then pending events. Returns how many pending events were dropped."""
        dropped = dead_dropped = 0
        with self._lock:
            while self._used_bytes() > max_bytes:
                dead = int(self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])
                if dead:
                    cut = max(1, dead // 20)
                    with self._transaction():
                        self._db.execute("DELETE FROM dead WHERE n IN (SELECT n FROM dead ORDER BY n LIMIT ?)", (cut,))
                    dead_dropped += cut
                    continue
                with self._transaction():
                    total, newest = self._db.execute("SELECT COUNT(*), MAX(seq) FROM events").fetchone()
                    if not total:
                        break
                    # Drop a twentieth of the backlog at a time: few passes, and little more than needed.
                    cut = self._db.execute(
                        "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (max(1, total // 20) - 1,)
                    ).fetchone()
                    last = int(cut[0]) if cut else int(newest)
                    count = int(self._db.execute(
                        "SELECT COUNT(*) FROM events WHERE seq <= ?", (last,)).fetchone()[0])
                    self._db.execute("DELETE FROM deliveries WHERE seq <= ?", (last,))
                    self._db.execute("DELETE FROM events WHERE seq <= ?", (last,))
                dropped += count
        if dead_dropped:
            logger.warning(
                "trackgate: the spool is full (TRACKGATE_SPOOL_MAX_MB); dropped %d dead letter(s)", dead_dropped
            )
        return dropped

    # --- reading ---------------------------------------------------------------------------------------
    def backlog(self) -> int:
        """Events still waiting for at least one sink."""
        with self._lock:
            self._follow_the_path()  # (drain() ends here: the last chance to keep a deleted file's rows)
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def pending(self, sink: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM deliveries WHERE sink = ?", (sink,)).fetchone()[0])

    def next_ready(self, sink: str) -> float | None:
        """When the earliest delivery of ``sink`` becomes due (it may be now or past), None if none."""
        with self._lock:
            row = self._db.execute("SELECT MIN(ready_at) FROM deliveries WHERE sink = ?", (sink,)).fetchone()
        return None if row[0] is None else float(row[0])

    def dead(self, limit: int = 100, sink: str | None = None) -> list[DeadRow]:
        where, args = ("WHERE sink = ?", (sink,)) if sink else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT n, event_id, sink, reason, status, response, attempts, failed_at, body FROM dead "
                f"{where} ORDER BY n DESC LIMIT ?", (*args, limit),
            ).fetchall()
        return [DeadRow(*row) for row in rows]

    def dead_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def retry_dead(self, numbers: Sequence[int] | None = None, sink: str | None = None) -> int:
        """Put dead deliveries back in the queue (all, or the given dead-row numbers); returns how many."""
        conditions: list[str] = []
        args: list[object] = []
        if numbers is not None:
            conditions.append(f"n IN ({','.join('?' * len(numbers))})")
            args.extend(numbers)
        if sink is not None:
            conditions.append("sink = ?")
            args.append(sink)
        where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
        now = time.time()
        with self._lock, self._transaction():
            rows = self._db.execute(f"SELECT n, event_id, sink, body FROM dead {where}", args).fetchall()
            first = self._allocate(len(rows))
            for i, (n, event_id, row_sink, body) in enumerate(rows):
                self._db.execute("INSERT INTO events (seq, id, body) VALUES (?, ?, ?)", (first + i, event_id, body))
                self._db.execute(
                    "INSERT INTO deliveries (seq, sink, ready_at) VALUES (?, ?, ?)", (first + i, row_sink, now)
                )
                self._db.execute("DELETE FROM dead WHERE n = ?", (n,))
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals -------------------------------------------------------------------------------------
    def _allocate(self, count: int) -> int:
        """The first of ``count`` new sequence numbers (inside a write transaction)."""
        last = self._db.execute(
            "SELECT MAX(COALESCE((SELECT value FROM counters WHERE name = 'seq'), 0), "
            "COALESCE((SELECT MAX(seq) FROM events), 0))"
        ).fetchone()[0]
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('seq', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (int(last) + count,),
        )
        return int(last) + 1

    def _used_bytes(self) -> int:
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


# SQLite is not fork-safe while a thread is inside it (its global mutexes would stay locked in the child).
# Every use of a Spool's connection holds its lock, so holding all of them across fork() means no thread of
# ours is inside SQLite at that moment.
_open_spools: weakref.WeakSet[Spool] = weakref.WeakSet()
_registry_lock = threading.Lock()
_held_for_fork: list[Spool] = []


def _hold_all_for_fork() -> None:
    _registry_lock.acquire()
    _held_for_fork[:] = sorted(_open_spools, key=id)
    for spool in _held_for_fork:
        spool._lock.acquire()


def _release_all_after_fork() -> None:
    # Exactly the locks taken above: one a thread took meanwhile (a spool it was opening) is that thread's.
    for spool in _held_for_fork:
        spool._lock.release()
    _held_for_fork.clear()
    _registry_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_hold_all_for_fork, after_in_parent=_release_all_after_fork, after_in_child=_release_all_after_fork
    )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (sqlite3's own context manager does not BEGIN)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")

