"""URLs for benchmarks: the project's routes plus a bare endpoint that does no work,
so what is measured is the request path (middleware), not a view."""

from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [
    path("bench/ping", ping, name="bench-ping"),
    path("", include("config.urls")),
]
