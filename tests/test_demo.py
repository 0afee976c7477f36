"""``trackgate demo`` as a new user runs it: a real server on 127.0.0.1 with a cookie, tracked partner
links, a page-view pixel, and the events it records listed at /events (SQLite store, no other service)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import free_port, wait_until_serving

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]


@pytest.fixture(params=["asgi", "wsgi"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "trackgate.cli", "demo", "--port", str(port)]
    if request.param == "wsgi":
        command.append("--wsgi")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")}
    env |= {
        "TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        "TRACKGATE_STORE_URL": f"sqlite:///{tmp_path / 'events.sqlite3'}",
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_serving(port, process)  # type: ignore[arg-type]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
        assert b"Traceback" not in err, err.decode(errors="replace")


def test_the_demo_tracks_a_visit_and_shows_its_events(demo: str) -> None:
    with httpx.Client(base_url=demo, timeout=10) as client:
        home = client.get("/")
        assert home.status_code == 200
        code = client.cookies["tg_vid"]
        assert f"<code>{code}</code>" in home.text
        assert '<a href="/products">' in home.text  # same-site links stay as they are
        tracked = re.findall(r'href="(http://127\.0\.0\.1:\d+/_tg/c/[^"]+)"', home.text)
        assert len(tracked) == 2  # the two partner links
        [pixel] = re.findall(r'<img src="([^"]+/_tg/o/[^"]+)"', home.text)
        assert client.get(pixel).headers["content-type"] == "image/gif"
        click = client.get(tracked[0].replace("&amp;", "&"))
        assert click.status_code == 302 and click.headers["location"] == "https://www.python.org/"

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            events = client.get("/events").text
            if "click" in events and "pageview" in events:
                break
            time.sleep(0.2)
        assert f"<td>pageview</td><td>{code}</td>" in events
        assert f"<td>click</td><td>{code}</td><td>https://www.python.org/</td>" in events


@pytest.mark.parametrize("shell", ["asgi", "wsgi"])
def test_an_event_recorded_just_before_sigterm_is_stored(shell: str, tmp_path: Path) -> None:
    # werkzeug's server (demo --wsgi) died on SIGTERM without exit handlers: the last events went with it.
    import sqlite3

    port = free_port()
    command = [sys.executable, "-m", "trackgate.cli", "demo", "--port", str(port)]
    command += ["--wsgi"] if shell == "wsgi" else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")}
    store = tmp_path / "events.sqlite3"
    env |= {"TRACKGATE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"), "TRACKGATE_STORE_URL": f"sqlite:///{store}"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_serving(port, process)  # type: ignore[arg-type]
        home = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        [pixel] = re.findall(r'<img src="([^"]+/_tg/o/[^"]+)"', home.text)
        assert httpx.get(pixel.replace("&amp;", "&"), timeout=10).status_code == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode(errors="replace")
    with sqlite3.connect(store) as db:
        kinds = [row[0] for row in db.execute("SELECT kind FROM trackgate_events")]
    assert kinds == ["pageview"]
