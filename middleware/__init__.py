"""trackgate: one WSGI/ASGI middleware for visitor identity, signed tracking links, streaming HTML
rewriting and lossless analytics dispatch."""

from ._version import __version__
from .asgi import ASGIMiddleware
from .dispatch import stats
from .errors import BadToken, BadURL, ConfigError, ForeignToken, TokenExpired, TrackgateError
from .events import Event
from .identity import Visitor
from .links import TrackingLinks, TrackingResult
from .lookup import get_visitor, set_consent
from .record import identify, record, set_properties, track_conversion
from .rewrite import HtmlRewriter, rewrite_html
from .settings import Settings
from .wsgi import WSGIMiddleware

__all__ = [
    "ASGIMiddleware",
    "BadToken",
    "BadURL",
    "ConfigError",
    "Event",
    "ForeignToken",
    "HtmlRewriter",
    "Settings",
    "TokenExpired",
    "TrackgateError",
    "TrackingLinks",
    "TrackingResult",
    "Visitor",
    "WSGIMiddleware",
    "__version__",
    "get_visitor",
    "identify",
    "record",
    "rewrite_html",
    "set_consent",
    "set_properties",
    "stats",
    "track_conversion",
]
