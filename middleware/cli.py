"""The ``trackgate`` command.

    trackgate check-config          effective settings (secrets masked), or the errors; exit 0/1
    trackgate demo [--port 8000] [--wsgi]
    trackgate link URL [--metadata JSON] [--expires 30d] | link --open | decode URL
    trackgate rewrite INPUT [-o OUTPUT] [--metadata JSON]
    trackgate events status|dead|retry|tail
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from ._version import __version__
from .errors import ConfigError
from .settings import Settings

# Each module adds its own subcommands with add_commands(subparsers); a module not built yet is skipped.
_COMMAND_MODULES = ("demo", "cli_links", "cli_rewrite", "cli_events")


def check_config(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
        from .dispatch.registry import create_sinks

        sinks = create_sinks(settings)  # an unknown sink, or one missing what it needs, fails here, not later
    except (ConfigError, TypeError) as exc:
        print(f"trackgate: configuration error: {exc}", file=sys.stderr)
        return 1
    from .dispatch import get_dispatcher

    shown = settings.describe()
    # What an unset variable means, where it means something: the files a user goes looking for.
    if settings.cookie_secure is None:
        shown["TRACKGATE_COOKIE_SECURE"] = "auto"
    shown["TRACKGATE_SPOOL_PATH"] = str(get_dispatcher(settings).spool_path)
    for sink in sinks:
        location = getattr(sink, "location", None)
        if sink.name == "store" and isinstance(location, str) and not settings.store_url:  # (a set one is secret)
            shown["TRACKGATE_STORE_URL"] = settings.describe_url(location)
    for name, value in shown.items():
        print(f"{name}={value}")
    if not settings.secret_key:
        print("# TRACKGATE_SECRET_KEY is not set: links will not survive a restart", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackgate", description="trackgate " + __version__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-config", help="print the effective settings or the errors").set_defaults(
        run=check_config
    )
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # (here, where a closed pipe is caught, not at exit)
    except ConfigError as exc:
        print(f"trackgate: configuration error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `trackgate events tail | head`: the reader has all it wanted, no error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (no second error at exit)
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
