"""The spool file, the sink contract's status rules, the backoff policy and the sink registry."""

from __future__ import annotations

import email.utils
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackgate import ConfigError, Event, Settings
from trackgate.dispatch import Outcome, Rejected, RetryLater, raise_for_status, register
from trackgate.dispatch.backoff import CAP, full_jitter, retry_delay
from trackgate.dispatch.registry import create_sinks, unregister
from trackgate.dispatch.sink import parse_retry_after
from trackgate.dispatch.spool import Spool, default_spool_path


def events(count: int, prefix: str = "e", **fields: object) -> list[Event]:
    return [Event("custom", name=f"{prefix}{i}", **fields) for i in range(count)]  # type: ignore[arg-type]


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.sqlite3")


# --- spool -----------------------------------------------------------------------------------------------


def test_an_event_leaves_the_spool_only_when_every_sink_confirmed(spool: Spool) -> None:
    spool.add(events(3), ["a", "b"])
    claimed = spool.claim("a", 10, lease=60, owner="me")
    spool.done("a", [row.seq for row in claimed], owner="me")
    assert spool.backlog() == 3  # "b" has not confirmed yet
    assert spool.pending("a") == 0
    spool.done("b", [row.seq for row in spool.claim("b", 10, lease=60, owner="me")], owner="me")
    assert spool.backlog() == 0


def test_claimed_rows_come_back_whole_and_oldest_first(spool: Spool) -> None:
    sent = events(5, properties={"n": 1})
    spool.add(sent, ["a"])
    claimed = spool.claim("a", 3, lease=60, owner="me")
    assert [row.event for row in claimed] == sent[:3]


def test_a_lease_hides_rows_from_another_connection_until_it_ends(tmp_path: Path) -> None:
    first, second = Spool(tmp_path / "s.sqlite3"), Spool(tmp_path / "s.sqlite3")
    first.add(events(4), ["a"])
    taken = first.claim("a", 3, lease=60, owner="p1")
    rest = second.claim("a", 10, lease=60, owner="p2")
    assert {row.seq for row in taken}.isdisjoint(row.seq for row in rest)
    assert len(taken) + len(rest) == 4
    assert second.claim("a", 10, lease=60, owner="p2") == []
    expired = first.claim("a", 10, lease=0, owner="p1")  # nothing due: everything is leased
    assert expired == []


def test_a_rescheduled_row_is_due_again_only_at_its_time(spool: Spool) -> None:
    spool.add(events(1), ["a"])
    (row,) = spool.claim("a", 1, lease=60, owner="me")
    assert spool.reschedule("a", [row.seq], at=time.time() + 3600, owner="me") == 1
    assert spool.claim("a", 1, lease=60, owner="me") == []
    assert spool.reschedule("a", [row.seq], at=time.time(), owner="someone else") == 0
    next_ready = spool.next_ready("a")
    assert next_ready is not None and next_ready > time.time() + 3000


def test_dead_letters_keep_reason_and_response_and_can_be_retried(spool: Spool) -> None:
    sent = events(2)
    spool.add(sent, ["a"])
    claimed = spool.claim("a", 2, lease=60, owner="me")
    spool.bury("a", [(claimed[0].seq, "HTTP 400: bad", 400, '{"error": "bad"}')], owner="me")
    (dead,) = spool.dead()
    assert (dead.event_id, dead.sink, dead.status, dead.response) == (sent[0].id, "a", 400, '{"error": "bad"}')
    assert spool.retry_dead() == 1
    assert spool.dead() == []
    again = spool.claim("a", 10, lease=60, owner="me")
    assert [row.event.id for row in again] == [sent[0].id]


def test_size_cap_drops_the_oldest_events_and_counts_them(spool: Spool) -> None:
    big = {"blob": "x" * 2000}
    spool.add(events(2000, properties=big), ["a"])  # about 4 MB
    dropped = spool.enforce_cap(1024 * 1024)
    assert 0 < dropped < 2000
    left = spool.claim("a", 5000, lease=60, owner="me")
    assert len(left) == 2000 - dropped
    assert left[0].event.name == f"e{dropped}"  # the newest survive


