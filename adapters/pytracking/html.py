"""pytracking 0.2's ``html.adapt_html``, on trackgate's streaming rewriter instead of lxml.

Same signature and the same links (pytracking's token format, from the given configuration), but the HTML
is not re-serialised: the DOCTYPE, entities, comments, merge tags and untouched URLs keep their bytes, links
already tracked are not wrapped twice, and fragments work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trackgate import rewrite_html

from .tracking import Configuration, get_configuration

DEFAULT_ATTRIBUTES = {"border": "0", "width": "0", "height": "0", "alt": ""}


class _PytrackingLinks:
    """The rewriter's link source, making pytracking-format links from one configuration."""

    def __init__(self, configuration: Configuration) -> None:
        self._configuration = configuration
        bases = (configuration.base_click_tracking_url, configuration.base_open_tracking_url)
        self._bases = tuple(base for base in bases if base)

    def click_url(self, url: str, metadata: Mapping[str, Any] | None = None) -> str:
        return self._configuration.get_click_tracking_url(url, metadata)

    def open_url(self, metadata: Mapping[str, Any] | None = None) -> str:
        return self._configuration.get_open_tracking_url(metadata)

    def is_tracking_url(self, url: str) -> bool:
        return bool(self._bases) and url.startswith(self._bases)


def adapt_html(
    html_text: str | bytes,
    extra_metadata: Mapping[str, Any] | None,
    click_tracking: bool = True,
    open_tracking: bool = True,
    configuration: Configuration | None = None,
    **kwargs: Any,
) -> str:
    """``html_text`` with its http(s) links tracked and an open pixel before ``</body>``.

    Bytes are read as the document declares (or UTF-8) and the result is returned as text, like pytracking.
    """
    links = _PytrackingLinks(get_configuration(configuration, kwargs))
    result: str | bytes = rewrite_html(
        html_text,
        links,
        metadata=extra_metadata,
        click_tracking=click_tracking,
        open_tracking=open_tracking,
        scope="all",
    )
    return result.decode("utf-8", "replace") if isinstance(result, bytes) else result
