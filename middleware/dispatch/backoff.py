"""When to try a failing sink again: exponential backoff with full jitter, or the receiver's Retry-After.

The schedule is kept in the spool (a row's ``ready_at``), not in a call stack, so it survives restarts and is
shared by every process using the spool; retry libraries (backoff, tenacity) wrap a call in a loop and do
not fit that, and the whole policy is the one line of ``full_jitter``.
"""

from __future__ import annotations

import random

# Its own generator: drawing from the random module's would move the host app's seeded sequence (and a
# test framework's) from a background thread.
_JITTER = random.Random()
BASE = 0.5  # seconds before the first retry, on average half of it with full jitter
CAP = 300.0  # a sink down for long is probed at least every five minutes
RETRY_AFTER_CAP = 3600.0  # a receiver asking for more than an hour is asking for too much


def full_jitter(failures: int, *, base: float = BASE, cap: float = CAP) -> float:
    """A delay uniform in [0, min(cap, base * 2**(failures-1))] (the "full jitter" of AWS's analysis)."""
    ceiling = min(cap, base * 2.0 ** min(max(failures - 1, 0), 30))
    return _JITTER.uniform(0.0, ceiling)


def retry_delay(failures: int, retry_after: float | None) -> float:
    """Seconds to wait after the ``failures``-th failure in a row; a Retry-After is honoured as given."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    return full_jitter(failures)
