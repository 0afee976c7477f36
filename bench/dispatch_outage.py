"""RSS of a process that submits N events while its sink is down (default: the issue's 1,000,000).

    python bench/dispatch_outage.py [N]

Runs tests/dispatch_apps.py in a fresh process against a closed loopback port with a spool in a temporary
folder, and prints RSS after the first tenth (warm) and at the end, with the time it took and the spool size.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        spool = Path(folder) / "spool.sqlite3"
        env = {
            **os.environ,
            "PYTHONPATH": str(TESTS),
            "TRACKGATE_SINKS": "webhook",
            "TRACKGATE_WEBHOOK_URL": f"http://127.0.0.1:{port}/down",
            "TRACKGATE_SPOOL_PATH": str(spool),
        }
        result = subprocess.run(
            [sys.executable, str(TESTS / "dispatch_apps.py"), "rss", str(count)],
            env=env,
            capture_output=True,
            check=True,
            text=True,
        )
        figures = json.loads(result.stdout)
        size = sum(p.stat().st_size for p in spool.parent.iterdir())
    growth = figures["rss_end_kib"] - figures["rss_warm_kib"]
    print(f"events {count:,}  backlog {figures['backlog']:,}  dropped {figures['dropped']}")
    print(
        f"RSS warm {figures['rss_warm_kib'] / 1024:.1f} MiB  end {figures['rss_end_kib'] / 1024:.1f} MiB  "
        f"growth {growth / 1024:.1f} MiB"
    )
    print(
        f"submit loop {figures['submit_seconds']:.1f} s, all spooled after {figures['seconds']:.1f} s "
        f"({count / figures['seconds']:,.0f} events/s); spool files {size / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
