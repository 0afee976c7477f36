"""The dispatcher across real processes: SIGKILL, gunicorn --preload workers, SIGTERM, a long outage."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import TESTS_DIR, free_port, wait_until_serving
from sinks import WebhookReceiver

from trackgate import Event, Settings
from trackgate.dispatch import Dispatcher
from trackgate.dispatch.spool import Spool, peek_backlog

pytestmark = pytest.mark.server


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def environment(spool: Path, url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(TESTS_DIR),
        "TRACKGATE_SINKS": "webhook",
        "TRACKGATE_WEBHOOK_URL": url,
        "TRACKGATE_SPOOL_PATH": str(spool),
        **extra,
    }


def serve(env: dict[str, str], *command: str) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m *command`` with "{port}" in it a free port, once it serves; the process and that port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", *(part.replace("{port}", str(port)) for part in command)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until_serving(port, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, port


def gunicorn(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    process, port = serve(
        env, "gunicorn", "dispatch_apps:app", "--bind", "127.0.0.1:{port}", "--log-level", "warning", *args
    )
    return process, f"http://127.0.0.1:{port}"


# trackgate's WSGI middleware around the record() helpers (dispatch_apps.helpers_app), under gunicorn.
HELPERS_UNDER_GUNICORN = (
    "gunicorn", "dispatch_apps:helpers_app()", "--bind", "127.0.0.1:{port}", "--log-level", "warning"
)


def uvicorn_asgi_app(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """uvicorn serving dispatch_apps:asgi_app (trackgate's ASGI middleware, lifespan on), and its port."""
    return serve(
        env, "uvicorn", "--factory", "dispatch_apps:asgi_app", "--host", "127.0.0.1", "--port", "{port}",
        "--log-level", "warning",
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> str:
    process.send_signal(sig)
    try:
        process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read().decode(errors="replace") if process.stdout else ""
    if process.stdout:
        process.stdout.close()
    return output


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def drain_in_this_process(spool: Path, url: str) -> Dispatcher:
    return Dispatcher(Settings(sinks="webhook", webhook_url=url, spool_path=str(spool))).start()


def assert_all_delivered_after_a_restart(spool: Path, hook: WebhookReceiver, count: int) -> None:
    """A dispatcher started on the spool here (the next start) delivers ``count`` events in all, once each."""
    restarted = drain_in_this_process(spool, hook.url)
    try:
        assert hook.wait_delivered(count, 60)
        assert len(hook.unique()) == count
    finally:
        restarted.drain(5)


@pytest.mark.timeout(90)
def test_events_spooled_before_a_sigkill_are_delivered_after_restart(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    hook.down()  # nothing can be delivered before the kill
    process = subprocess.Popen(
        [sys.executable, str(TESTS_DIR / "dispatch_apps.py"), "spool", "300"],
        env=environment(spool, hook.url), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"spooled"
    finally:
        stop(process, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert Spool(spool).backlog() == 300
    hook.up()
    assert_all_delivered_after_a_restart(spool, hook, 300)


@pytest.mark.timeout(120)
def test_gunicorn_preload_with_four_workers_delivers_every_workers_events(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    env = environment(spool, hook.url, TRACKGATE_TEST_SUBMIT_AT_IMPORT="1")
    process, base = gunicorn(env, "--preload", "--workers", "4")
    answered: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()
    try:
        def client() -> None:
            with httpx.Client(timeout=10) as http:
                for _ in range(25):
                    pid = int(http.get(f"{base}/?n=3", headers={"Connection": "close"}).text)
                    with lock:
                        answered[pid] += 3

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(answered.values()) == 600
        assert hook.wait_delivered(601, 60)  # while the server runs: no help from the exit drain
    finally:
        output = stop(process)
    delivered = collections.Counter(payload["properties"]["pid"] for payload in hook.payloads())
    master = process.pid
    assert delivered.pop(master) == 1  # the event the master submitted before forking
    assert delivered == answered
    assert master not in answered
    assert len(answered) >= 2  # the work really was spread over forked workers
    assert not hook.duplicates(), output


@pytest.mark.timeout(90)
def test_sigterm_drains_within_the_timeout(hook: WebhookReceiver, tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite3"
    slow = WebhookReceiver(latency=0.2).start()
    try:
        process, base = gunicorn(environment(spool, slow.url, TRACKGATE_SHUTDOWN_TIMEOUT="20"), "--workers", "1")
        assert httpx.get(f"{base}/?n=40", timeout=10).status_code == 200
        stop(process)  # 40 events at 0.2 s each, 8 at a time: about a second of delivery left
        assert len(slow.unique()) == 40
        assert Spool(spool).backlog() == 0
    finally:
        slow.stop()


@pytest.mark.timeout(90)
def test_sigterm_with_the_sink_down_leaves_the_rest_spooled_for_the_next_start(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    hook.down()
    process, base = gunicorn(environment(spool, hook.url, TRACKGATE_SHUTDOWN_TIMEOUT="1"), "--workers", "1")
    assert httpx.get(f"{base}/?n=40", timeout=10).status_code == 200
    stop(process, timeout=20)  # bounded: the drain gives up after TRACKGATE_SHUTDOWN_TIMEOUT
    assert process.returncode == 0
    assert Spool(spool).backlog() == 40
    hook.up()
    assert_all_delivered_after_a_restart(spool, hook, 40)


OUTAGE_EVENTS = 200_000  # bench/dispatch_outage.py runs the full 1,000,000 (about 45 s; too long for CI)


@pytest.mark.timeout(120)
def test_a_long_outage_keeps_memory_flat_because_the_backlog_is_on_disk(tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite3"
    result = subprocess.run(
        [sys.executable, str(TESTS_DIR / "dispatch_apps.py"), "rss", str(OUTAGE_EVENTS)],
        env=environment(spool, f"http://127.0.0.1:{free_port()}/down"),
        capture_output=True, timeout=110, check=True,
    )
    figures = json.loads(result.stdout)
    assert figures["backlog"] == OUTAGE_EVENTS
    assert figures["dropped"] == 0
    # The first tenth of the events warms up allocators and SQLite's page cache; the other nine tenths
    # must not grow the process (in memory they would take well over 100 MB).
    assert figures["rss_end_kib"] - figures["rss_warm_kib"] < 32 * 1024, figures


@pytest.mark.timeout(90)
def test_uvicorn_lifespan_shutdown_drains_what_the_app_recorded(tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite3"
    slow = WebhookReceiver(latency=0.2).start()
    process, port = uvicorn_asgi_app(environment(spool, slow.url, TRACKGATE_SHUTDOWN_TIMEOUT="20"))
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/?n=40", timeout=10).text == "ok"
        output = stop(process)
        # uvicorn re-raises the signal once its shutdown (lifespan included) is complete.
        assert process.returncode in (0, -signal.SIGTERM), output
        assert len(slow.unique()) == 40, output
        assert Spool(spool).backlog() == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        slow.stop()


# A script (a cron job, a management command) that records and exits at once: the dispatcher starts on the
# submit and everything goes out at interpreter exit. The webhook is addressed by name, so aiohttp resolves
# it in an executor, and the store writes from one: both must still work that late in the exit.
SUBMIT_AND_EXIT = """
import trackgate.dispatch
from trackgate import Event
for n in range(5):
    trackgate.dispatch.submit(Event("custom", name="Cron Ran", visitor="v%d" % n))
"""


@pytest.mark.timeout(60)
def test_a_script_that_submits_and_exits_at_once_delivers_at_exit(hook: WebhookReceiver, tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite3"
    store = tmp_path / "store.sqlite3"
    env = environment(
        spool,
        hook.url.replace("127.0.0.1", "localhost"),
        TRACKGATE_SINKS="webhook,store",
        TRACKGATE_STORE_URL=f"sqlite:///{store}",
    )
    result = subprocess.run([sys.executable, "-c", SUBMIT_AND_EXIT], env=env, capture_output=True, timeout=50)
    assert result.returncode == 0
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert len(hook.unique()) == 5
    assert Spool(spool).backlog() == 0  # the store confirmed them too


# A script whose exit handler records something, the dispatcher not started before: no worker starts that late
# (Python refuses the thread pools sinks need, and would kill it with its queue), so the events go to the spool
# at once, for the next start.
SUBMIT_IN_AN_EXIT_HANDLER = """
import atexit
import trackgate.dispatch
from trackgate import Event

def last_words():
    for n in range(5):
        trackgate.dispatch.submit(Event("custom", name="at exit %d" % n))

atexit.register(last_words)
"""


@pytest.mark.timeout(60)
def test_events_submitted_from_an_exit_handler_are_spooled_for_the_next_start(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    result = subprocess.run(
        [sys.executable, "-c", SUBMIT_IN_AN_EXIT_HANDLER], env=environment(spool, hook.url), capture_output=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert Spool(spool).backlog() == 5
    assert_all_delivered_after_a_restart(spool, hook, 5)


# A server loop in a non-daemon thread that outlives the main thread, first recording then: the same, and the
# process still exits at once (no worker waiting on sinks that cannot work any more).
RECORD_AFTER_MAIN_RETURNS = """
import threading, time
import trackgate.dispatch
from trackgate import Event

def serve():
    time.sleep(0.3)  # the main thread has returned by now
    for n in range(3):
        trackgate.dispatch.submit(Event("custom", name="late %d" % n))
        time.sleep(0.5)

threading.Thread(target=serve).start()
"""


@pytest.mark.timeout(60)
def test_a_dispatcher_first_used_after_the_main_thread_returned_spools_for_the_next_start(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    env = environment(spool, hook.url.replace("127.0.0.1", "localhost"), TRACKGATE_SHUTDOWN_TIMEOUT="10")
    result = subprocess.run([sys.executable, "-c", RECORD_AFTER_MAIN_RETURNS], env=env, capture_output=True, timeout=50)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert Spool(spool).backlog() == 3
    assert_all_delivered_after_a_restart(spool, hook, 3)


@pytest.mark.timeout(60)
def test_health_reports_what_an_earlier_run_left_in_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite3"
    Spool(spool).add([Event("custom", name=f"left {n}") for n in range(7)], ["webhook"])
    env = environment(spool, f"http://127.0.0.1:{free_port()}/down", TRACKGATE_SECRET_KEY="health-key")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "test_endpoints_server:make_wsgi_app()", "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        wait_until_serving(port, process)
        health = httpx.get(f"http://127.0.0.1:{port}/_tg/health", timeout=10)
        assert health.status_code == 200 and health.json()["backlog"] == 7  # no event sent by this process yet
    finally:
        stop(process)


def test_health_does_not_wait_for_a_spool_another_process_holds_locked(tmp_path: Path) -> None:
    import sqlite3
    import time

    import trackgate

    spool = tmp_path / "spool.sqlite3"
    Spool(spool).add([Event("custom", name="waiting")], ["webhook"])
    holder = sqlite3.connect(spool, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writes, for a long time
    try:
        app = trackgate.WSGIMiddleware(
            lambda environ, start: [], sinks="webhook", webhook_url="http://127.0.0.1:9/", spool_path=str(spool)
        )
        began = time.monotonic()
        body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/_tg/health"}, lambda *a: None))
        assert time.monotonic() - began < 5  # (SQLite's busy wait is 30 s)
        assert json.loads(body)["backlog"] == 1  # a reader is not held up by a writer in WAL mode
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.timeout(90)
def test_a_spool_deleted_under_a_running_server_loses_no_event(hook: WebhookReceiver, tmp_path: Path) -> None:
    # `rm -rf ~/.cache/trackgate` (or a cache cleaner) while uvicorn runs, during an outage of the sink: the
    # events already spooled and those recorded afterwards all wait in a file at the spool's path.
    cache = tmp_path / "cache"
    spool = cache / "spool.sqlite3"
    hook.down()
    process, port = uvicorn_asgi_app(environment(spool, hook.url, TRACKGATE_SHUTDOWN_TIMEOUT="1"))
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/?n=10", timeout=10).text == "ok"
        wait_for(lambda: peek_backlog(spool) == 10, 20, "the events were never spooled")
        shutil.rmtree(cache)
        assert httpx.get(f"http://127.0.0.1:{port}/?n=5", timeout=10).text == "ok"
        output = stop(process)
        assert process.returncode in (0, -signal.SIGTERM), output
        assert "moved its 10 event(s)" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert peek_backlog(spool) == 15
    hook.up()
    assert_all_delivered_after_a_restart(spool, hook, 15)


@pytest.mark.timeout(60)
def test_sends_in_flight_when_the_spool_is_deleted_are_delivered_once(hook: WebhookReceiver, tmp_path: Path) -> None:
    # The sink takes 3 s to answer; the cache is cleaned while the five POSTs wait for it. The rows move to a
    # new file with their leases, and the answers confirm them there: nothing is sent twice or counted twice.
    cache = tmp_path / "cache"
    spool = cache / "spool.sqlite3"
    hook.latency = 3.0
    dispatcher = drain_in_this_process(spool, hook.url)
    try:
        for n in range(5):
            dispatcher.submit(Event("custom", name=f"in-flight-{n}"))
        wait_for(lambda: peek_backlog(spool) == 5, 10, "the events were never spooled")
        time.sleep(0.5)  # claimed and sent: the receiver holds the requests
        shutil.rmtree(cache)
        assert dispatcher.drain(20) == 0
    finally:
        dispatcher.drain(0)
    assert sorted(payload["name"] for payload in hook.payloads()) == [f"in-flight-{n}" for n in range(5)]
    assert hook.duplicates() == {}
    assert dispatcher.counts()["delivered"] == 5
    assert peek_backlog(spool) == 0


@pytest.mark.timeout(60)
def test_a_spool_deleted_while_every_sink_waits_is_noticed_without_traffic(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    # The only sink asked to come back in an hour (Retry-After), no new events: nothing claims or adds, yet the
    # deleted file's rows must be in a file again before a kill could take them.
    cache = tmp_path / "cache"
    spool = cache / "spool.sqlite3"
    hook.fail(429, retry_after=3600)
    dispatcher = drain_in_this_process(spool, hook.url)
    try:
        for n in range(5):
            dispatcher.submit(Event("custom", name=f"waiting-{n}"))
        wait_for(lambda: len(hook.received) == 5 and peek_backlog(spool) == 5, 20, "never spooled and tried")
        shutil.rmtree(cache)
        wait_for(lambda: peek_backlog(spool) == 5, 10, "the deleted spool's rows never came back to its path")
        assert len(hook.received) == 5  # (the sink was not asked again: the file was watched, not claimed)
    finally:
        dispatcher.drain(0)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("app", ["refuses_lifespan_app", "records_at_shutdown_app"])
def test_a_sigterm_under_uvicorn_drains_what_the_app_recorded_last(app: str, tmp_path: Path) -> None:
    # uvicorn ends by raising the SIGTERM again, with no exit handler run: only the lifespan's shutdown drains.
    # An app that refuses lifespan (Django's ASGI handler) had none, and events an app recorded in its own
    # shutdown came after the drain: both waited in a spool, or in memory, to be lost.
    with WebhookReceiver(latency=0.3) as hook:  # slow enough that nothing is delivered before the signal
        process, port = serve(
            environment(tmp_path / "spool.sqlite3", hook.url, TRACKGATE_SHUTDOWN_TIMEOUT="20"),
            "uvicorn", "--factory", f"dispatch_apps:{app}", "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning",
        )
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/?n=5", timeout=10).text == "ok"
            output = stop(process)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "lifespan" not in output.lower(), output  # (uvicorn: "protocol appears unsupported")
        names = sorted(payload["name"] for payload in hook.payloads())
    expected = [f"refusing-{i}" for i in range(5)] if app == "refuses_lifespan_app" else ["stopped"] * 5
    assert names == sorted(expected)
    assert peek_backlog(tmp_path / "spool.sqlite3") == 0


@pytest.mark.timeout(90)
def test_a_restarted_wsgi_server_delivers_the_backlog_before_recording_anything(
    hook: WebhookReceiver, tmp_path: Path
) -> None:
    # The dispatcher started with the first event a process recorded: a restarted gunicorn whose pages
    # record nothing (or before anyone signs up) left an outage's backlog waiting.
    spool = tmp_path / "spool.sqlite3"
    env = environment(spool, hook.url, TRACKGATE_SHUTDOWN_TIMEOUT="1")
    hook.down()
    process, port = serve(env, *HELPERS_UNDER_GUNICORN)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/signup?plan=pro", timeout=10).status_code == 200
        wait_for(lambda: peek_backlog(spool) == 3, 20, "the events were never spooled")
    finally:
        stop(process)
    hook.up()
    process, port = serve(env, *HELPERS_UNDER_GUNICORN)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/_tg/health", timeout=10).status_code == 200  # records nothing
        assert hook.wait_delivered(3, 30), hook.payloads()
    finally:
        stop(process)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_what_pool_workers_record_survives_the_pools_terminate(tmp_path: Path, start_method: str) -> None:
    # `with Pool(...)` ends its workers with SIGTERM and no exit handler: what they had recorded in the
    # last moments, still in memory, was lost.
    spool = tmp_path / "spool.sqlite3"
    script = (
        "import multiprocessing, dispatch_apps\n"
        f"with multiprocessing.get_context({start_method!r}).Pool(2) as pool:\n"
        "    assert sorted(pool.map(dispatch_apps.record_in_pool, range(20))) == list(range(20))\n"
    )
    env = environment(spool, "http://127.0.0.1:9/down")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stderr
    assert peek_backlog(spool) == 100


@pytest.mark.timeout(120)
def test_a_store_write_stuck_on_a_lock_does_not_hold_the_exit_past_the_shutdown_timeout(tmp_path: Path) -> None:
    # The store's writes ran on the default thread pool, whose threads Python joins at exit: one waiting on
    # SQLite's lock (30 s) held a gunicorn worker's SIGTERM that long, whatever TRACKGATE_SHUTDOWN_TIMEOUT said.
    import sqlite3

    spool, store = tmp_path / "spool.sqlite3", tmp_path / "events.sqlite3"
    env = environment(spool, "", TRACKGATE_SINKS="store", TRACKGATE_STORE_URL=f"sqlite:///{store}",
                      TRACKGATE_SHUTDOWN_TIMEOUT="1")
    process, port = serve(env, *HELPERS_UNDER_GUNICORN)
    locker = None
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/signup", timeout=10).status_code == 200
        wait_for(lambda: store.exists() and peek_backlog(spool) == 0, 20, "the first events were never stored")
        locker = sqlite3.connect(store, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        assert httpx.get(f"http://127.0.0.1:{port}/signup", timeout=10).status_code == 200
        time.sleep(1)  # the store write is waiting on the lock
        started = time.monotonic()
        stop(process)
        assert time.monotonic() - started < 20  # (SQLite's own wait is 30 s)
    finally:
        if process.poll() is None:
            stop(process, signal.SIGKILL)
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    assert peek_backlog(spool) == 3  # kept for the next start
