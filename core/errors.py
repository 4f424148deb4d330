"""Errors are always JSON: DRF's exception handler plus Django's last-resort handlers.

A database that cannot be reached (the primary restarting, down or hung: a connect
error, a pool timeout, a connection lost mid-request, the primary's breaker open) is
503 with `Retry-After`, never 500 (CONTRACT §7), from DRF views, plain Django views
(admin) and middleware alike: Django calls handler500 inside the `except` block, so
`server_error` sees the exception.
"""

import logging
import sys
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.db_errors import is_connection_failure

logger = logging.getLogger("core.errors")

DATABASE_UNAVAILABLE = {"detail": "The database is unavailable; try again shortly."}


def database_unavailable(exc: BaseException | None) -> bool:
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError) and is_connection_failure(exc)


def retry_after_seconds() -> str:
    return str(settings.DB_UNAVAILABLE_RETRY_AFTER_SECONDS)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if database_unavailable(exc):
        logger.warning("database unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        return Response(DATABASE_UNAVAILABLE, status=503, headers={"Retry-After": retry_after_seconds()})
    response = exception_handler(exc, context)
    if response is None:
        # An unexpected error: log it with its traceback, tell the client nothing more.
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return Response({"detail": "Internal server error."}, status=500)
    return response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Bad request."}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    if database_unavailable(sys.exc_info()[1]):
        response = JsonResponse(DATABASE_UNAVAILABLE, status=503)
        response["Retry-After"] = retry_after_seconds()
        return response
    return JsonResponse({"detail": "Internal server error."}, status=500)
