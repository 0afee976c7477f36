"""Lossless, non-blocking delivery of events to the configured sinks (see ``worker`` for the design)."""

from .registry import create_sinks, register
from .sink import Outcome, Rejected, RetryLater, Sink, raise_for_status

__all__ = ["Outcome", "Rejected", "RetryLater", "Sink", "create_sinks", "raise_for_status", "register"]
