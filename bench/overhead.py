"""Requests/s of a hello-world app bare and wrapped, one run, peers side by side.

    python bench/overhead.py [--seconds 3] [--rounds 7] [--servers uvicorn,gunicorn]

ASGI under uvicorn: bare, trackgate.ASGIMiddleware, starlette's SessionMiddleware (peer).
WSGI under gunicorn (sync worker): bare, trackgate.WSGIMiddleware, the Kameleoon SDK's
KameleoonWSGIMiddleware (peer; `pip install kameleoon-client-python` for the bench only, GPLv3).
uvicorn runs with httptools and uvloop when they are installed (`pip install 'uvicorn[standard]'`, as
deployments run it); without them its pure-Python h11 parser makes each request about three times
dearer, and any middleware's share smaller.

Each variant is measured in pairs with a reference bare server, both loaded at the same time: two servers
of one kind share one CPU (taskset; two wrk processes share the other), so a slow moment of the machine
falls on both alike and the ratio of their requests/s is the ratio of what a request costs each. (Loaded
one after the other, adjacent runs here differed by up to 2x, far more than a middleware costs.) Every
round starts all its servers afresh: each Python process has its own address layout and hash seed, and
with them its own speed (three identical trackgate servers, each paired with one bare server for ten
rounds, kept medians of 0.90, 0.92 and 0.96), so one process per variant measures that process's luck as
much as the middleware; new processes every round average it out. The "bare" row pairs two bare servers:
how fair the pairing is. wrk keeps no cookies, so the first load is all new visitors (a cookie made and
set on every response, the costliest case for trackgate; SessionMiddleware sets none for an empty
session); the second sends each library's cookie back, as returning visitors do. "bare + a fixed
Set-Cookie header" is the bare app sending the header trackgate adds for a new visitor: what the header
costs the server and the client on its own. Each round measures every pair once; the median of the rounds'
ratios is reported with their range.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def start(server: str, variant: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
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
            "--no-access-log",  # lifespan stays on (uvicorn's default): it starts trackgate's dispatcher
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
    return subprocess.Popen(
        [*pinning["server"], *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
            answer.read()
    except OSError:
        return False
    return True


def serve_all(server: str, variants: dict[str, str], workdir: str) -> dict[str, tuple[int, subprocess.Popen[bytes]]]:
    """A fresh server for each name (started together, app variant as given), once each answers a request."""
    started: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        for name, variant in variants.items():
            port = free_port()
            started[name] = (port, start(server, variant, port, workdir))
        deadline = time.monotonic() + 20
        for name, (port, _) in started.items():
            # An answer, not only a connection: gunicorn's master listens before its worker has loaded the app.
            while not answers(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server} {variants[name]} did not start")
                time.sleep(0.1)
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(started: dict[str, tuple[int, subprocess.Popen[bytes]]]) -> None:
    for _, process in started.values():
        process.terminate()
    for _, process in started.values():
        process.wait(timeout=10)


# gunicorn's sync worker serves one connection at a time and closes it: more connections only queue (and
# make the figures jumpy); uvicorn keeps connections alive and serves many at once.
CONNECTIONS = {"uvicorn": 32, "gunicorn": 4}


# A returning visitor sends back each library's cookie; a new one sends none and gets a Set-Cookie.
RETURNING = "Cookie: tg_vid=abcdefghijklmnop; kameleoonVisitorCode=abcdefghijklmnop"


def load_pair(ports: tuple[int, int], seconds: int, connections: int, *, returning: bool = False) -> list[float]:
    """Requests/s of two servers loaded at the same time, by one wrk each."""
    runs = [
        subprocess.Popen(
            [
                *pinning["load"],
                *["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *(["-H", RETURNING] if returning else [])],
                f"http://127.0.0.1:{port}/",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    rates = []
    for run in runs:
        out, _ = run.communicate()
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if run.returncode or not match:
            raise RuntimeError(out)
        rates.append(float(match[1]))
    return rates


def in_process(servers: list[str], rounds: int = 8, calls: int = 10000) -> dict[tuple[str, str, bool], float]:
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
        if server not in servers:
            continue
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
    parser.add_argument("--seconds", type=int, default=3, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="turns each pair takes under load")
    parser.add_argument("--in-process-only", action="store_true", help="skip the servers (no wrk needed)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and wrk to separate CPUs")
    parser.add_argument("--servers", default="uvicorn,gunicorn", help="which servers to load (comma-separated)")
    args = parser.parse_args()
    servers = args.servers.split(",")
    if not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        pinning.update(PINNED)
    if args.in_process_only:
        args.rounds = 0
    elif shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    # (server, variant, returning) -> requests/s per round, and its ratio to the reference bare server's
    rates: dict[tuple[str, str, bool], list[float]] = {}
    ratios: dict[tuple[str, str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for server, variants in VARIANTS.items():
            if server not in servers or args.in_process_only:
                continue
            for round_number in range(args.rounds):
                # A round's servers all run at once (idle ones cost nothing), new ones every round; each variant
                # is loaded side by side with the round's reference bare server.
                started = serve_all(server, {"reference": "bare", **{v: v for v in variants}}, workdir)
                ports = {name: port for name, (port, _) in started.items()}
                try:
                    for port in ports.values():  # warm-up, one server at a time: each has the CPU to itself
                        load_pair((port, port), 1, CONNECTIONS[server])
                    order = variants[round_number % len(variants) :] + variants[: round_number % len(variants)]
                    for returning in (False, True):
                        for variant in order:
                            pair = (ports["reference"], ports[variant])
                            reference, rate = load_pair(pair, args.seconds, CONNECTIONS[server], returning=returning)
                            rates.setdefault((server, variant, returning), []).append(rate)
                            ratios.setdefault((server, variant, returning), []).append(rate / reference)
                finally:
                    stop_all(started)
    os.environ.setdefault("TRACKGATE_SECRET_KEY", "bench-key")
    # The in-process apps start a dispatcher, which drains at exit: their spool's folder is removed after that
    # (exit handlers run last registered first).
    workdir = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, workdir, True)
    os.environ["TRACKGATE_SPOOL_PATH"] = f"{workdir}/spool.sqlite3"
    costs = in_process(servers)
    print("\nin process, µs per request (the middleware's own cost; no server, no network)")
    print(f"{'shell':9} {'variant':36} {'new visitor':>12} {'returning':>10}")
    for server, variants in VARIANTS.items():
        if server not in servers:
            continue
        shell = "ASGI" if server == "uvicorn" else "WSGI"
        for variant in variants:
            new, back = costs[server, variant, False], costs[server, variant, True]
            print(f"{shell:9} {PEER_NAMES.get(variant, variant):36} {new:12.2f} {back:10.2f}")
    for returning, title in ((False, "new visitors (no cookie sent)"), (True, "returning visitors (cookie sent)")):
        if not rates:
            continue
        where = "the pair's servers share CPU 0, wrk CPU 1" if pinning["server"] else "CPUs shared"
        print(f"\n{title}: {args.rounds} rounds of {args.seconds} s pairs ({where})")
        print("x bare: the median of the rounds' ratios to the bare server loaded alongside; req/s on half a CPU")
        print(f"{'server':9} {'variant':36} {'req/s':>9} {'x bare':>7} {'(range)':>13} {'overhead µs/req':>16}")
        for server, variants in VARIANTS.items():
            if (server, "bare", returning) not in rates:
                continue
            bare = statistics.median(rates[server, "bare", returning])
            for variant in variants:
                key = (server, variant, returning)
                rate, ratio = statistics.median(rates[key]), statistics.median(ratios[key])
                spread = f"{min(ratios[key]):.2f}-{max(ratios[key]):.2f}"
                # what one request costs more than a bare one, on a whole CPU (each server had half)
                overhead = (1 / ratio - 1) / (2 * bare) * 1e6
                name = PEER_NAMES.get(variant, variant)
                print(f"{server:9} {name:36} {rate:9.0f} {ratio:7.2f} {spread:>13} {overhead:16.1f}")


if __name__ == "__main__":
    main()
