"""pytracking 0.2's ``html.adapt_html``, on trackgate's streaming rewriter instead of lxml.

Same signature and the same links (pytracking's token format, from the given configuration), but the HTML
is not re-serialised: the DOCTYPE, entities, comments, merge tags and untouched URLs keep their bytes, links
already tracked are not wrapped twice, and fragments work.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any

from trackgate import BadToken, HtmlRewriter, rewrite_html

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
        """A link made with this configuration (not merely one below its base, which may be the site's root)."""
        for base in self._bases:
            if url.startswith(base):
                try:
                    self._configuration.get_tracking_result(url[len(base) :], None, is_open=False)
                except BadToken:
                    continue
                return True
        return False


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
    options: dict[str, Any] = {
        "metadata": extra_metadata, "click_tracking": click_tracking, "open_tracking": open_tracking, "scope": "all"
    }
    if isinstance(html_text, str):
        return rewrite_html(html_text, links, **options)
    rewriter = HtmlRewriter(links, **options)
    result = rewriter.feed(html_text) + rewriter.close()
    # The bytes come back in the document's own charset: the text is read with it.
    return result.decode(rewriter.charset or _undeclared_codec(html_text), "replace")


def _undeclared_codec(document: bytes) -> str:
    """For a document the rewriter passed through: UTF-16 by its byte-order mark, else UTF-8."""
    return "utf-16" if document.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
