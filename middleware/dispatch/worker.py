"""The dispatcher: one daemon thread a process, with its own asyncio loop and one aiohttp session.

    submit(event)            O(1): a deque append, and a wake-up only when the worker sleeps
      -> intake task         group-commits the queue to the spool (within 50 ms or 500 events)
      -> one pump per sink   leases due rows in batches, sends them (a concurrency limit per sink),
                             deletes them when the sink confirms, reschedules them with backoff when it
                             says "later", dead-letters them when it says "never"

Delivery is at-least-once: every event has an id so receivers can drop duplicates. An accepted event is
lost only when the spool cap (``TRACKGATE_SPOOL_MAX_MB``) drops it (counted and logged) or when the process
is killed within the group-commit window (``TRACKGATE_SPOOL_SYNC=true`` closes that window).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._boundary import swallow
from ..errors import ConfigError
from ..events import Event
from ..settings import Settings
from .backoff import retry_delay
from .registry import create_sinks
from .sink import Rejected, RetryLater, Sink
from .spool import Claimed, Spool, default_spool_path, other_spools, peek_backlog

if TYPE_CHECKING:  # imported in the worker thread: `import trackgate` stays light
    import aiohttp

logger = logging.getLogger("trackgate.dispatch")

__all__ = ["COUNTER_NAMES", "Dispatcher"]

GROUP_WINDOW = 0.05  # seconds an event may wait in memory before its group is committed
GROUP_MAX = 500  # ... or fewer, when this many are waiting
HIGH_WATER = 10_000  # queued events past which submit() commits them itself: memory stays bounded
# What an event's own content raises when it is bound into a row (text it cannot encode, a number past 64
# bits...), as opposed to the spool's trouble (locked, full, corrupt), which every event would meet.
_ROW_FAULTS = (UnicodeError, ValueError, TypeError, OverflowError, sqlite3.InterfaceError, sqlite3.IntegrityError)
SPILL_PAUSE = 5.0  # seconds without such commits after one failed: a locked spool must not stall each request
SEND_TIMEOUT = 30.0  # one send() call, whatever the sink does inside
LEASE = SEND_TIMEOUT + 30.0  # claimed rows stay invisible to other processes this long
IDLE_POLL = 1.0  # an idle pump looks at the spool this often (rows of dead processes, due retries)
DRAIN_POLL = 0.02

COUNTER_NAMES = ("submitted", "spooled", "delivered", "retried", "failed", "dropped")

State = Literal["new", "running", "stopped", "final"]

# Rows are leased under "host:pid:token"; the token tells a process from an earlier one with the same pid.
_HOST = socket.gethostname()
_process_token = secrets.token_hex(4)


def _owner_tag() -> str:
    return f"{_HOST}:{os.getpid()}:{_process_token}"


def _owner_gone(owner: str) -> bool:
    """True when ``owner`` was a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return token != _process_token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclasses.dataclass
class _SinkState:
    sink: Sink
    failures: int = 0  # consecutive failed sends: the backoff exponent
    paused_until: float = 0.0
    failed_at: float = 0.0  # monotonic time of the last counted failure
    in_flight: int = 0
    settled: bool = False  # nothing in flight and nothing due: drain may stop waiting for this sink
    next_due: float | None = None  # when its earliest pending delivery is due (wall time), as last seen
    confirmed: list[int] = dataclasses.field(default_factory=list)  # delivered rows not yet deleted