def test_dead_letters_go_first_when_the_spool_is_full(spool: Spool) -> None:
    # Deliveries that failed for good must not fill the cap and turn every new event away.
    big = {"blob": "x" * 2000}
    spool.add(events(600, properties=big), ["a"])
    claimed = spool.claim("a", 600, lease=60, owner="me")
    spool.bury("a", [(row.seq, "HTTP 400", 400, "") for row in claimed], owner="me")
    spool.add(events(100, properties=big), ["a"])
    assert spool.enforce_cap(1024 * 1024) == 0  # room made from the dead letters alone
    assert len(spool.claim("a", 500, lease=60, owner="me")) == 100
    assert spool.dead_count() < 600


def test_sequence_numbers_are_never_reused_and_confirmations_only_count_for_the_leaseholder(spool: Spool) -> None:
    spool.add(events(3, prefix="x"), ["a"])
    in_flight = spool.claim("a", 3, lease=60, owner="me")
    assert spool.enforce_cap(0) == 3  # the cap empties the table while those sends are in flight
    spool.add(events(3, prefix="y"), ["a"])
    spool.done("a", [row.seq for row in in_flight], owner="me")  # the old sends confirm
    fresh = spool.claim("a", 10, lease=60, owner="other")
    assert [row.event.name for row in fresh] == ["y0", "y1", "y2"]  # nothing of the new rows was deleted
    spool.done("a", [row.seq for row in fresh], owner="me")  # not ours: another process holds them
    assert spool.pending("a") == 3
    spool.done("a", [row.seq for row in fresh], owner="other")
    assert spool.backlog() == 0


def _delete_spool_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_spool_file_deleted_while_in_use_keeps_every_event(spool: Spool) -> None:
    # A cache cleaner (or rm -rf ~/.cache) deletes the file under a running process: the rows live on only in
    # the open connection, and would go with the process.
    spool.add(events(3, prefix="old"), ["a", "b"])
    in_flight = spool.claim("a", 1, lease=60, owner="me")
    buried = spool.claim("b", 1, lease=60, owner="me")
    spool.bury("b", [(buried[0].seq, "HTTP 400", 400, "no")], owner="me")
    _delete_spool_files(spool.path)
    spool.add(events(2, prefix="new"), ["a", "b"])
    assert spool.path.exists()
    reopened = Spool(spool.path)  # what the next process finds
    assert reopened.backlog() == 5
    claimed = reopened.claim("a", 10, lease=60, owner="next")
    # The lease moved with its row: the event in flight is not sent a second time meanwhile.
    assert [row.event.name for row in claimed] == ["old1", "old2", "new0", "new1"]
    assert [(row.sink, row.reason) for row in reopened.dead()] == [("b", "HTTP 400")]
    # The send that was in flight from the deleted file confirms its row under the number it had.
    spool.done("a", [row.seq for row in in_flight], owner="me")
    assert reopened.pending("a") == 4
    assert "old0" not in [row.event.name for row in spool.claim("a", 10, lease=0, owner="later")]


@pytest.mark.parametrize("answer", ["reschedule", "bury"])
def test_a_send_in_flight_across_a_move_reschedules_or_buries_its_row(spool: Spool, answer: str) -> None:
    spool.add(events(2, prefix="old"), ["a"])
    in_flight = spool.claim("a", 1, lease=60, owner="me")
    _delete_spool_files(spool.path)
    spool.add(events(1, prefix="new"), ["a"])  # the move
    _delete_spool_files(spool.path)
    spool.add(events(1, prefix="newer"), ["a"])  # and another: numbers follow both
    seq = in_flight[0].seq
    if answer == "reschedule":
        assert spool.reschedule("a", [seq], at=time.time() + 3600, owner="me") == 1
        later = [row.event.name for row in spool.claim("a", 10, lease=60, owner="me")]
        assert later == ["old1", "new0", "newer0"]  # backed off, not sent again at once
        assert spool.pending("a") == 4
    else:
        spool.bury("a", [(seq, "HTTP 400", 400, "bad")], owner="me")
        assert [(row.event_id, row.reason) for row in spool.dead()] == [(in_flight[0].event.id, "HTTP 400")]
        assert spool.pending("a") == 3


