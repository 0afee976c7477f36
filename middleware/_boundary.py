"""The line trackgate's own faults never cross: logged and swallowed, so the host app keeps working.

Tests set ``RAISE_INTERNAL = True`` (an autouse fixture) so that a bug in trackgate fails the test
instead of disappearing into a log line.
"""

from __future__ import annotations

import logging
from types import TracebackType

logger = logging.getLogger("trackgate")

RAISE_INTERNAL = False


class guarded:  # lower-case: it reads like a function, ``with guarded("rewriting"): ...``
    """Logs and swallows an exception raised inside the block (re-raises it in tests)."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if error is None or not isinstance(error, Exception) or RAISE_INTERNAL:
            return False
        logger.error("trackgate: %s failed; the request goes on without it", self._what, exc_info=error)
        return True


def swallow(what: str, error: Exception) -> None:
    """For hot paths that use a bare ``try``: the same policy as ``guarded`` without a context object."""
    if RAISE_INTERNAL:
        raise error
    logger.error("trackgate: %s failed; the request goes on without it", what, exc_info=error)