class Dispatcher:
    """Delivers events to the sinks of one ``Settings``; ``get_dispatcher(settings)`` shares one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sink_names: tuple[str, ...] = tuple(dict.fromkeys(settings.sinks))
        self.spool_path = Path(settings.spool_path) if settings.spool_path else default_spool_path(settings)
        self._max_bytes = settings.spool_max_mb * 1024 * 1024
        self._exit_hooked = False
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._owner = _owner_tag()
        self._queue: deque[Event] = deque()
        self._idle = False
        self._state: State = "new"
        self._start_lock = threading.RLock()
        self._spill_lock = threading.Lock()
        self._spool_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._spool: Spool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._poke: Callable[[], None] = _nothing
        self._spill_after = 0.0  # (monotonic) no spill from submit() before: the last one could not write
        # A multiprocessing worker is ended by SIGTERM with no exit handler run (Pool.terminate(), which
        # `with Pool(...)` calls): what it records is committed in submit(), as TRACKGATE_SPOOL_SYNC does.
        self._commit_in_submit = self.settings.spool_sync or _in_multiprocessing_worker()
        self._sink_states: dict[str, _SinkState] = {}

    # --- the request path --------------------------------------------------------------------------------
    def submit(self, event: Event) -> None:
        """Accept an event for delivery. O(1), never blocks, safe from any thread or event loop.

        The event is encoded here: what is delivered is the event as it was submitted, and one that cannot be
        stored raises ``TypeError`` in the caller instead of holding up the events queued after it."""
        event.snapshot()
        if self._pid != os.getpid():
            self._after_fork()
        if self._state != "running" or self._commit_in_submit:
            self._submit_slow(event)
            return
        queue = self._queue
        queue.append(event)
        if self._idle:
            self._idle = False
            self._poke()
        elif len(queue) >= GROUP_MAX:
            if len(queue) == GROUP_MAX:
                self._poke()
            elif len(queue) >= HIGH_WATER and time.monotonic() >= self._spill_after:
                self._spill()

    def _submit_slow(self, event: Event) -> None:
        if self._state in ("new", "stopped"):
            try:
                self.start()
            except ConfigError as exc:  # the host app goes on; the event is spooled below for a fixed config
                logger.error("trackgate: the event dispatcher did not start: %s", exc)
            except Exception as exc:
                swallow("starting the event dispatcher", exc)
        if self._state == "running" and (not self._commit_in_submit or time.monotonic() < self._spill_after):
            # (in sync mode too while the spool refuses writes: each request would wait out its lock timeout)
            self._queue.append(event)
            self._poke()
            return
        # Spool-sync mode, or a dispatcher that cannot run (interpreter exit): commit it here.
        self._write_now([event])
        self._wake_pumps_threadsafe()

    def _spill(self) -> None:
        """The worker has fallen far behind: commit the queue from this thread rather than grow memory."""
        if not self._spill_lock.acquire(blocking=False):
            return  # another thread is already spilling
        try:
            batch = _take(self._queue, len(self._queue))
            self._write_now(batch)
        finally:
            self._spill_lock.release()
        self._wake_pumps_threadsafe()

    def _write_now(self, events: Sequence[Event]) -> None:
        left = self._store(events)
        if not left:
            return
        if self._state == "running":  # the worker writes them when the spool takes them again
            logger.error("trackgate: %d event(s) wait in memory for the spool", len(left))
            self._queue.extendleft(reversed(left))
            self._spill_after = time.monotonic() + SPILL_PAUSE
            self._poke()
            return
        self._count(dropped=len(left), submitted=len(left))

    def _store(self, events: Sequence[Event]) -> list[Event]:
        """Commit events to the spool, a group at once, or one by one when an event's content keeps it out of
        a row (that one is dropped alone). Returns those the spool itself could not take now, in order."""
        try:
            spool = self._open_spool()
        except Exception as exc:
            logger.error("trackgate: the spool %s cannot be opened: %s", self.spool_path, exc)
            return list(events)
        try:
            spool.add(events, self.sink_names)
        except _ROW_FAULTS:
            left = self._write_each(spool, events)
        except Exception as exc:  # the spool's own trouble (locked, full, unreadable): every event would meet it
            logger.error("trackgate: could not write %d event(s) to the spool: %s", len(events), exc)
            return list(events)
        else:
            self._enforce_cap(spool)  # before counting, so "spooled" never runs ahead of "dropped"
            self._count(submitted=len(events), spooled=len(events))
            return []
        self._enforce_cap(spool)
        return left

    # --- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> Dispatcher:
        """Start the worker thread (idempotent); raises ``ConfigError`` for an unknown or misconfigured sink."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._start_lock:
            if self._state == "running":
                return self
            sinks = create_sinks(self.settings)
            if not self._hook_exit():
                # The interpreter is exiting (the main thread has returned; other threads or exit handlers
                # record something). Python refuses new thread pools now, which the sinks need (aiohttp's name
                # lookups, the store's writes), and a worker would be killed with its queue: submit() writes
                # to the spool itself, and the next start delivers.
                self._state = "final"
                logger.info("trackgate: first used while the interpreter exits; events are spooled for the next start")
                return self
            self._sink_states = {name: _SinkState(sink) for name, sink in zip(self.sink_names, sinks, strict=True)}
            loop = asyncio.new_event_loop()
            loop.set_default_executor(_DaemonThreads())
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name="trackgate-dispatch", daemon=True
            )
            self._loop, self._thread = loop, thread
            # Running before the thread starts: if its loop ends, the thread itself sets "stopped" again.
            # Events submitted before the loop is ready wait in the queue, which the intake reads first.
            self._state = "running"
            thread.start()
            ready.wait()
        return self

    def drain(self, timeout: float) -> int:
        """Deliver what can be delivered within ``timeout`` seconds, then stop the worker.

        Returns how many events are left in the spool (they go out at the next start). A later
        ``submit()`` starts the worker again.
        """
        if self._pid != os.getpid():
            self._after_fork()
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("drain() called from the dispatcher's own thread")
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._start_lock:
            loop, thread = self._loop, self._thread
            if self._state == "running" and loop is not None and thread is not None:
                future = asyncio.run_coroutine_threadsafe(self._drain(deadline), loop)
                with contextlib.suppress(TimeoutError, RuntimeError):
                    future.result(max(0.0, deadline - time.monotonic()) + 5.0)
                thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
                self._poke = _nothing
                self._state = "stopped"
            # Events that slipped into the queue while the worker stopped still get spooled.
            if self._queue:
                self._write_now(_take(self._queue, len(self._queue)))
            return self.backlog()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's thread, loop, session and SQLite connection."""
        with _registry_lock:
            if self._pid == os.getpid():
                return
            # Closing them here could disturb the parent (SQLite's locks, the session's sockets); keep them
            # referenced so the garbage collector never closes them either.
            _abandoned.append((self._spool, self._loop, self._sink_states))
            self._reset_process_state()

    def _hook_exit(self) -> bool:
        """Make sure the exit drain runs (if exit handlers are not running already); False when the
        interpreter is exiting."""
        if self._exit_hooked:
            return True
        # threading's exit hooks run before concurrent.futures refuses new work (aiohttp resolves names in
        # an executor, the store writes from one), so the last batches can still go out; atexit is the
        # fallback. They run last registered first, and concurrent.futures registers its own when it is first
        # imported, which during the drain would be too late: import it now, so that ours runs before it.
        register = getattr(threading, "_register_atexit", None)
        try:
            import concurrent.futures.thread  # noqa: F401

            if register is not None:
                register(self._at_exit)
            else:  # pragma: no cover - CPython has it
                atexit.register(self._at_exit)
        except RuntimeError:  # "can't register atexit after shutdown"
            return False
        self._exit_hooked = True
        return True

    def _at_exit(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if self._state == "running":
            left = self.drain(self.settings.shutdown_timeout)
            if left:
                logger.info("trackgate: %d event(s) stay spooled for the next start", left)
        # From here on submit() writes to the spool itself: no thread may start any more.
        self._state = "final"

    # --- figures -----------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self._count_lock:
            counts = dict(self._counts)
        counts["submitted"] += len(self._queue)
        return counts

    def backlog(self) -> int:
        """Events not yet confirmed by every sink: in the spool (an existing file is opened for it, though
        no event was sent yet), plus any not yet committed."""
        if self._pid != os.getpid():
            self._after_fork()
        spool = self._spool
        if spool is None and self.spool_path.exists():
            spool = self._open_spool()
        return (spool.backlog() if spool is not None else 0) + len(self._queue)

    def peek_backlog(self) -> int | None:
        """``backlog()`` for a health check: read on its own read-only connection, waiting half a second at
        most for a lock; None when the spool cannot be read now."""
        if not self.spool_path.exists():
            return len(self._queue)
        spooled = peek_backlog(self.spool_path)
        return None if spooled is None else spooled + len(self._queue)

    def stats(self) -> dict[str, int]:
        figures = self.counts()
        figures["backlog"] = self.backlog()
        spool = self._spool if self._pid == os.getpid() else None
        figures["dead"] = spool.dead_count() if spool is not None else 0
        return figures

    def retry_dead(self, numbers: Sequence[int] | None = None, sink: str | None = None) -> int:
        """Queue dead-lettered deliveries again (all, or the given dead-row numbers); returns how many."""
        count = self._open_spool().retry_dead(numbers, sink)
        self._wake_pumps_threadsafe()
        return count

    @property
    def spool(self) -> Spool:
        return self._open_spool()

    # --- worker thread -----------------------------------------------------------------------------------
    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(ready))
        except Exception:
            logger.exception("trackgate: the event dispatcher stopped on an error")
        finally:
            # Whatever ended the loop, the next submit() must start a new one rather than poke this one.
            self._poke = _nothing
            if self._state == "running":
                self._state = "stopped"
            ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._pump_wake = {name: asyncio.Event() for name in self._sink_states}
        wake = self._wake

        def poke() -> None:
            # The loop may close between the caller's state check and this call: the event is queued
            # anyway, and drain() or the next start commits it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

        self._poke = poke
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT))
        tasks = [
            asyncio.create_task(self._intake(), name="trackgate-intake"),
            asyncio.create_task(self._watch_spool_file(), name="trackgate-spool-file"),
        ]
        tasks += [
            asyncio.create_task(self._pump(name, state, session), name=f"trackgate-{name}")
            for name, state in self._sink_states.items()
        ]
        ready.set()
        await asyncio.sleep(0)
        self._reclaim()
        self._tell_of_other_spools()
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for name, state in self._sink_states.items():
                try:
                    await state.sink.aclose()
                except Exception:
                    logger.exception("trackgate: closing sink %s failed", name)
            await session.close()

    async def _watch_spool_file(self) -> None:
        """Look at the spool's file now and then: one deleted while nothing else uses the spool (no traffic,
        every sink in backoff) must be noticed before the process ends, or its rows go with it."""
        while True:
            await asyncio.sleep(IDLE_POLL)
            try:
                self._open_spool().follow_the_path()
            except Exception as exc:  # (the intake and the pumps report what is wrong with the spool)
                logger.debug("trackgate: looking at the spool file failed: %s", exc)

    def _reclaim(self) -> None:
        """Rows leased by processes that are gone are due again (the first start after a kill)."""
        try:
            reclaimed = self._open_spool().reclaim(_owner_gone)
        except Exception as exc:  # the intake and the pumps keep trying; events wait in memory meanwhile
            logger.error("trackgate: the spool %s cannot be used now: %s", self.spool_path, exc)
            return
        if reclaimed:
            logger.info("trackgate: %d spooled deliveries of stopped processes are due again", reclaimed)

    def _tell_of_other_spools(self) -> None:
        """Events left in the default spool of another set of destinations (most often this app's own, before
        a webhook URL or a key was corrected) are delivered by nothing: say where they are, and how to
        bring them here."""
        if self.settings.spool_path:
            return
        try:
            others = other_spools(self.spool_path)
        except Exception as exc:  # (a warning's look-up: it must not end the worker)
            logger.debug("trackgate: looking for other spool files failed: %s", exc)
            return
        for path, backlog, dead in others:
            logger.warning(
                "trackgate: the spool %s (of other destinations: another app's, or this one's before a URL or "
                "key changed) holds %d event(s) and %d dead letter(s) nothing here delivers; if they are this "
                "app's: trackgate events adopt %s", path, backlog, dead, path,
            )

    async def _drain(self, deadline: float) -> None:
        self._commit_queued()
        while time.monotonic() < deadline:
            must_go_at = time.time() + (deadline - time.monotonic())
            if not self._queue and all(self._settled(state, must_go_at) for state in self._sink_states.values()):
                break
            await asyncio.sleep(DRAIN_POLL)
            self._commit_queued()
        self._stop.set()

    @staticmethod
    def _settled(state: _SinkState, must_go_at: float) -> bool:
        """Nothing more this sink can deliver before ``must_go_at`` (wall time): what it holds stays spooled."""
        if state.in_flight or state.confirmed:
            return False
        if state.paused_until > time.time():  # in backoff: settled only when the retry comes too late
            return state.paused_until >= must_go_at
        return state.settled and (state.next_due is None or state.next_due >= must_go_at)

    async def _intake(self) -> None:
        queue, wake = self._queue, self._wake
        while True:
            wake.clear()
            self._idle = True
            if not queue:  # checked after publishing idleness: submit() looks at _idle after appending
                await wake.wait()
            self._idle = False
            if len(queue) < GROUP_MAX:
                wake.clear()
                await _wait(wake, GROUP_WINDOW)
            if not self._commit_queued():
                await asyncio.sleep(1.0)  # the spool is not writable now; the events wait in memory

    def _commit_queued(self) -> bool:
        """Commit what waits in memory; False when the spool could not take it all (the rest waits again)."""
        batch = _take(self._queue, len(self._queue))
        if not batch:
            return True
        left = self._store(batch)
        self._queue.extendleft(reversed(left))
        if len(left) < len(batch):
            self._wake_pumps()
        return not left

    def _write_each(self, spool: Spool, events: Sequence[Event]) -> list[Event]:
        """Write events one by one: one its content keeps out of a row is dropped (logged, counted). Returns
        those not written because the spool itself failed, in order (the first such failure ends it: each
        next one would wait out the same lock)."""
        for index, event in enumerate(events):
            try:
                spool.add([event], self.sink_names)
            except _ROW_FAULTS as exc:
                logger.error("trackgate: dropped event %s %r: no row can hold it: %s", event.kind, event.name, exc)
                self._count(submitted=1, dropped=1)
            except Exception as exc:
                logger.error("trackgate: could not write %d event(s) to the spool: %s", len(events) - index, exc)
                return list(events[index:])
            else:
                self._count(submitted=1, spooled=1)
        return []

    def _wake_pumps(self) -> None:
        for name, wake in self._pump_wake.items():
            self._sink_states[name].settled = False  # new rows: drain must wait for the pump to look
            wake.set()

    def _wake_pumps_threadsafe(self) -> None:
        loop = self._loop
        if self._state == "running" and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the next start finds them
                loop.call_soon_threadsafe(self._wake_pumps)

    def _enforce_cap(self, spool: Spool) -> None:
        try:
            dropped = spool.enforce_cap(self._max_bytes)
        except Exception as exc:  # the events are committed; the cap is looked at again after the next commit
            logger.error("trackgate: could not check the spool's size against TRACKGATE_SPOOL_MAX_MB: %s", exc)
            return
        if dropped:
            self._count(dropped=dropped)
            logger.warning(
                "trackgate: the spool reached TRACKGATE_SPOOL_MAX_MB=%d; dropped the %d oldest event(s)",
                self.settings.spool_max_mb, dropped,
            )

    async def _pump(self, name: str, state: _SinkState, session: aiohttp.ClientSession) -> None:
        wake = self._pump_wake[name]
        concurrency = max(1, state.sink.concurrency)
        batch_size = max(1, state.sink.batch_size)
        sending: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            sending.discard(task)
            state.in_flight -= 1
            wake.set()  # look again now: more may be due, confirmations to commit, or drain waiting

        spool_failing = False
        try:
            while True:
                wake.clear()
                try:
                    spool = self._open_spool()
                    self._commit_confirmed(name, state)
                    pause = state.paused_until - time.time()
                    if pause > 0:
                        await _wait(wake, pause)  # woken early only to commit confirmations
                        continue
                    free = concurrency - state.in_flight
                    if state.failures:
                        # After a failure one batch probes the receiver; the rest waits for its answer.
                        free = 0 if state.in_flight else 1
                    if free <= 0:
                        await wake.wait()
                        continue
                    # One transaction leases rows for every free slot: a one-event-per-request sink would
                    # otherwise pay a claim transaction per event.
                    claimed = spool.claim(name, free * batch_size, lease=LEASE, owner=self._owner)
                    if not claimed:
                        state.settled = state.in_flight == 0
                        due = state.next_due = spool.next_ready(name)
                        delay = IDLE_POLL if due is None else min(max(due - time.time(), 0.005), IDLE_POLL)
                        await _wait(wake, delay)
                        continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The spool is locked, full or gone for now: this sink waits and looks again, it never
                    # stops for the rest of the process.
                    if not spool_failing:
                        logger.error("trackgate: sink %s cannot use the spool now, will retry: %s", name, exc)
                    spool_failing = True
                    await _wait(wake, IDLE_POLL)
                    continue
                if spool_failing:
                    logger.info("trackgate: sink %s uses the spool again", name)
                    spool_failing = False
                state.settled = False
                for first in range(0, len(claimed), batch_size):
                    state.in_flight += 1
                    task = asyncio.create_task(self._send(name, state, session, claimed[first:first + batch_size]))
                    sending.add(task)
                    task.add_done_callback(finished)
        finally:
            for task in list(sending):
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
            self._commit_confirmed(name, state)

    def _commit_confirmed(self, name: str, state: _SinkState) -> None:
        """Delete the rows sinks confirmed since the last pass, in one transaction."""
        if state.confirmed:
            # Cleared only once deleted: a spool error keeps them for the next pass, not for a second send.
            self._open_spool().done(name, state.confirmed, owner=self._owner)
            self._count(delivered=len(state.confirmed))
            state.confirmed = []

    async def _send(
        self, name: str, state: _SinkState, session: aiohttp.ClientSession, claimed: list[Claimed]
    ) -> None:
        import aiohttp  # already loaded by _main; a dict lookup

        spool = self._open_spool()
        seqs = [row.seq for row in claimed]
        started = time.monotonic()
        try:
            async with asyncio.timeout(SEND_TIMEOUT + 5.0):
                outcome = await state.sink.send(session, [row.event for row in claimed])
        except RetryLater as exc:
            self._later(name, state, seqs, started=started, reason=str(exc), retry_after=exc.retry_after)
        except Rejected as exc:
            failures = [(seq, exc.reason, exc.status, exc.body) for seq in seqs]
            spool.bury(name, failures, owner=self._owner)
            self._count(failed=len(seqs))
            state.failures = 0
            logger.warning("trackgate: sink %s refused %d event(s) for good: %s", name, len(seqs), exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._later(name, state, seqs, started=started, reason=f"{type(exc).__name__}: {exc}", retry_after=None)
        except asyncio.CancelledError:
            # Stopping mid-send: give the rows back now rather than when the lease runs out.
            spool.reschedule(name, seqs, at=time.time(), owner=self._owner)
            raise
        except Exception:
            logger.exception("trackgate: sink %s failed unexpectedly; its events will be retried", name)
            self._later(name, state, seqs, started=started, reason="unexpected error", retry_after=None)
        else:
            by_id = {row.event.id: row.seq for row in claimed}
            refused = [(by_id[event_id], reason, None, "") for event_id, reason in outcome.rejected.items()
                       if event_id in by_id]
            refused_seqs = {failure[0] for failure in refused}
            delivered = [seq for seq in seqs if seq not in refused_seqs]
            state.confirmed.extend(delivered)  # committed by the pump's next pass
            if refused:
                spool.bury(name, refused, owner=self._owner)
                logger.warning("trackgate: sink %s refused %d event(s) for good", name, len(refused))
            if state.failures:
                logger.info("trackgate: sink %s delivers again", name)
            state.failures = 0
            if refused:
                self._count(failed=len(refused))

    def _later(
        self, name: str, state: _SinkState, seqs: list[int], *, started: float, reason: str,
        retry_after: float | None,
    ) -> None:
        # Sends that were already in flight when another one failed report the same outage: only a send
        # begun after the last failure (a probe) raises the backoff exponent.
        counted = started >= state.failed_at or retry_after is not None
        if counted:
            state.failures += 1
            state.failed_at = time.monotonic()
        now = time.time()
        if counted or state.paused_until <= now:
            at = max(now + retry_delay(state.failures, retry_after), state.paused_until)
        else:
            at = state.paused_until  # the pause this outage already drew: no second draw (full jitter stays full)
        # The whole sink waits, not just this batch: a receiver that is down or throttling gets one probe
        # per backoff step instead of one per batch of the backlog.
        state.paused_until = at
        self._open_spool().reschedule(name, seqs, at=at, owner=self._owner)
        self._count(retried=len(seqs))
        # Warn once an outage, then quieter; sends that were in flight with the failing one say nothing new.
        level = logging.DEBUG if not counted else logging.WARNING if state.failures == 1 else logging.INFO
        logger.log(level, "trackgate: sink %s: %s; retrying %d event(s) in %.1f s (failure %d)",
            name, reason, len(seqs), at - time.time(), state.failures)

    # --- helpers -----------------------------------------------------------------------------------------
    def _open_spool(self) -> Spool:
        spool = self._spool
        if spool is None:
            # Not the start lock: opening may wait on another process's write lock, and submit() must not.
            with self._spool_lock:
                spool = self._spool
                if spool is None:
                    spool = self._spool = Spool(self.spool_path)
        return spool

    def _count(self, **amounts: int) -> None:
        with self._count_lock:
            for name, amount in amounts.items():
                self._counts[name] += amount


class _DaemonThreads(concurrent.futures.ThreadPoolExecutor):
    """The dispatcher loop's executor (asyncio.to_thread: the store's writes, aiohttp's name look-ups): a
    daemon thread per call. The default pool's threads are joined at interpreter exit, so one store write
    waiting on a lock held the process's exit past TRACKGATE_SHUTDOWN_TIMEOUT, for up to half a minute."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller, as the pool does
                future.set_exception(exc)

        threading.Thread(target=run, name="trackgate-blocking", daemon=True).start()
        return future


def _in_multiprocessing_worker() -> bool:
    multiprocessing = sys.modules.get("multiprocessing")  # (not imported: no multiprocessing child either)
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def _take(queue: deque[Event], count: int) -> list[Event]:
    taken = []
    popleft = queue.popleft
    for _ in range(count):
        try:
            taken.append(popleft())
        except IndexError:  # another thread took the rest
            break
    return taken


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until ``event`` is set or ``timeout`` passes. (Python 3.11's wait_for can swallow a cancellation.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _nothing() -> None:
    return None


# Kept alive on purpose after a fork (see Dispatcher._after_fork).
_abandoned: list[object] = []
_registry_lock = threading.RLock()


def _reset_in_child() -> None:
    global _process_token, _registry_lock  # noqa: PLW0603 — per-process identity, renewed in a forked child
    _process_token = secrets.token_hex(4)
    # A lock some parent thread held at the fork would stay held for ever in the child.
    _registry_lock = threading.RLock()