def test_a_lease_another_process_holds_is_let_go_by_a_move(tmp_path: Path) -> None:
    # The other process answers to the file it has open: its row goes out again rather than wait forever.
    path = tmp_path / "spool.sqlite3"
    mine, theirs = Spool(path), Spool(path)
    theirs.add(events(1, prefix="t"), ["a"])
    assert theirs.claim("a", 1, lease=3600, owner="them")
    mine.claim("a", 1, lease=60, owner="me")  # nothing due, but "me" is who this object leases for
    _delete_spool_files(path)
    mine.add(events(1, prefix="m"), ["a"])
    assert sorted(row.event.name for row in mine.claim("a", 10, lease=60, owner="me")) == ["m0", "t0"]


def test_a_spool_file_deleted_while_idle_is_made_again_at_the_next_look(spool: Spool) -> None:
    spool.add(events(2), ["a"])
    _delete_spool_files(spool.path)
    assert spool.backlog() == 2  # drain() ends with this call: the rows are in a file again
    assert Spool(spool.path).backlog() == 2


def test_processes_sharing_a_deleted_spool_move_each_row_once(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    first, second = Spool(path), Spool(path)
    first.add(events(3, prefix="f"), ["a"])
    second.add(events(2, prefix="s"), ["a"])
    _delete_spool_files(path)
    first.add(events(1, prefix="g"), ["a"])  # moves every row of the shared file, and makes the new one
    second.add(events(1, prefix="t"), ["a"])  # finds the new file: nothing left to move
    names = sorted(row.event.name for row in Spool(path).claim("a", 100, lease=60, owner="x"))
    assert names == ["f0", "f1", "f2", "g0", "s0", "s1", "t0"]


def test_a_deleted_spool_whose_wal_is_left_stays_on_the_open_file(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    # A new file beside the old one's -wal would read that WAL as its own: the open file is kept instead,
    # and the log says what will happen.
    spool.add(events(2), ["a"])
    spool.path.unlink()
    assert Path(f"{spool.path}-wal").exists()
    spool.add(events(1), ["a"])
    assert not spool.path.exists()
    assert spool.backlog() == 3
    assert "its -wal/-shm files were not" in caplog.text


def test_a_deleted_spool_whose_wal_another_process_reuses_keeps_its_rows(spool: Spool) -> None:
    # rm spool.sqlite3 (the -wal and -shm left), then a new process opens the path: its new file shares the old
    # -shm, and a second connection of ours beside it would see our rows vanish. We stay on our file.
    spool.add(events(5, prefix="a"), ["s"])
    spool.path.unlink()
    spool.add(events(2, prefix="b"), ["s"])
    # (SQLite may refuse the other process the new file beside a foreign WAL: its events then wait in memory.)
    subprocess.run(
        [sys.executable, "-c", "import sys\nfrom trackgate import Event\nfrom trackgate.dispatch.spool import Spool\n"
         "Spool(sys.argv[1]).add([Event('custom', name='c')], ['s'])", str(spool.path)],
        capture_output=True, text=True, timeout=60,
    )
    assert spool.path.exists()
    spool.add(events(1, prefix="d"), ["s"])
    assert spool.backlog() == 8
    assert sorted(row.event.name for row in spool.claim("s", 100, lease=60, owner="me")) == [
        "a0", "a1", "a2", "a3", "a4", "b0", "b1", "d0"
    ]


def test_a_spool_folder_turned_into_a_file_keeps_the_open_spool_working(spool: Spool) -> None:
    spool.add(events(2), ["s"])
    _delete_spool_files(spool.path)
    spool.path.parent.rmdir()
    spool.path.parent.write_text("not a folder")
    spool.add(events(1), ["s"])  # logged once; the rows wait in the open file
    assert spool.backlog() == 3
    spool.path.parent.unlink()
    assert spool.backlog() == 3  # the folder can be made again: the rows move there
    assert Spool(spool.path).backlog() == 3


def test_rows_leased_by_a_killed_process_are_reclaimed(spool: Spool) -> None:
    spool.add(events(2), ["a"])
    dead_child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_child.wait()
    import socket

    spool.claim("a", 1, lease=3600, owner=f"{socket.gethostname()}:{dead_child.pid}:0000")
    spool.claim("a", 1, lease=3600, owner=f"{socket.gethostname()}:{os.getppid()}:0000")  # alive
    from trackgate.dispatch.worker import _owner_gone

    assert spool.reclaim(_owner_gone) == 1
    assert len(spool.claim("a", 10, lease=60, owner="me")) == 1


def test_the_spool_is_sqlite_in_wal_mode(spool: Spool) -> None:
    spool.add(events(1), ["a"])
    with sqlite3.connect(spool.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_spool_path_is_under_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import platformdirs

    settings = Settings.from_environ({})
    path = default_spool_path(settings)
    assert path.parent == Path(platformdirs.user_cache_dir("trackgate"))
    assert path.name.startswith("spool-") and path.suffix == ".sqlite3"
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # as if not installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_spool_path(settings) == tmp_path / "trackgate" / path.name


def test_apps_with_different_destinations_get_different_default_spools() -> None:
    """Spool rows name their sink, not its URL: sharing a file would send one app's events to another's URL."""
    first = Settings.from_environ({}, sinks="webhook", webhook_url="http://127.0.0.1:1/a")
    second = Settings.from_environ({}, sinks="webhook", webhook_url="http://127.0.0.1:1/b")
    same_as_first = Settings.from_environ({}, sinks="webhook", webhook_url="http://127.0.0.1:1/a", cookie_name="x")
    assert default_spool_path(first) != default_spool_path(second)
    assert default_spool_path(first) == default_spool_path(same_as_first)


# --- status rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204], ids=str)
def test_2xx_is_success(status: int) -> None:
    raise_for_status(status, {}, "")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504], ids=str)
def test_retryable_statuses_raise_retry_later(status: int) -> None:
    with pytest.raises(RetryLater):
        raise_for_status(status, {}, "")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422], ids=str)
