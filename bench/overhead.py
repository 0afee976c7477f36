"""Requests/s of a hello-world app bare and wrapped, one run, peers side by side.

    python bench/overhead.py [--seconds 2] [--rounds 9]

ASGI under uvicorn: bare, trackgate.ASGIMiddleware, starlette's SessionMiddleware (peer).
WSGI under gunicorn (sync worker): bare, trackgate.WSGIMiddleware, the Kameleoon SDK's
KameleoonWSGIMiddleware (peer; `pip install kameleoon-client-python` for the bench only, GPLv3).
uvicorn runs with httptools and uvloop when they are installed (`pip install 'uvicorn[standard]'`, as
deployments run it); without them its pure-Python h11 parser makes each request about three times
dearer, and any middleware's share smaller.

Each server is one process, the load comes from wrk in another (`apt-get install wrk`). wrk keeps no
cookies, so the first load is all new visitors (a cookie made and set on every response, the costliest
case for trackgate; SessionMiddleware sets none for an empty session); the second sends each library's
cookie back, as returning visitors do. "bare + a fixed Set-Cookie header" is the bare app sending the
header trackgate adds for a new visitor: what the header costs the server and the client on its own.
The variants of a server run side by side and take turns under load; each round's ratio to bare counts,
and the median of the rounds is reported with their range (the machine is shared: its speed drifts by
more than the middleware costs). With two CPUs and taskset, the servers run on one CPU and wrk on the other.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VARIANTS = {
    "uvicorn": ("bare", "bare-cookie", "trackgate", "session"),
    "gunicorn": ("bare", "bare-cookie", "trackgate", "kameleoon"),
}
PEER_NAMES = {
    "bare-cookie": "bare + a fixed Set-Cookie header",
    "session": "starlette SessionMiddleware",
    "kameleoon": "Kameleoon KameleoonWSGIMiddleware",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# With two CPUs or more and taskset (util-linux), the servers run on the first CPU and wrk on the second, so
# that the load generator never takes the server's CPU away mid-run (--no-pin to let the kernel place them).
PINNED = {"server": ["taskset", "-c", "0"], "load": ["taskset", "-c", "1"]}
pinning: dict[str, list[str]] = {"server": [], "load": []}


def serve(server: str, variant: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BENCH_APP": variant,
        "BENCH_SERVER": server,
        "PYTHONPATH": str(BENCH),
        "TRACKGATE_SECRET_KEY": "bench-key",
        "TRACKGATE_SPOOL_PATH": f"{workdir}/spool.sqlite3",
        "TRACKGATE_STORE_URL": f"sqlite:///{workdir}/events.sqlite3",
    }
    if server == "uvicorn":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "overhead_apps:asgi_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "off",
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "overhead_apps:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-level",
            "warning",
        ]
    process = subprocess.Popen(
        [*pinning["server"], *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{server} {variant} did not start")


# gunicorn's sync worker serves one connection at a time and closes it: more connections only queue (and
# make the figures jumpy); uvicorn keeps connections alive and serves many at once.
CONNECTIONS = {"uvicorn": 32, "gunicorn": 4}


# A returning visitor sends back each library's cookie; a new one sends none and gets a Set-Cookie.
RETURNING = "Cookie: tg_vid=abcdefghijklmnop; kameleoonVisitorCode=abcdefghijklmnop"


def load(port: int, seconds: int, connections: int, *, returning: bool = False) -> float:
    url = f"http://127.0.0.1:{port}/"
    command = [
        *pinning["load"],
        *["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *(["-H", RETURNING] if returning else []), url],
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(out)
    return float(match[1])


def in_process(rounds: int = 8, calls: int = 10000) -> dict[tuple[str, str, bool], float]:
    """Microseconds per request of each app called directly, no server: what each middleware adds, without
    the machine's load swinging the figure (best of ``rounds``)."""
    import asyncio

    import overhead_apps

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5555),
        "headers": [(b"host", b"127.0.0.1")],
    }
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    cookie = RETURNING.split(": ", 1)[1]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        return None

    def start_response(status: str, headers: object, exc_info: object = None) -> object:
        return None

    async def asgi_round(app: object, returning: bool) -> float:
        headers = [*scope["headers"], (b"cookie", cookie.encode())] if returning else scope["headers"]  # type: ignore[misc]
        started = time.perf_counter()
        for _ in range(calls):
            await app({**scope, "headers": headers, "state": {}}, receive, send)  # type: ignore[operator]
        return (time.perf_counter() - started) / calls * 1e6

    def wsgi_round(app: object, returning: bool) -> float:
        base = {**environ, "HTTP_COOKIE": cookie} if returning else environ
        started = time.perf_counter()
        for _ in range(calls):
            for _chunk in app(dict(base), start_response):  # type: ignore[operator]
                pass
        return (time.perf_counter() - started) / calls * 1e6

    apps: dict[tuple[str, str], object] = {}
    for server, variants in VARIANTS.items():
        for variant in variants:
            os.environ["BENCH_APP"] = variant
            apps[server, variant] = overhead_apps.asgi_app() if server == "uvicorn" else overhead_apps.wsgi_app()
    # Rounds interleave the variants, so that a slow moment of the machine falls on all of them.
    results: dict[tuple[str, str, bool], float] = {}
    for _ in range(rounds):
        for (server, variant), app in apps.items():
            for returning in (False, True):
                asgi = server == "uvicorn"
                cost = asyncio.run(asgi_round(app, returning)) if asgi else wsgi_round(app, returning)
                key = (server, variant, returning)
                results[key] = min(results.get(key, float("inf")), cost)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=9, help="turns each variant takes under load")
    parser.add_argument("--in-process-only", action="store_true", help="skip the servers (no wrk needed)")
    parser.add_argument("--no-pin", action="store_true", help="do not put the servers and wrk on separate CPUs")
    parser.add_argument("--servers", default="uvicorn,gunicorn", help="which servers to load (comma-separated)")
    args = parser.parse_args()
    servers = args.servers.split(",")
    if not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        pinning.update(PINNED)
    if args.in_process_only:
        args.rounds = 0
    elif shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    # (server, variant, returning) -> requests/s per round, and its ratio to bare in that same round
    rates: dict[tuple[str, str, bool], list[float]] = {}
    ratios: dict[tuple[str, str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for server, variants in VARIANTS.items():
            if server not in servers:
                continue
            # All variants serve at once (idle ones cost nothing) and take turns under load, a few seconds
            # each, so that the machine's slow and fast moments fall on every variant alike.
            ports = {variant: free_port() for variant in variants}
            processes = [serve(server, variant, port, workdir) for variant, port in ports.items()]
            try:
                for port in ports.values():
                    load(port, 1, CONNECTIONS[server])  # warm-up
                for round_number in range(args.rounds):
                    order = variants[round_number % len(variants) :] + variants[: round_number % len(variants)]
                    for returning in (False, True):
                        measured = {
                            v: load(ports[v], args.seconds, CONNECTIONS[server], returning=returning) for v in order
                        }
                        for variant, rate in measured.items():
                            rates.setdefault((server, variant, returning), []).append(rate)
                            ratios.setdefault((server, variant, returning), []).append(rate / measured["bare"])
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=10)
    os.environ.setdefault("TRACKGATE_SECRET_KEY", "bench-key")
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["TRACKGATE_SPOOL_PATH"] = f"{workdir}/spool.sqlite3"
        costs = in_process()
    print("\nin process, µs per request (the middleware's own cost; no server, no network)")
    print(f"{'shell':9} {'variant':36} {'new visitor':>12} {'returning':>10}")
    for server, variants in VARIANTS.items():
        shell = "ASGI" if server == "uvicorn" else "WSGI"
        for variant in variants:
            new, back = costs[server, variant, False], costs[server, variant, True]
            print(f"{shell:9} {PEER_NAMES.get(variant, variant):36} {new:12.2f} {back:10.2f}")
    for returning, title in ((False, "new visitors (no cookie sent)"), (True, "returning visitors (cookie sent)")):
        if not rates:
            continue
        where = "servers on CPU 0, wrk on CPU 1" if pinning["server"] else "CPUs shared"
        print(f"\n{title}: medians of {args.rounds} rounds ({where}); x bare is the median of each round's ratio")
        print(f"{'server':9} {'variant':36} {'req/s':>9} {'x bare':>7} {'(range)':>13} {'overhead µs/req':>16}")
        for server, variants in VARIANTS.items():
            bare = statistics.median(rates[server, "bare", returning])
            for variant in variants:
                key = (server, variant, returning)
                rate, ratio = statistics.median(rates[key]), statistics.median(ratios[key])
                spread = f"{min(ratios[key]):.2f}-{max(ratios[key]):.2f}"
                overhead = (1 / (bare * ratio) - 1 / bare) * 1e6
                name = PEER_NAMES.get(variant, variant)
                print(f"{server:9} {name:36} {rate:9.0f} {ratio:7.2f} {spread:>13} {overhead:16.1f}")


if __name__ == "__main__":
    main()
