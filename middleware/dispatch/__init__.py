"""Lossless, non-blocking delivery of events to the configured sinks (see ``worker`` for the design)."""

from .instances import get_dispatcher, stats, submit
from .registry import create_sinks, register
from .sink import Outcome, Rejected, RetryLater, Sink, raise_for_status
from .worker import Dispatcher

__all__ = [
    "Dispatcher",
    "Outcome",
    "Rejected",
    "RetryLater",
    "Sink",
    "create_sinks",
    "get_dispatcher",
    "raise_for_status",
    "register",
    "stats",
    "submit",
]
