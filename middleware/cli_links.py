"""``trackgate link`` and ``trackgate decode``: make a tracking link for an email, or read one.

    trackgate link https://shop.example/sale --metadata '{"recipient": "r-42"}' --expires 30d
    trackgate link --open --metadata '{"recipient": "r-42"}'      # the open pixel's URL
    trackgate decode https://t.example.org/_tg/c/eyJ1Ijo...        # JSON of the decoded link

Settings come from TRACKGATE_* variables (the secret key, and TRACKGATE_BASE_URL for links).
Exit codes: 0 done, 1 configuration error, 2 bad input (URL, token, JSON or duration).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .errors import BadToken, BadURL, ConfigError, TokenExpired
from .links import TrackingLinks
from .settings import Settings, parse_duration


def add_commands(commands: Any) -> None:
    link = commands.add_parser("link", help="make a signed click link (or with --open, an open pixel URL)")
    link.add_argument("url", nargs="?", help="the destination of the click link")
    link.add_argument("--open", action="store_true", help="make the open pixel's URL instead")
    link.add_argument("--metadata", default=None, help='JSON object carried by the link, e.g. {"recipient": "r-42"}')
    link.add_argument("--expires", default=None, help="lifetime like 3600, 90m, 30d or 2w (default: never)")
    link.set_defaults(run=run_link)

    decode = commands.add_parser("decode", help="show what a tracking link carries, as JSON")
    decode.add_argument("url", help="a tracking URL, a path under the prefix, or a bare token")
    decode.set_defaults(run=run_decode)


def settings_with_the_servers_key() -> Settings:
    """The settings of a command that makes or reads links: never with a key of its own (the per-process
    fallback), with which every link it made would be a 404 at the server and every link it read foreign."""
    settings = Settings()
    if not settings.secret_key:
        raise ConfigError("TRACKGATE_SECRET_KEY", None, "set it to the server's key (links are checked there)")
    return settings


def _fail(command: str, message: str) -> int:
    print(f"trackgate {command}: {message}", file=sys.stderr)
    return 2


def run_link(args: argparse.Namespace) -> int:
    if args.open == (args.url is not None):
        return _fail("link", "give either a URL or --open")
    metadata: dict[str, Any] | None = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            return _fail("link", f"--metadata is not JSON: {exc}")
        except ValueError as exc:
            return _fail("link", f"--metadata: {exc}")
        if not isinstance(metadata, dict):
            return _fail("link", "--metadata must be a JSON object")
    expires_in = None
    if args.expires is not None:
        try:
            expires_in = parse_duration(args.expires)
        except ValueError as exc:
            return _fail("link", f"--expires: {exc}")
        if expires_in <= 0:
            return _fail("link", "--expires must be positive")
    links = TrackingLinks(settings_with_the_servers_key())
    try:
        made = (
            links.open_url(metadata, expires_in=expires_in)
            if args.open
            else links.click_url(args.url, metadata, expires_in=expires_in)
        )
    except ConfigError:
        raise  # (exit status 1, from main)
    except (BadURL, ValueError) as exc:  # a refused destination, or metadata too large for a link
        return _fail("link", str(exc))
    print(made)
    return 0


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259), and no link can carry it")


def run_decode(args: argparse.Namespace) -> int:
    links = TrackingLinks(settings_with_the_servers_key())
    expired = False
    try:
        result = links.decode(args.url)
    except TokenExpired as exc:
        if exc.payload is None:
            return _fail("decode", str(exc))
        result, expired = exc.payload, True
    except BadToken as exc:
        return _fail("decode", f"not a valid tracking link: {exc.reason}")
    data = result.to_json_dict()
    data["expired"] = expired
    print(json.dumps(data, ensure_ascii=False, indent=2))
    return 0
