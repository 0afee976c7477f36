"""URLconf of the Django app in the glue tests: one view that reports the visitor trackgate gave it, and
pytracking's open and click views (the facade's) as a pytracking user mounts them. What the views are told
is appended as JSON lines to the file named by DJANGO_TRACKING_LOG, for a test on a real server to read."""

from __future__ import annotations

import json
import os
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

import trackgate
from trackgate.adapters.pytracking import TrackingResult
from trackgate.adapters.pytracking.django import ClickTrackingView, OpenTrackingView


def who(request: HttpRequest) -> JsonResponse:
    visitor = trackgate.get_visitor(request)
    return JsonResponse({"code": visitor.code if visitor else None})


def _log(entry: dict[str, Any]) -> None:
    with open(os.environ["DJANGO_TRACKING_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


class _Logging:
    def notify_tracking_event(self, tracking_result: TrackingResult) -> None:
        _log({"event": tracking_result.to_json_dict()})

    def notify_decoding_error(self, exception: Exception, request: HttpRequest) -> None:
        _log({"error": type(exception).__name__})


class OpenView(_Logging, OpenTrackingView):
    pass


class ClickView(_Logging, ClickTrackingView):
    pass


urlpatterns = [
    path("", who),
    path("open/<path:path>", OpenView.as_view()),
    path("click/<path:path>", ClickView.as_view()),
]
