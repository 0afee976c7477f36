"""pytracking 0.2's Django views, with the pixel never cached and the client address not spoofable.

    # urls.py
    path("open/<path:path>", MyOpenView.as_view()), path("click/<path:path>", MyClickView.as_view())

Settings: ``PYTRACKING_CONFIGURATION`` (keywords of ``Configuration``) as before,
``PYTRACKING_TRUSTED_PROXIES`` (default 0): how many proxies in front of Django append to
X-Forwarded-For (pytracking trusted that header by default, so any client could choose its recorded IP),
and ``PYTRACKING_REDIRECT_ALLOWED_HOSTS`` (a list, or a comma-separated string; ``.example.org`` takes in
the subdomains): the hosts a plain, unencrypted link may redirect to. Anyone can write such a link, so
pytracking's click view redirected anywhere for anyone (an open redirect under the site's name); here a
plain link to another host is a 404. Links made with ``encryption_bytestring_key`` are authentic and
redirect to any http(s) destination.
"""

from __future__ import annotations

from typing import Any

try:
    from django.conf import settings  # type: ignore[import-untyped]
    from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect  # type: ignore[import-untyped]
    from django.views.generic import View  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("trackgate.adapters.pytracking.django needs Django: pip install 'trackgate[django]'") from exc

from trackgate.errors import BadToken, BadURL
from trackgate.links import host_allowed
from trackgate.netaddr import client_address
from trackgate.settings import parse_list

from .tracking import PIXEL_CACHE_HEADERS, PNG_MIME_TYPE, TRACKING_PIXEL, Configuration, TrackingResult, redirect_target
from .tracking import get_configuration as _merge_configuration


class TrackingView(View):  # type: ignore[misc]
    """Base tracking view; subclasses override the notify_* methods."""

    def notify_tracking_event(self, tracking_result: TrackingResult) -> None:
        """Called once the link is decoded, before the redirect or pixel is sent."""

    def notify_decoding_error(self, exception: Exception, request: HttpRequest) -> None:
        """Called when a link does not decode, before the 404."""

    def get_configuration(self) -> Configuration:
        return get_configuration_from_settings()


class ClickTrackingView(TrackingView):
    """Decodes the link, notifies, and redirects (302) to its http(s) destination; 404 otherwise."""

    def get(self, request: HttpRequest, path: str) -> HttpResponse:
        configuration = self.get_configuration()
        try:
            tracking_result = get_tracking_result(request, path, False, configuration)
            if not tracking_result.tracked_url:
                raise Http404
            target = redirect_target(tracking_result.tracked_url)
            if not configuration.encryption_key and not host_allowed(target, _allowed_hosts()):
                raise BadToken("plain pytracking link to a host not in PYTRACKING_REDIRECT_ALLOWED_HOSTS")
        except (BadToken, BadURL) as error:
            self.notify_decoding_error(error, request)
            raise Http404 from None
        self.notify_tracking_event(tracking_result)
        response = HttpResponseRedirect(target)
        response["Cache-Control"] = "no-store"
        return response


class OpenTrackingView(TrackingView):
    """Decodes the link, notifies, and answers the transparent PNG with no-cache headers; 404 otherwise."""

    def get(self, request: HttpRequest, path: str) -> HttpResponse:
        configuration = self.get_configuration()
        try:
            tracking_result = get_tracking_result(request, path, True, configuration)
        except BadToken as error:
            self.notify_decoding_error(error, request)
            raise Http404 from None
        self.notify_tracking_event(tracking_result)
        response = HttpResponse(TRACKING_PIXEL, content_type=PNG_MIME_TYPE)
        for name, value in PIXEL_CACHE_HEADERS.items():
            response[name] = value
        return response


def _allowed_hosts() -> tuple[str, ...]:
    hosts = getattr(settings, "PYTRACKING_REDIRECT_ALLOWED_HOSTS", ())
    return parse_list(hosts if isinstance(hosts, str) else ",".join(hosts))  # as TRACKGATE_REDIRECT_ALLOWED_HOSTS


def get_request_data(request: HttpRequest) -> dict[str, Any]:
    """User agent and client address (X-Forwarded-For only through PYTRACKING_TRUSTED_PROXIES hops)."""
    meta = request.META
    hops = int(getattr(settings, "PYTRACKING_TRUSTED_PROXIES", 0))
    return {
        "user_agent": meta.get("HTTP_USER_AGENT"),
        "user_ip": client_address(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR"), hops),
    }


def get_configuration_from_settings(settings_name: str = "PYTRACKING_CONFIGURATION") -> Configuration:
    kwargs = getattr(settings, settings_name)
    return _merge_configuration(None, kwargs)


def get_tracking_result(
    request: HttpRequest, path: str, is_open: bool, configuration: Configuration | None = None, **kwargs: Any
) -> TrackingResult:
    configuration = _merge_configuration(configuration, kwargs)
    return configuration.get_tracking_result(path, get_request_data(request), is_open)
