"""A Django project as a deployment has it, for the glue tests under real servers: settings, then the
project's WSGI and ASGI applications wrapped by trackgate (``gunicorn django_site:application``,
``uvicorn django_site:asgi_application``)."""

from __future__ import annotations

import django
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

from trackgate.adapters.django import wrap_asgi, wrap_wsgi

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1"],
    SECRET_KEY="django-site-test-key",
    ROOT_URLCONF="django_urls",
    USE_TZ=True,
    TRACKGATE_COOKIE_NAME="dj_vid",
    TRACKGATE_SECRET_KEY="django-site-link-key",
    # pytracking's settings, as its users have them (the views read links; these bases only make them).
    PYTRACKING_CONFIGURATION={
        "base_open_tracking_url": "http://127.0.0.1/open/",
        "base_click_tracking_url": "http://127.0.0.1/click/",
    },
    PYTRACKING_REDIRECT_ALLOWED_HOSTS=["shop.example"],
)
django.setup()

application = wrap_wsgi(get_wsgi_application())
asgi_application = wrap_asgi(get_asgi_application())
