"""Random values drawn many at a time and handed out one at a time: one urandom call per batch instead of one
per value, on request paths (a new visitor's code, an event's id).

``deque.pop`` is atomic, so threads never share a value, and a forked child empties its copy of the batch
so that it never hands out what its parent still holds.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable


class Batches:
    __slots__ = ("_draw", "_ready")

    def __init__(self, draw: Callable[[], list[str]]) -> None:
        self._draw = draw
        self._ready: collections.deque[str] = collections.deque()
        if hasattr(os, "register_at_fork"):  # POSIX
            os.register_at_fork(after_in_child=self._ready.clear)

    def take(self) -> str:
        try:
            return self._ready.pop()
        except IndexError:
            self._ready.extend(self._draw())
            return self._ready.pop()
