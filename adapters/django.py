"""Django glue: wrap the project's WSGI or ASGI application (as whitenoise does), settings from
``django.conf.settings.TRACKGATE_*`` attributes.

    # wsgi.py
    from django.core.wsgi import get_wsgi_application
    from trackgate.adapters.django import wrap_wsgi
    application = wrap_wsgi(get_wsgi_application())

    # settings.py
    TRACKGATE_COOKIE_NAME = "vid"

In views, ``trackgate.get_visitor(request)`` gives the visitor. Needs the ``django`` extra.
"""

from __future__ import annotations

from typing import Any

from ..asgi import ASGIApp, ASGIMiddleware
from ..gate import Emit
from ..settings import Settings
from ..wsgi import WSGIApp, WSGIMiddleware
from ._extras import require, settings_keywords

_conf = require("django.conf", "django")


def _settings(django_settings: Any) -> Settings:
    """Settings from a Django settings object (``django.conf.settings`` unless one is given)."""
    source = _conf.settings if django_settings is None else django_settings
    names = {name: getattr(source, name) for name in dir(source) if name.startswith("TRACKGATE_")}
    return Settings(**settings_keywords(names))


def wrap_wsgi(application: WSGIApp, settings: Any = None, *, emit: Emit | None = None) -> WSGIMiddleware:
    return WSGIMiddleware(application, _settings(settings), emit=emit)


def wrap_asgi(application: ASGIApp, settings: Any = None, *, emit: Emit | None = None) -> ASGIMiddleware:
    return ASGIMiddleware(application, _settings(settings), emit=emit)
