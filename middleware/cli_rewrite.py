"""``trackgate rewrite``: put tracked links and an open pixel into email HTML, one file or a folder.

    trackgate rewrite newsletter.html -o out.html --metadata '{"recipient": "a@example.org"}'
    trackgate rewrite campaign/ -o tracked/          # every .html/.htm file, with a progress bar

Links are made for TRACKGATE_BASE_URL (emails are read far from the request that made them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_HTML_SUFFIXES = (".html", ".htm")


def add_commands(commands: Any) -> None:
    parser = commands.add_parser("rewrite", help="track the links of email HTML and add an open pixel")
    parser.add_argument("input", type=Path, help="an HTML file, or a folder of them")
    parser.add_argument("-o", "--output", type=Path, help="file (default: standard output) or folder")
    parser.add_argument("--metadata", default="{}", help="JSON object carried by every link, e.g. the recipient")
    parser.add_argument("--pixel-position", choices=("end", "start"), default="end")
    parser.add_argument("--no-open-tracking", action="store_true", help="no pixel, links only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        metadata = json.loads(args.metadata)
    except json.JSONDecodeError as exc:
        print(f"trackgate rewrite: --metadata is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(metadata, dict):
        print("trackgate rewrite: --metadata must be a JSON object", file=sys.stderr)
        return 2
    from .cli_links import settings_with_the_servers_key
    from .links import TrackingLinks

    links = TrackingLinks(settings_with_the_servers_key())
    options: dict[str, Any] = {
        "metadata": metadata,
        "scope": "all",
        "pixel_position": args.pixel_position,
        "open_tracking": not args.no_open_tracking,
    }
    try:
        return _rewrite(args.input, args.output, links, options)
    except OSError as exc:  # an output folder missing, a file where a folder should be, no permission...
        print(f"trackgate rewrite: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2


def _rewrite(source: Path, output: Path | None, links: Any, options: dict[str, Any]) -> int:
    from .rewrite import rewrite_html

    if source.is_dir():
        if output is None:
            print("trackgate rewrite: a folder needs -o OUTPUT_FOLDER", file=sys.stderr)
            return 2
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in _HTML_SUFFIXES and p.is_file())
        for path in _with_progress(files):
            target = output / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(rewrite_html(path.read_bytes(), links, **options))
        print(f"rewrote {len(files)} file(s) into {output}", file=sys.stderr)
        return 0
    if not source.is_file():
        print(f"trackgate rewrite: no such file: {source}", file=sys.stderr)
        return 2
    out = rewrite_html(source.read_bytes(), links, **options)
    if output is None:
        sys.stdout.buffer.write(out)
    else:
        output.write_bytes(out)
    return 0


def _with_progress(files: list[Path]) -> Iterable[Path]:
    """tqdm's bar on a terminal when the `progress` extra is installed; plain iteration otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iter(files)
    bar: Iterator[Path] = tqdm(files, unit="file", disable=not sys.stderr.isatty())
    return bar
