"""Middleware: count and time every request by route template, method and status class.

Labels come from closed sets only: the URL pattern that matched (`resolver_match.route`,
e.g. `/v1/orgs/<uuid:org_id>/expenses`, never the path with its ids), a method from
a fixed list, and the status class (`2xx` ... `5xx`). So traffic from ten million orgs
still makes one series per route, method and class.
"""

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from monitoring.metrics import api_request_duration, api_requests

UNMATCHED_ROUTE = "<unmatched>"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None or match.route is None:
        return UNMATCHED_ROUTE
    return "/" + match.route


def status_class(status_code: int) -> str:
    return f"{status_code // 100}xx" if 100 <= status_code < 600 else "other"


class ApiMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        method = request.method if request.method in _KNOWN_METHODS else "other"
        labels = (route_template(request), method, status_class(response.status_code))
        api_requests.labels(*labels).inc()
        api_request_duration.labels(*labels).observe(elapsed)
        return response
