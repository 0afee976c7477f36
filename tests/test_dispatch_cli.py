"""`trackgate events status|dead|retry|tail` on a real spool and a real local event store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trackgate import Event
from trackgate.cli import main
from trackgate.dispatch.spool import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool.sqlite3")  # the path conftest puts in TRACKGATE_SPOOL_PATH


def bury_one(spool: Spool, sink: str = "store") -> Event:
    event = Event("custom", name="refused")
    spool.add([event], [sink])
    (row,) = spool.claim(sink, 1, lease=60, owner="test")
    spool.bury(sink, [(row.seq, "HTTP 400: unknown field", 400, '{"error": "unknown field"}')], owner="test")
    return event


def test_status_reports_backlog_pending_per_sink_and_dead(
    spool: Spool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKGATE_SINKS", "store,console")
    bury_one(spool, "console")
    spool.add([Event("custom", name="a"), Event("custom", name="b")], ["store", "console"])
    assert main(["events", "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["backlog"], report["pending"], report["dead"]) == (2, {"store": 2, "console": 2}, 1)
    assert main(["events", "status"]) == 0
    assert "backlog  2 event(s)" in capsys.readouterr().out


def test_dead_shows_the_reason_and_response_and_retry_queues_again(
    spool: Spool, capsys: pytest.CaptureFixture[str]
) -> None:
    event = bury_one(spool)
    assert main(["events", "dead"]) == 0
    out = capsys.readouterr().out
    assert event.id in out and "HTTP 400: unknown field" in out and '{"error": "unknown field"}' in out
    assert main(["events", "dead", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["event"]["id"] == event.id
    assert main(["events", "retry"]) == 0
    assert "1 delivery(ies) queued again" in capsys.readouterr().out
    assert spool.dead() == [] and spool.pending("store") == 1


@pytest.mark.server
@pytest.mark.timeout(60)
def test_retry_now_delivers_from_the_command_and_tail_shows_the_store(
    spool: Spool, tmp_path: Path
) -> None:
    bury_one(spool)
    env = {"PATH": "/usr/bin:/bin", "TRACKGATE_SPOOL_PATH": str(spool.path),
           "TRACKGATE_STORE_URL": f"sqlite:///{tmp_path / 'events.sqlite3'}"}
    run = [sys.executable, "-m", "trackgate.cli", "events"]
    retried = subprocess.run([*run, "retry", "--now"], env=env, capture_output=True, text=True, timeout=50)
    assert retried.returncode == 0, retried.stderr
    assert "0 event(s) still in the spool" in retried.stdout
    tail = subprocess.run([*run, "tail", "-n", "5"], env=env, capture_output=True, text=True, timeout=50)
    assert tail.returncode == 0, tail.stderr
    assert [json.loads(line)["name"] for line in tail.stdout.splitlines()] == ["refused"]


def test_a_missing_spool_is_said_and_not_made(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    typo = tmp_path / "no-such-dir" / "spool.sqlite3"
    monkeypatch.setenv("TRACKGATE_SPOOL_PATH", str(typo))
    for command in (["status"], ["dead"], ["retry"]):
        assert main(["events", *command]) == 1
        assert f"no spool at {typo}" in capsys.readouterr().err
    assert not typo.parent.exists()


def test_a_corrupt_spool_is_a_clear_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database, just bytes" * 200)
    monkeypatch.setenv("TRACKGATE_SPOOL_PATH", str(broken))
    for command in (["status"], ["dead"], ["retry"]):
        assert main(["events", *command]) == 1
        err = capsys.readouterr().err
        assert f"the spool at {broken} cannot be read" in err and "Traceback" not in err


def test_tail_of_a_missing_store_is_said_and_not_made(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    typo = tmp_path / "no-such-dir" / "events.sqlite3"
    monkeypatch.setenv("TRACKGATE_STORE_URL", f"sqlite:///{typo}")
    assert main(["events", "tail"]) == 1
    assert f"no event store at {typo}" in capsys.readouterr().err
    assert not typo.parent.exists()
    with pytest.raises(SystemExit) as stopped:  # argparse: a count of events is 1 or more
        main(["events", "tail", "-n", "-1"])
    assert stopped.value.code == 2


@pytest.mark.timeout(60)
def test_events_left_in_the_spool_of_a_corrected_url_are_found_and_adopted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The default spool file is named after the destinations: correcting a mistyped webhook URL moved the
    # app to a new, empty file, and what waited in the old one was delivered by nothing, unseen.
    from sinks import WebhookReceiver

    from trackgate import Settings
    from trackgate.dispatch import Dispatcher
    from trackgate.dispatch.spool import default_spool_path

    monkeypatch.delenv("TRACKGATE_SPOOL_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACKGATE_SINKS", "webhook")
    monkeypatch.setenv("TRACKGATE_WEBHOOK_URL", "http://127.0.0.1:9/typo")
    old = Spool(default_spool_path(Settings()))
    waiting = Event("custom", name="waited-out-the-typo")
    old.add([waiting], ["webhook"])
    refused = bury_one(old, "webhook")
    with WebhookReceiver() as hook:
        monkeypatch.setenv("TRACKGATE_WEBHOOK_URL", hook.url)
        assert default_spool_path(Settings()) != old.path
        assert main(["events", "dead"]) == 1  # nothing spooled under the corrected URL yet ...
        assert f"trackgate events adopt {old.path}" in capsys.readouterr().out  # ... but the old file is named
        dispatcher = Dispatcher(Settings()).start()
        try:
            assert wait_for_log(caplog, f"trackgate events adopt {old.path}")
            assert main(["events", "adopt", str(old.path)]) == 0
            assert "moved 1 event(s) and 1 dead letter(s)" in capsys.readouterr().out
            assert main(["events", "retry"]) == 0
            dispatcher.submit(Event("custom", name="new"))
            assert hook.wait_delivered(3, 30), hook.payloads()
        finally:
            dispatcher.drain(5)
    assert sorted(p["name"] for p in hook.payloads()) == ["new", "refused", "waited-out-the-typo"]
    assert refused.id in {p["id"] for p in hook.payloads()}
    assert old.backlog() == 0 and old.dead() == []


def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in caplog.text:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("what", ["missing", "itself", "not-a-spool"])
def test_adopting_what_is_no_other_spool_is_a_clear_error(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    spool.add([Event("custom", name="kept")], ["store"])
    path = {"missing": tmp_path / "nope.sqlite3", "itself": spool.path, "not-a-spool": tmp_path / "x.sqlite3"}[what]
    if what == "not-a-spool":
        path.write_bytes(b"not a database at all, just text" * 10)
    assert main(["events", "adopt", str(path)]) == 1
    assert "cannot adopt" in capsys.readouterr().err
    assert spool.backlog() == 1


@pytest.mark.timeout(60)
def test_tail_into_a_reader_that_stops_early_ends_quietly(spool: Spool, tmp_path: Path) -> None:
    # `trackgate events tail | head -1`: the closed pipe was reported as an unreadable store, exit 1.
    import os

    from trackgate.adapters.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    store.insert([Event("custom", name=f"e{i}", properties={"pad": "x" * 500}) for i in range(2000)])
    store.close()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")},
           "TRACKGATE_STORE_URL": f"sqlite:///{tmp_path / 'events.sqlite3'}", "TRACKGATE_SPOOL_PATH": str(spool.path)}
    process = subprocess.Popen([sys.executable, "-m", "trackgate.cli", "events", "tail", "-n", "2000"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()
    error = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(60) == 0
    assert error == ""
