"""One dispatcher per configuration in a process, found again cheaply on every ``Gate.emit``."""

from __future__ import annotations

import contextlib
import os
import threading

from ..events import Event
from ..settings import Settings
from . import worker
from .registry import factory_for
from .worker import COUNTER_NAMES, Dispatcher

__all__ = ["get_dispatcher", "make_default", "stats", "submit"]

_by_settings: dict[Settings, Dispatcher] = {}
# id(settings) -> (settings, dispatcher): an identity check instead of hashing every field on each emit.
_by_identity: dict[int, tuple[Settings, Dispatcher]] = {}
_default: list[Dispatcher] = []
_lock = threading.Lock()


def get_dispatcher(settings: Settings | None = None) -> Dispatcher:
    """The process's dispatcher for these settings (made on first use, started by its first event)."""
    if settings is None:
        return _default[-1] if _default else get_dispatcher(Settings())
    found = _by_identity.get(id(settings))
    if found is not None and found[0] is settings:
        return found[1]
    with _lock:
        dispatcher = _by_settings.get(settings)
        if dispatcher is None:
            dispatcher = _by_settings[settings] = Dispatcher(settings)
        _by_identity[id(settings)] = (settings, dispatcher)
        if dispatcher not in _default:
            _default.append(dispatcher)
    return dispatcher


def make_default(settings: Settings) -> Dispatcher:
    """Make ``settings``'s dispatcher the one ``submit`` (and ``record`` with a visitor or a code) uses: a
    middleware configured by keywords is where an app's events go, not the environment's sinks. Starts
    nothing, but loads the sinks' modules (aiohttp's among them): at start-up, not in the first request
    that records an event, which waited a tenth of a second or more for the imports."""
    dispatcher = get_dispatcher(settings)
    for name in dict.fromkeys(settings.sinks):
        with contextlib.suppress(Exception):  # an unknown or broken sink is said when the dispatcher starts
            factory_for(name)
    with _lock:
        if _default[-1:] != [dispatcher]:
            with contextlib.suppress(ValueError):
                _default.remove(dispatcher)
            _default.append(dispatcher)
    return dispatcher


def submit(event: Event) -> None:
    """Send ``event`` through the default dispatcher (the last one configured, else from the environment)."""
    get_dispatcher().submit(event)


def stats() -> dict[str, int]:
    """This process's counters summed over its dispatchers, and the spool backlog."""
    totals = dict.fromkeys((*COUNTER_NAMES, "backlog", "dead"), 0)
    seen_spools: set[str] = set()
    for dispatcher in list(_by_settings.values()):
        figures = dispatcher.counts()
        for name in COUNTER_NAMES:
            totals[name] += figures[name]
        spool_key = str(dispatcher.spool_path)
        if spool_key not in seen_spools:  # two configurations sharing one spool file count it once
            seen_spools.add(spool_key)
            figures = dispatcher.stats()
            totals["backlog"] += figures["backlog"]
            totals["dead"] += figures["dead"]
    return totals


def _after_fork_in_child() -> None:
    global _lock  # noqa: PLW0603 — a lock held by another thread at the fork would never be released here
    _lock = threading.Lock()
    worker._reset_in_child()
    for dispatcher in list(_by_settings.values()):
        dispatcher._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
