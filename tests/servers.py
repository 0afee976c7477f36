"""Real servers on loopback for tests: uvicorn and gunicorn in their own processes, on free ports."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

TESTS_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def serve(
    kind: str, app: str, *, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[str]:
    """Run ``app`` ("module:attribute", importable from tests/) under uvicorn, gunicorn or granian (ASGI); yield
    its base URL.

    The process gets the caller's environment plus ``env``; it is stopped with SIGTERM (then SIGKILL).
    """
    port = free_port()
    if kind == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "warning", *args]
    elif kind == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
                   "--log-level", "warning", *args]
    elif kind == "granian":
        command = [sys.executable, "-m", "granian", "--interface", "asgi", app, "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "warning", *args]
    else:
        raise ValueError(kind)
    environment = {**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def get(url: str, **kwargs: object) -> httpx.Response:
    """One real HTTP request, no cookie jar and no redirects followed (tests look at raw answers)."""
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        return client.get(url, **kwargs)  # type: ignore[arg-type]
