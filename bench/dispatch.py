"""Delivery throughput of the sinks to local receivers, side by side with py-KISSmetrics's blocking record().

    python bench/dispatch.py                 # one run, all figures
    python bench/dispatch.py --events 20000 --rtt 0.02

The receivers (tests/sinks.py) run in a child process so they do not share the sender's GIL. Each sink is
driven the way the dispatcher drives it: batches of ``sink.batch_size``, ``sink.concurrency`` sends in
flight, one aiohttp session. Every figure checks that the receiver got every event.

Two settings for the KISSmetrics comparison: bare loopback (no network latency; both sides are CPU-bound)
and a simulated round trip (``--rtt`` seconds per request at the receiver), closer to a real remote API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from trackgate import Event, Settings
from trackgate.dispatch.sink import Sink

KEY = "bench-key"


# --- receivers in a child process ---------------------------------------------------------------------
def _serve(kind: str, latency: float, conn: Connection) -> None:
    import sinks

    receiver_class = {
        "webhook": sinks.WebhookReceiver,
        "kissmetrics": sinks.KissmetricsReceiver,
        "matomo": sinks.MatomoReceiver,
    }[kind]
    with receiver_class(latency=latency) as receiver:
        conn.send(receiver.port)
        conn.recv()  # until the parent says stop


class Remote:
    """A receiver in its own process."""

    def __init__(self, kind: str, latency: float = 0.0) -> None:
        self.kind = kind
        parent, child = multiprocessing.Pipe()
        self._conn = parent
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(kind, latency, child), daemon=True
        )
        self._process.start()
        self.port: int = parent.recv()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.base_url}/_received") as response:
            result: dict[str, int] = json.load(response)
        return result

    def close(self) -> None:
        self._conn.send("stop")
        self._process.join(10)


# --- drivers ------------------------------------------------------------------------------------------
async def _drive(sink: Sink, events: Sequence[Event]) -> float:
    batches = [events[i : i + sink.batch_size] for i in range(0, len(events), sink.batch_size)]
    connector = aiohttp.TCPConnector(limit=max(sink.concurrency, 1))
    async with aiohttp.ClientSession(connector=connector) as session:
        iterator = iter(batches)

        async def worker() -> None:
            for batch in iterator:
                outcome = await sink.send(session, batch)
                assert not outcome.rejected, outcome.rejected

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(sink.concurrency)))
        elapsed = time.perf_counter() - started
    await sink.aclose()
    return elapsed


def sink_rate(sink: Sink, events: Sequence[Event], remote: Remote) -> float:
    before = remote.counts()["delivered"]
    elapsed = asyncio.run(_drive(sink, events))
    delivered = remote.counts()["delivered"] - before
    assert delivered == len(events), f"{sink.name}: {delivered} of {len(events)} delivered"
    return len(events) / elapsed


def blocking_rate(call: Callable[[int], Any], count: int, remote: Remote) -> float:
    before = remote.counts()["delivered"]
    started = time.perf_counter()
    for i in range(count):
        call(i)
    elapsed = time.perf_counter() - started
    assert remote.counts()["delivered"] - before == count
    return count / elapsed


def dispatcher_rate(settings: Settings, events: Sequence[Event], remote: Remote) -> float | None:
    """Submit, then drain through the dispatcher (spool included); None when it is not available."""
    try:
        from trackgate.dispatch.worker import Dispatcher
    except ImportError:
        return None
    before = remote.counts()["delivered"]
    dispatcher = Dispatcher(settings).start()
    started = time.perf_counter()
    for event in events:
        dispatcher.submit(event)
    left = dispatcher.drain(300)
    elapsed = time.perf_counter() - started
    assert left == 0, f"{left} left in the spool"
    assert remote.counts()["delivered"] - before == len(events)
    return len(events) / elapsed


def events_for(count: int, kind: str = "custom") -> list[Event]:
    return [
        Event(
            kind,
            name="Signed Up",
            visitor=f"visitor-{i % 997}",
            url=f"https://shop.example/p/{i}",  # type: ignore[arg-type]
            user_agent="Mozilla/5.0 (X11; Linux x86_64)",
            language="en-GB",
            properties={"n": i, "plan": "pro"},
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per HTTP-per-event figure")
    parser.add_argument("--bulk-events", type=int, default=100_000, help="events for the Matomo bulk figure")
    parser.add_argument("--peer-events", type=int, default=2_000, help="py-KISSmetrics record() calls")
    parser.add_argument("--rtt", type=float, default=0.02, help="simulated round trip (s) for the second KM run")
    args = parser.parse_args()

    import KISSmetrics

    from trackgate.adapters.kissmetrics import Client, KissmetricsSink
    from trackgate.adapters.matomo import MatomoSink
    from trackgate.adapters.webhook import WebhookSink

    rows: list[tuple[str, float]] = []
    webhook, kissmetrics, matomo = Remote("webhook"), Remote("kissmetrics"), Remote("matomo")
    slow_km = Remote("kissmetrics", latency=args.rtt)
    try:
        rows.append(
            (
                "webhook sink (1 event/POST, 8 in flight)",
                sink_rate(WebhookSink(webhook.base_url + "/hook", secret="s"), events_for(args.events), webhook),
            )
        )
        km_sink = sink_rate(KissmetricsSink(KEY, kissmetrics.base_url), events_for(args.events), kissmetrics)
        rows.append(("KISSmetrics sink (1 event/GET, 32 in flight)", km_sink))
        theirs = KISSmetrics.Client(KEY, trk_host=f"127.0.0.1:{kissmetrics.port}")
        peer = blocking_rate(
            lambda i: theirs.record(f"visitor-{i}", "Signed Up", {"n": i, "plan": "pro"}), args.peer_events, kissmetrics
        )
        rows.append(("py-KISSmetrics Client.record(), sequential (peer)", peer))
        with Client(KEY, trk_host=f"127.0.0.1:{kissmetrics.port}") as ours:
            facade = blocking_rate(
                lambda i: ours.record(f"visitor-{i}", "Signed Up", {"n": i, "plan": "pro"}),
                args.peer_events,
                kissmetrics,
            )
        rows.append(("trackgate facade Client.record(), sequential", facade))
        matomo_rate = sink_rate(MatomoSink(matomo.base_url, 7), events_for(args.bulk_events, "pageview"), matomo)
        rows.append(("Matomo sink (bulk, 100 events/POST, 4 in flight)", matomo_rate))

        slow_events = max(200, int(64 / args.rtt)) if args.rtt else args.events
        km_slow = sink_rate(KissmetricsSink(KEY, slow_km.base_url), events_for(slow_events), slow_km)
        theirs_slow = KISSmetrics.Client(KEY, trk_host=f"127.0.0.1:{slow_km.port}")
        peer_slow = blocking_rate(
            lambda i: theirs_slow.record(f"v{i}", "Signed Up"), max(20, int(2 / args.rtt)), slow_km
        )
        rows.append((f"KISSmetrics sink, {args.rtt * 1000:g} ms round trip", km_slow))
        rows.append((f"py-KISSmetrics sequential, {args.rtt * 1000:g} ms round trip (peer)", peer_slow))

        through_dispatcher: list[tuple[str, dict[str, Any], list[Event], Remote]] = [
            (
                "Matomo",
                {"sinks": "matomo", "matomo_url": matomo.base_url, "matomo_site_id": 7},
                events_for(args.bulk_events // 2, "pageview"),
                matomo,
            ),
            (
                "KISSmetrics",
                {"sinks": "kissmetrics", "kissmetrics_key": KEY, "kissmetrics_url": kissmetrics.base_url},
                events_for(args.events),
                kissmetrics,
            ),
            (
                "webhook",
                {"sinks": "webhook", "webhook_url": webhook.base_url + "/hook"},
                events_for(args.events),
                webhook,
            ),
        ]
        for label, options, events, remote in through_dispatcher:
            with tempfile.TemporaryDirectory() as folder:
                settings = Settings.from_environ({}, spool_path=str(Path(folder) / "spool.sqlite3"), **options)
                through = dispatcher_rate(settings, events, remote)
            if through is not None:
                rows.append((f"{label} through the dispatcher (submit + spool + drain)", through))
    finally:
        for remote in (webhook, kissmetrics, matomo, slow_km):
            remote.close()

    width = max(len(name) for name, _ in rows)
    print(f"{'delivery to local receivers':<{width}}  events/s")
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>10,.0f}")
    print()
    print(f"KISSmetrics sink / py-KISSmetrics, loopback:     {km_sink / peer:6.1f}x   (target >= 10x)")
    print(f"KISSmetrics sink / py-KISSmetrics, {args.rtt * 1000:g} ms RTT:    {km_slow / peer_slow:6.1f}x")
    print(f"facade Client / py-KISSmetrics Client:           {facade / peer:6.1f}x")
    print(f"Matomo bulk: {matomo_rate:,.0f} events/s           {matomo_rate / 20_000:6.1f}x the 20,000/s target")


if __name__ == "__main__":
    main()
