"""Sink names (``TRACKGATE_SINKS=store,webhook``) to sink objects.

A name is looked up first among factories given to ``register()`` (tests, apps with their own sink), then
among the ``trackgate.sinks`` entry points, so a third-party package can ship a sink:

    [project.entry-points."trackgate.sinks"]
    mysink = "mypackage.sink:create_sink"     # create_sink(settings) -> Sink
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from ..errors import ConfigError
from ..settings import Settings
from .sink import Sink

__all__ = ["ENTRY_POINT_GROUP", "SinkFactory", "available", "create_sinks", "register", "unregister"]

ENTRY_POINT_GROUP = "trackgate.sinks"

SinkFactory = Callable[[Settings], Sink]

_registered: dict[str, SinkFactory] = {}


def register(name: str, factory: SinkFactory) -> None:
    """Make ``name`` usable in ``TRACKGATE_SINKS``; it wins over an entry point of the same name."""
    _registered[name] = factory


def unregister(name: str) -> None:
    _registered.pop(name, None)


def available() -> list[str]:
    """Every sink name that can be configured, registered ones first."""
    names = list(_registered)
    names += sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                    if ep.name not in _registered)
    return names


def factory_for(name: str) -> SinkFactory:
    if name in _registered:
        return _registered[name]
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        loaded: SinkFactory = entry_point.load()
        return loaded
    raise ConfigError(
        "TRACKGATE_SINKS", name, f"unknown sink; available: {', '.join(available()) or 'none installed'}"
    )


def create_sinks(settings: Settings) -> list[Sink]:
    """One sink per configured name, in order; an unknown name raises ``ConfigError`` before any is made."""
    factories = [(name, factory_for(name)) for name in dict.fromkeys(settings.sinks)]
    sinks: list[Sink] = []
    for name, factory in factories:
        sink = factory(settings)
        # The spool keys delivery rows by sink name, so two sinks may not share one.
        if any(other.name == sink.name for other in sinks):
            raise ConfigError("TRACKGATE_SINKS", name, f"a second sink named {sink.name!r}")
        sinks.append(sink)
    return sinks