def test_other_4xx_are_permanent_and_keep_the_body(status: int) -> None:
    with pytest.raises(Rejected) as caught:
        raise_for_status(status, {}, '{"error": "nope"}')
    assert caught.value.status == status
    assert caught.value.body == '{"error": "nope"}'


def test_retry_after_seconds_and_http_date_are_read() -> None:
    with pytest.raises(RetryLater) as caught:
        raise_for_status(429, {"retry-after": "7"}, "")
    assert caught.value.retry_after == 7.0
    now = time.time()
    date = email.utils.formatdate(now + 120, usegmt=True)
    waited = parse_retry_after(date, now=now)
    assert waited is not None and 119 <= waited <= 121
    assert parse_retry_after("soon") is None
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    # The other two HTTP-date forms a recipient must accept (RFC 9110 5.6.7): RFC 850 and asctime.
    later = time.gmtime(int(now) + 120)
    for form in ("%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"):
        waited = parse_retry_after(time.strftime(form, later), now=int(now))
        assert waited == 120.0, form


@given(st.text(max_size=40))
def test_any_retry_after_value_parses_or_is_ignored(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or result >= 0


def test_outcome_defaults_to_everything_delivered() -> None:
    assert dict(Outcome().rejected) == {}


# --- backoff -------------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10_000))
def test_full_jitter_stays_between_zero_and_the_capped_exponential(failures: int) -> None:
    delay = full_jitter(failures)
    assert 0 <= delay <= min(CAP, 0.5 * 2.0 ** min(max(failures - 1, 0), 30))


def test_retry_after_wins_over_backoff() -> None:
    assert retry_delay(1, 42.0) == 42.0


# --- registry ------------------------------------------------------------------------------------------


def test_unknown_sink_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        create_sinks(Settings(sinks="nosuchsink"))
    assert caught.value.name == "TRACKGATE_SINKS"
    assert "nosuchsink" in str(caught.value)


def test_registered_factory_wins_over_an_entry_point() -> None:
    class Fake:
        name, batch_size, concurrency = "console", 1, 1

        async def send(self, session: object, events: object) -> Outcome:
            return Outcome()

        async def aclose(self) -> None:
            return None

    register("console", lambda settings: Fake())  # type: ignore[arg-type,return-value]
    try:
        (sink,) = create_sinks(Settings(sinks="console"))
        assert isinstance(sink, Fake)
    finally:
        unregister("console")
    (sink,) = create_sinks(Settings(sinks="console"))
    assert type(sink).__module__ == "trackgate.adapters.console"


def _open_spool_and_store(base: str, barrier: Any, results: Any) -> None:
    from trackgate.adapters.store import open_store

    barrier.wait()  # every process opens the new files at the same moment
    try:
        Spool(base + ".spool").close()
        store = open_store("sqlite:///" + base + ".store")
        store.count()
        store.close()
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


@pytest.mark.timeout(120)
def test_workers_opening_a_new_spool_and_store_together_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL needs it to itself, and SQLite says "locked" at once, busy timeout or not.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = []
    for round_number in range(10):
        barrier, results = context.Barrier(6), context.Queue()
        workers = [
            context.Process(target=_open_spool_and_store, args=(str(tmp_path / f"r{round_number}"), barrier, results))
            for _ in range(6)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(30)
        failures += [outcome for outcome in outcomes if outcome != "ok"]
    assert failures == []


FORK_WHILE_OPENING = """
import os, sqlite3, sys, threading, time

# Registered first, so it runs after the spool's own hook: a window between that hook's look at the open
# spools and the fork itself, in which another thread starts opening one.
os.register_at_fork(before=lambda: time.sleep(0.3))
from trackgate.dispatch.spool import Spool

path = sys.argv[1]
Spool(path).close()
holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
holder.execute("BEGIN IMMEDIATE")  # the opening below waits for this lock, another process's for a second
threading.Timer(1.0, lambda: holder.execute("ROLLBACK")).start()
errors = []

def open_spool():
    try:
        Spool(path).close()
    except Exception as exc:
        errors.append(repr(exc))

opener = threading.Thread(target=open_spool)
threading.Timer(0.1, opener.start).start()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.2)
opener.join()
print(errors)
"""


def test_a_fork_while_another_thread_opens_a_spool_leaves_both_sound(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_OPENING, str(tmp_path / "spool.sqlite3")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_file_replaced_while_being_opened_is_opened_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache cleaner and a second process between SQLite opening the file and the spool looking at which file
    # is there: the spool must not stay on the deleted one, whose events would go with this process.
    path = tmp_path / "spool.sqlite3"
    Spool(path).add(events(1, prefix="before"), ["a"])
    real_connect = sqlite3.connect
    swaps = []

    def connect_then_replace(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = real_connect(*args, **kwargs)
        if not swaps:
            swaps.append(True)
            _delete_spool_files(path)
            Spool(path).add(events(1, prefix="other"), ["a"])  # the other process's new file
        return db

    monkeypatch.setattr(sqlite3, "connect", connect_then_replace)
    spool = Spool(path)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    spool.add(events(1, prefix="mine"), ["a"])
    assert sorted(row.event.name for row in Spool(path).claim("a", 10, lease=60, owner="x")) == ["mine0", "other0"]


def test_the_write_ahead_log_shrinks_back_after_a_burst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An outage's backlog written then delivered left a WAL of its size on disk for good.
    import trackgate.dispatch.spool as spool_module

    monkeypatch.setattr(spool_module, "_WAL_BYTES_KEPT", 256 * 1024, raising=False)  # (16 MiB in use)
    spool = Spool(tmp_path / "spool.sqlite3")
    wal = Path(f"{spool.path}-wal")
    for _ in range(8):
        spool.add(events(200, prefix="x" * 1000), ["a"])
    while claimed := spool.claim("a", 1000, lease=60, owner="me"):
        spool.done("a", [row.seq for row in claimed], owner="me")
    grown = wal.stat().st_size
    assert grown > 2 * 256 * 1024  # (the burst did make it large)
    spool._db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # what SQLite does by itself every 1,000 pages
    spool.add(events(1), ["a"])  # the first write after a checkpoint starts the WAL over, cut to the limit
    assert wal.stat().st_size <= 256 * 1024
