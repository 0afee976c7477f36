"""The line trackgate's own faults never cross: logged and swallowed, so the host app keeps working.

Tests set ``RAISE_INTERNAL = True`` (an autouse fixture) so that a bug in trackgate fails the test
instead of disappearing into a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("trackgate")

RAISE_INTERNAL = False


@contextmanager
def guarded(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        if RAISE_INTERNAL:
            raise
        logger.exception("trackgate: %s failed; the request goes on without it", what)
