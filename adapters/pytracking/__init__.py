"""A drop-in for pytracking 0.2: ``from trackgate.adapters import pytracking`` and keep your code.

Same public names, signatures and token formats (links made by pytracking decode here and the other way
round), with its bugs fixed; see ``tracking`` for the list. Plain pytracking links are not signed, so anyone
can forge one: prefer ``trackgate.TrackingLinks`` and the middleware's endpoints for new links.
"""

from .tracking import (
    DEFAULT_TIMEOUT_SECONDS,
    PNG_MIME_TYPE,
    TRACKING_PIXEL,
    Configuration,
    TrackingResult,
    get_click_tracking_result,
    get_click_tracking_url,
    get_click_tracking_url_path,
    get_open_tracking_pixel,
    get_open_tracking_result,
    get_open_tracking_url,
    get_open_tracking_url_path,
)

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "PNG_MIME_TYPE",
    "TRACKING_PIXEL",
    "Configuration",
    "TrackingResult",
    "get_click_tracking_result",
    "get_click_tracking_url",
    "get_click_tracking_url_path",
    "get_open_tracking_pixel",
    "get_open_tracking_result",
    "get_open_tracking_url",
    "get_open_tracking_url_path",
]
