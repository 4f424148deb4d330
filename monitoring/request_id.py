"""Middleware: give every request an id (the caller's X-Request-ID when sane, else a
new one), expose it to logging through a contextvar and return it in X-Request-ID."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from monitoring.request_context import REQUEST_ID_HEADER, accept_or_make_request_id, current_request_id


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accept_or_make_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        token = current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response
