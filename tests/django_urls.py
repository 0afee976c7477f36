"""URLconf of the Django app in the glue tests: one view that reports the visitor trackgate gave it."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

import trackgate


def who(request: HttpRequest) -> JsonResponse:
    visitor = trackgate.get_visitor(request)
    return JsonResponse({"code": visitor.code if visitor else None})


urlpatterns = [path("", who)]
