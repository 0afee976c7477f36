"""trackgate: one WSGI/ASGI middleware for visitor identity, signed tracking links, streaming HTML
rewriting and lossless analytics dispatch."""

from .errors import BadToken, BadURL, ConfigError, ForeignToken, TokenExpired, TrackgateError
from .events import Event
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "BadToken",
    "BadURL",
    "ConfigError",
    "Event",
    "ForeignToken",
    "Settings",
    "TokenExpired",
    "TrackgateError",
    "__version__",
]
