"""``trackgate events status|dead|retry|adopt|tail``: look into the spool and the local event store."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from .settings import Settings


def add_commands(subparsers: Any) -> None:
    events = subparsers.add_parser("events", help="the event spool: backlog, dead letters, retries, newest events")
    commands = events.add_subparsers(dest="events_command", required=True)

    status = commands.add_parser("status", help="spool file, backlog per sink, dead letters")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(run=_status)

    dead = commands.add_parser("dead", help="deliveries refused for good, newest first, with the response")
    dead.add_argument("-n", "--limit", type=int, default=20)
    dead.add_argument("--sink", help="only this sink's")
    dead.add_argument("--json", action="store_true", help="one JSON object a line, event included")
    dead.set_defaults(run=_dead)

    retry = commands.add_parser("retry", help="queue dead-lettered deliveries again")
    retry.add_argument("numbers", nargs="*", type=int, help="dead-row numbers (default: all)")
    retry.add_argument("--sink", help="only this sink's")
    retry.add_argument(
        "--now", action="store_true",
        help="deliver them from this command within TRACKGATE_SHUTDOWN_TIMEOUT instead of leaving them to the app",
    )
    retry.set_defaults(run=_retry)

    adopt = commands.add_parser(
        "adopt", help="move the events of another spool file (this app's, before a URL or key changed) into this one"
    )
    adopt.add_argument("paths", nargs="+", help="spool files, as 'trackgate events status' lists them")
    adopt.set_defaults(run=_adopt)

    tail = commands.add_parser("tail", help="the newest events in the local event store")
    tail.add_argument("-n", "--count", type=_positive, default=20)
    tail.set_defaults(run=_tail)


def _dispatcher(settings: Settings) -> Any:
    from .dispatch import get_dispatcher  # keeps `trackgate --help` light

    return get_dispatcher(settings)


def _on_the_spool(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that reads the spool: a missing file is said (and not made: a mistyped
    TRACKGATE_SPOOL_PATH must not look like an empty spool), an unreadable one too, without a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        path = _dispatcher(Settings()).spool_path
        if not path.exists():
            print(f"trackgate: no spool at {path} (nothing was spooled there; is TRACKGATE_SPOOL_PATH right?)",
                  file=sys.stderr)
            _tell_of_other_spools(path)
            return 1
        try:
            return command(args)
        except sqlite3.DatabaseError as exc:
            print(f"trackgate: the spool at {path} cannot be read: {exc}", file=sys.stderr)
            return 1

    return run


@_on_the_spool
def _status(args: argparse.Namespace) -> int:
    settings = Settings()
    spool = _dispatcher(settings).spool
    report: dict[str, Any] = {
        "spool": str(spool.path),
        # (with its write-ahead log, where the newest rows are until a checkpoint)
        "spool_bytes": sum(
            path.stat().st_size
            for path in (spool.path, spool.path.with_name(spool.path.name + "-wal"))
            if path.exists()
        ),
        "backlog": spool.backlog(),
        "pending": {name: spool.pending(name) for name in dict.fromkeys(settings.sinks)},
        "dead": spool.dead_count(),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"spool    {report['spool']} ({report['spool_bytes'] / 1e6:.1f} MB)")
    print(f"backlog  {report['backlog']} event(s)")
    for name, count in report["pending"].items():
        print(f"  {name:<12} {count} pending")
    print(f"dead     {report['dead']} (trackgate events dead)")
    _tell_of_other_spools(spool.path)
    return 0


def _tell_of_other_spools(path: Any) -> None:
    from .dispatch.spool import other_spools

    if Settings().spool_path:
        return
    for other, backlog, dead in other_spools(path):
        print(f"other    {other}: {backlog} event(s), {dead} dead, of other destinations"
              f" (trackgate events adopt {other})")


def _adopt(args: argparse.Namespace) -> int:
    from pathlib import Path

    settings = Settings()
    spool = _dispatcher(settings).spool
    failed = 0
    for name in args.paths:
        try:
            moved, dead = spool.adopt(Path(name))
        except (OSError, ValueError, sqlite3.DatabaseError) as exc:
            print(f"trackgate: cannot adopt {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"moved {moved} event(s) and {dead} dead letter(s) from {name} into {spool.path} (it is empty now)")
    configured = set(settings.sinks)
    for sink, count in sorted(spool.pending_by_sink().items()):
        if sink not in configured:
            print(f"trackgate: {count} delivery(ies) for the sink {sink!r}, which TRACKGATE_SINKS does not name, "
                  "wait until it does", file=sys.stderr)
    return 1 if failed else 0


@_on_the_spool
def _dead(args: argparse.Namespace) -> int:
    rows = _dispatcher(Settings()).spool.dead(args.limit, args.sink)
    for row in rows:
        if args.json:
            print(json.dumps({
                "n": row.n, "event_id": row.event_id, "sink": row.sink, "reason": row.reason,
                "status": row.status, "response": row.response, "attempts": row.attempts,
                "failed_at": row.failed_at, "event": json.loads(row.body),
            }))
            continue
        when = datetime.datetime.fromtimestamp(row.failed_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"#{row.n}  {when}  {row.sink}  event {row.event_id}  after {row.attempts} attempt(s)")
        print(f"    {row.reason}")
        if row.response:
            print(f"    response: {row.response[:300]}")
    if not rows and not args.json:
        print("no dead letters")
    return 0


@_on_the_spool
def _retry(args: argparse.Namespace) -> int:
    settings = Settings()
    dispatcher = _dispatcher(settings)
    count = dispatcher.retry_dead(args.numbers or None, args.sink)
    print(f"{count} delivery(ies) queued again")
    if args.now and count:
        dispatcher.start()
        left = dispatcher.drain(settings.shutdown_timeout)
        print(f"{left} event(s) still in the spool")
    return 0


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _tail(args: argparse.Namespace) -> int:
    from .dispatch.registry import factory_for

    settings = Settings()
    sink = factory_for("store")(settings)
    missing = getattr(sink, "missing", None)
    path = missing() if missing is not None else None
    if path is not None:  # a mistyped TRACKGATE_STORE_URL must not look like an empty store
        print(f"trackgate: no event store at {path} (is TRACKGATE_STORE_URL right?)", file=sys.stderr)
        return 1
    try:
        holder = getattr(sink, "store", sink)
        tail = getattr(holder, "tail", None)
        if tail is None:
            print("trackgate: the store sink cannot list events", file=sys.stderr)
            return 1
        try:
            for event in tail(args.count):
                print(json.dumps(event.to_dict(), default=str))
        finally:
            close = getattr(holder, "close", None)
            if close is not None:
                close()
    except BrokenPipeError:
        raise  # (the reader has what it wanted: main ends quietly)
    except Exception as exc:  # unreachable, refused, unreadable: say so (the URL may hold a password: not it)
        print(f"trackgate: the event store cannot be read: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
