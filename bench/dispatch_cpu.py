"""CPU per event of the dispatcher on the embedded defaults: submitting click events, then delivering them
from the SQLite spool to the SQLite store. The CPU is the process's (every thread): what a server's request
handling shares its cores, and its GIL, with.

    python bench/dispatch_cpu.py              # 20,000 events
    python bench/dispatch_cpu.py --events 50000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dispatch import events_for  # (the same events as the delivery benchmark)

from trackgate import Settings
from trackgate.dispatch.worker import Dispatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_environ(
            {},
            secret_key="bench-key",
            sinks="store",
            spool_path=f"{folder}/spool.sqlite3",
            store_url=f"sqlite:///{folder}/events.sqlite3",
        )
        dispatcher = Dispatcher(settings).start()
        warm, events = events_for(200, "click"), events_for(args.events, "click")
        for event in warm:  # the files made, the sink's connection open
            dispatcher.submit(event)
        dispatcher.drain(60)
        cpu, wall = time.process_time(), time.perf_counter()
        for event in events:
            dispatcher.submit(event)
        submitted_cpu = time.process_time()
        left = dispatcher.drain(600)
        done_cpu, done_wall = time.process_time(), time.perf_counter()
    count = len(events)
    print(f"{count:,} click events, store sink (SQLite), spool (SQLite); {left} left undelivered")
    print(f"submit loop:   {(submitted_cpu - cpu) / count * 1e6:6.1f} µs CPU per event (the worker spooling meanwhile)")
    print(f"drain:         {(done_cpu - submitted_cpu) / count * 1e6:6.1f} µs CPU per event")
    all_cpu, all_wall = (done_cpu - cpu) / count * 1e6, (done_wall - wall) / count * 1e6
    print(f"all:           {all_cpu:6.1f} µs CPU per event, {all_wall:.1f} µs wall")


if __name__ == "__main__":
    main()
