"""``trackgate rewrite``: email HTML out of the command carries links that decode to the destination and
the recipient's metadata, for one file or a whole folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trackgate

ENV = {"TRACKGATE_SECRET_KEY": "cli-key", "TRACKGATE_BASE_URL": "https://t.example.org"}
EMAIL = '<html><body><p>Hi</p><a href="https://shop.example/sale?a=1&amp;b=2">Sale</a></body></html>'


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")} | ENV
    return subprocess.run(
        [sys.executable, "-m", "trackgate.cli", "rewrite", *args], env=env, capture_output=True, text=True, timeout=60
    )


def links() -> trackgate.TrackingLinks:
    return trackgate.TrackingLinks(trackgate.Settings.from_environ(ENV))


def test_one_file_gets_tracked_links_carrying_the_metadata(tmp_path: Path) -> None:
    source = tmp_path / "email.html"
    source.write_text(EMAIL)
    result = run(str(source), "--metadata", json.dumps({"recipient": "a@example.org"}))
    assert result.returncode == 0, result.stderr
    [click] = re.findall(r'href="([^"]+)"', result.stdout)
    decoded = links().decode(click.replace("&amp;", "&"))
    assert decoded.tracked_url == "https://shop.example/sale?a=1&b=2"
    assert decoded.metadata == {"recipient": "a@example.org"}
    [pixel] = re.findall(r'<img src="([^"]+)"', result.stdout)
    assert links().decode(pixel).is_open_tracking


def test_a_folder_is_rewritten_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.html").write_text(EMAIL)
    (tmp_path / "in" / "sub" / "b.htm").write_text(EMAIL)
    (tmp_path / "in" / "notes.txt").write_text("left alone")
    result = run(str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["a.html", "sub/b.htm"]
    assert "https://t.example.org/_tg/c/" in (tmp_path / "out" / "sub" / "b.htm").read_text()


def test_bad_metadata_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    source = tmp_path / "email.html"
    source.write_text(EMAIL)
    bad = run(str(source), "--metadata", "{not json")
    assert bad.returncode == 2 and "--metadata is not JSON" in bad.stderr
    missing = run(str(tmp_path / "nope.html"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_output_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "email.html"
    source.write_text(EMAIL)
    (tmp_path / "a-file").write_text("x")
    for output in (tmp_path / "no-dir" / "out.html", tmp_path):  # a missing folder; a folder as the file
        result = run(str(source), "-o", str(output))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert str(output) in result.stderr
    folder = run(str(tmp_path), "-o", str(tmp_path / "a-file"))  # a file where the output folder would be
    assert folder.returncode == 2 and "Traceback" not in folder.stderr, folder.stderr


@pytest.mark.parametrize("command", [("rewrite", "{email}"), ("link", "https://x.org/"), ("decode", "/_tg/c/a.b")])
def test_a_command_without_the_servers_key_makes_and_reads_no_link(command: tuple[str, str], tmp_path: Path) -> None:
    # With a key of its own (the per-process fallback) every link an email went out with was a 404 at the server.
    email = tmp_path / "email.html"
    email.write_text('<html><body><a href="https://shop.example/">shop</a></body></html>')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKGATE_")}
    env["TRACKGATE_BASE_URL"] = "https://t.example.org"
    args = [part.format(email=email) for part in command]
    result = subprocess.run([sys.executable, "-m", "trackgate.cli", *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "TRACKGATE_SECRET_KEY" in result.stderr and result.stdout == ""
    assert email.read_text() == '<html><body><a href="https://shop.example/">shop</a></body></html>'
