"""Peak memory of a uvicorn server streaming a 100 MB HTML response, bare vs behind trackgate's rewriter.

    python bench/rewrite_memory.py              # 100 MB
    python bench/rewrite_memory.py --mb 20      # a quicker look

Each server runs in its own process (``python -m uvicorn --factory``, this file's ``bare``/``wrapped``
factories); the app streams ``text/html`` in ~38 KB chunks full of outbound links, the client (this
process) reads it to the end. The server's peak RSS (VmHWM in /proc/PID/status) is read after a small warm-up
response (imports done, signing keys loaded) and again after the big one. Issue target: the big response
raises the wrapped server's peak by less than 10 MB.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHUNK_LINKS = 256
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def _chunk(number: int) -> bytes:
    """~38 KB of HTML: paragraphs and outbound links (a few hundred hosts, so the page-link cache works)."""
    parts = []
    for i in range(CHUNK_LINKS):
        host = (number * CHUNK_LINKS + i) % 512
        parts.append(
            f'<p class="item">Item {i} &amp; more text to read <a href="https://shop{host}.example.org/p/{i}'
            f'?ref=nl&amp;c={number % 7}">link {i}</a> and a tail of words.</p>\n'
        )
    return "".join(parts).encode()


def bare() -> ASGIApp:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        total = int(scope["query_string"].decode() or "0") * 1024 * 1024
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<!DOCTYPE html><html><body>\n", "more_body": True})
        chunks = [_chunk(n) for n in range(8)]  # prepared once: the app itself holds ~0.5 MB
        sent = number = 0
        while sent < total:
            body = chunks[number % 8]
            await send({"type": "http.response.body", "body": body, "more_body": True})
            sent += len(body)
            number += 1
        await send({"type": "http.response.body", "body": b"</body></html>\n"})

    return app


def wrapped() -> ASGIApp:
    from trackgate import ASGIMiddleware

    app: ASGIApp = ASGIMiddleware(bare(), rewrite="all")
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _fetch(port: int, megabytes: int) -> tuple[int, int]:
    """Read the whole response; return (bytes read, number of tracking links seen)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("GET", f"/?{megabytes}")
    response = connection.getresponse()
    size = tracked = 0
    carry = b""
    while block := response.read(1 << 16):
        size += len(block)
        tracked += (carry + block).count(b"/_tg/c/")
        carry = block[-8:]
    connection.close()
    return size, tracked


def measure(factory: str, megabytes: int, env: dict[str, str]) -> tuple[int, int, int, int]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"rewrite_memory:{factory}",
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{factory}: the server did not start") from None
                time.sleep(0.05)
        _fetch(port, 1)  # warm-up: imports, keys, first rewriter
        before = _peak_rss_kib(process.pid)
        size, tracked = _fetch(port, megabytes)
        after = _peak_rss_kib(process.pid)
        return before, after, size, tracked
    finally:
        process.terminate()
        process.wait(timeout=15)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="size of the streamed response in MiB")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trackgate-bench-") as folder:
        env = {
            **os.environ,
            "TRACKGATE_SECRET_KEY": "bench-secret-key",
            "TRACKGATE_SINKS": "console",
            "TRACKGATE_SPOOL_PATH": str(Path(folder) / "spool.sqlite3"),
        }
        print(f"{'server':<8} {'peak after warm-up':>19} {'peak after stream':>18} {'growth':>9} {'MiB read':>9} links")
        rows = {}
        for factory in ("bare", "wrapped"):
            before, after, size, tracked = measure(factory, args.mb, env)
            rows[factory] = (before, after)
            print(
                f"{factory:<8} {before / 1024:16.1f} MB {after / 1024:15.1f} MB {(after - before) / 1024:6.1f} MB "
                f"{size / 2**20:9.1f} {tracked}"
            )
    grow = (rows["wrapped"][1] - rows["wrapped"][0]) - (rows["bare"][1] - rows["bare"][0])
    print(
        f"streaming {args.mb} MiB through the rewriter raised peak RSS by {grow / 1024:.1f} MB more than bare "
        f"(wrapped vs bare peak: {(rows['wrapped'][1] - rows['bare'][1]) / 1024:+.1f} MB)"
    )


if __name__ == "__main__":
    main()
