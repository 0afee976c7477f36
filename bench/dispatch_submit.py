"""Cost of handing one event to the analytics client on the request path, side by side in one run.

    python bench/dispatch_submit.py [--calls 5000]

Peers (installed for this script only: pip install segment-analytics-python posthog):
  trackgate  Dispatcher.submit(event)            and Event(...) + submit, the whole app-side cost
  segment    analytics Client.track(user_id, name, properties)
  posthog    Posthog.capture(name, distinct_id=..., properties=...)
Every client points at a closed loopback port, so none of them delivers anything while measured; each
call is timed alone with perf_counter_ns and the table shows p50/p99 in microseconds and trackgate's
ratio to each peer.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(call: Callable[[int], object], calls: int, warmup: int = 500) -> list[float]:
    for i in range(warmup):
        call(i)
    samples = []
    clock = time.perf_counter_ns
    for i in range(calls):
        start = clock()
        call(i)
        samples.append((clock() - start) / 1000)
    return samples


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per client (below every queue cap)")
    calls = parser.parse_args().calls
    logging.disable(logging.CRITICAL)  # the peers log every failed upload to the closed port
    url = f"http://127.0.0.1:{closed_port()}"
    results: dict[str, tuple[float, float]] = {}

    from trackgate import Event, Settings
    from trackgate.dispatch import Dispatcher

    with tempfile.TemporaryDirectory() as folder:
        dispatcher = Dispatcher(
            Settings(sinks="webhook", webhook_url=url + "/hook", spool_path=str(Path(folder) / "spool.sqlite3"))
        ).start()
        prebuilt = [
            Event("custom", name="signed-up", visitor="v1", properties={"plan": "pro"}) for _ in range(calls + 500)
        ]
        results["trackgate submit(event)"] = percentiles(measure(lambda i: dispatcher.submit(prebuilt[i]), calls))
        results["trackgate Event()+submit"] = percentiles(
            measure(
                lambda i: dispatcher.submit(
                    Event("custom", name="signed-up", visitor="v1", properties={"plan": "pro"})
                ),
                calls,
            )
        )
        dispatcher.drain(0.5)

    from segment.analytics.client import Client as SegmentClient

    segment = SegmentClient(write_key="bench", host=url, max_queue_size=100_000)
    results["segment track()"] = percentiles(
        measure(lambda i: segment.track("v1", "signed-up", {"plan": "pro"}), calls)
    )
    segment.shutdown = lambda: None  # type: ignore[method-assign]  # do not wait out its retries at exit

    from posthog import Posthog

    posthog = Posthog("bench", host=url, max_queue_size=100_000, enable_local_evaluation=False)
    results["posthog capture()"] = percentiles(
        measure(lambda i: posthog.capture("signed-up", distinct_id="v1", properties={"plan": "pro"}), calls)
    )

    ours = results["trackgate submit(event)"]
    print(f"{'client':<26}{'p50 µs':>10}{'p99 µs':>10}{'p50 ratio':>12}{'p99 ratio':>12}")
    for name, (p50, p99) in results.items():
        print(f"{name:<26}{p50:>10.2f}{p99:>10.2f}{p50 / ours[0]:>11.1f}x{p99 / ours[1]:>11.1f}x")
    print(f"({calls} timed calls each; ratios are each row against trackgate submit(event))")
    import os

    os._exit(0)  # the peers' consumer threads would retry the closed port for minutes


if __name__ == "__main__":
    main()
