"""Tracking links side by side with pytracking 0.2, and the click endpoint against a bare hello world.

    python bench/links.py                   # everything (needs wrk for the HTTP part)
    python bench/links.py --no-http         # encode + decode only
    python bench/links.py --duration 2 --rounds 9   # wrk runs alternate; medians count

Encode + decode: ``TrackingLinks.click_url`` then ``.decode`` against pytracking's public
``get_click_tracking_url`` then ``get_click_tracking_result`` (plain, i.e. unsigned), and the same with
encryption (ours: AES-GCM; pytracking: Fernet). A 60-character URL with small metadata.

HTTP: one uvicorn worker serves both ``/hello`` (a bare ASGI hello world, no trackgate) and the click
endpoint of ``trackgate.ASGIMiddleware`` (events go to the real dispatcher and its spool); wrk runs in its
own process. Ratios above 1 mean trackgate is faster.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

URL = "https://shop.example.org/collections/summer/linen-shirt?ref=nl"  # 60 characters
METADATA = {"recipient": "r-1042", "campaign": 7}
SECRET = "bench-secret-key"


def best_ops_per_second(work: Callable[[], object], *, seconds: float = 0.3) -> float:
    number = max(1, int(seconds / max(timeit.timeit(work, number=20) / 20, 1e-9)))
    return number / timeit.timeit(work, number=number)


def alternating_medians(ours: Callable[[], float], theirs: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Medians of short alternating runs: the machine's speed drifts by more than the gap measured, and
    adjacent runs share its moment."""
    pairs = [(ours(), theirs()) for _ in range(rounds)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def interleaved_best(ours: Callable[[], float], theirs: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Best of several alternating runs: on a shared machine noise only ever slows a run down."""
    best_ours = best_theirs = 0.0
    for _ in range(rounds):
        best_ours = max(best_ours, ours())
        best_theirs = max(best_theirs, theirs())
    return best_ours, best_theirs


def codec_rows() -> list[tuple[str, float, float]]:
    import pytracking
    from cryptography.fernet import Fernet

    import trackgate

    settings = trackgate.Settings.from_environ({}, secret_key=SECRET, base_url="https://t.example.org")
    signed = trackgate.TrackingLinks(settings)
    sealed = trackgate.TrackingLinks(settings.replace(encryption_key="bench-encryption-key"))
    plain_config = pytracking.Configuration(base_click_tracking_url="https://t.example.org/c/")
    fernet_config = pytracking.Configuration(
        base_click_tracking_url="https://t.example.org/c/", encryption_bytestring_key=Fernet.generate_key()
    )

    def ours(links: trackgate.TrackingLinks) -> Callable[[], object]:
        return lambda: links.decode(links.click_url(URL, METADATA))

    def theirs(config: Any) -> Callable[[], object]:
        return lambda: pytracking.get_click_tracking_result(
            pytracking.get_click_tracking_url(URL, METADATA, configuration=config), configuration=config
        )

    def pair(mine: Callable[[], object], peer: Callable[[], object]) -> tuple[float, float]:
        return interleaved_best(lambda: best_ops_per_second(mine), lambda: best_ops_per_second(peer), rounds=7)

    return [
        ("signed vs pytracking plain", *pair(ours(signed), theirs(plain_config))),
        ("encrypted vs pytracking Fernet", *pair(ours(sealed), theirs(fernet_config))),
    ]


# --- the HTTP part: this module is also the server's app (uvicorn --factory links:make_app) ---------------


def make_app() -> Any:
    import trackgate

    # BENCH_DISCARD_EVENTS=1 separates the endpoint's own cost from the dispatcher's.
    discard = os.environ.get("BENCH_DISCARD_EVENTS") == "1"
    tracked = trackgate.ASGIMiddleware(_hello, emit=(lambda event: None) if discard else None)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/hello":
            await _hello(scope, receive, send)
        else:
            await tracked(scope, receive, send)

    return app


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # the middleware starts and drains its dispatcher around these
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def wrk(url: str, duration: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{duration}s", url], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(out)
    return float(match[1])


def http_rows(duration: int, rounds: int) -> list[tuple[str, float, float]]:
    return [
        ("click endpoint vs bare hello world (req/s)", *_serve_and_measure(duration, rounds, discard=False)),
        ("  same, events discarded (no dispatcher)", *_serve_and_measure(duration, rounds, discard=True)),
    ]


def _serve_and_measure(duration: int, rounds: int, *, discard: bool) -> tuple[float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from servers import free_port, wait_until_serving

    import trackgate

    with tempfile.TemporaryDirectory() as spool_dir:
        port = free_port()
        env = {
            **os.environ,
            "TRACKGATE_SECRET_KEY": SECRET,
            "TRACKGATE_SPOOL_PATH": str(Path(spool_dir) / "spool.sqlite3"),
            "TRACKGATE_STORE_URL": f"sqlite:///{Path(spool_dir) / 'events.sqlite3'}",
            "BENCH_DISCARD_EVENTS": "1" if discard else "0",
        }
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "links:make_app",
            "--factory",
            "--app-dir",
            str(Path(__file__).resolve().parent),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        log = open(Path(spool_dir) / "server.log", "wb")  # noqa: SIM115 — closed in finally
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(port, server)
            base = f"http://127.0.0.1:{port}"
            links = trackgate.TrackingLinks(trackgate.Settings.from_environ({}, secret_key=SECRET, base_url=base))
            click = links.click_url(URL, METADATA)
            wrk(click, 1)  # warm up both paths
            wrk(base + "/hello", 1)
            return alternating_medians(lambda: wrk(click, duration), lambda: wrk(base + "/hello", duration), rounds)
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)  # the dispatcher drains its queue (TRACKGATE_SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
            tail = (Path(spool_dir) / "server.log").read_text(errors="replace")[-2000:]
            if tail.strip():
                print("server log (tail):\n" + tail, file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=9, help="alternating wrk runs per path (medians count)")
    args = parser.parse_args()
    rows = codec_rows()
    if not args.no_http:
        if shutil.which("wrk") is None:
            print("wrk not found: skipping the HTTP benchmark", file=sys.stderr)
        else:
            rows += http_rows(args.duration, args.rounds)
    print(f"{'benchmark':48} {'trackgate':>12} {'peer':>12} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:48} {ours:12,.0f} {theirs:12,.0f} {ours / theirs:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
