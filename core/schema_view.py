"""The OpenAPI schema, generated once per process.

drf-spectacular builds the schema on every request, which is slow (the whole URL conf
is introspected) and not thread-safe: two concurrent first requests could fail with a
500. The schema only changes with the code, so build it once under a lock.
"""

import threading
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularJSONAPIView
from rest_framework.request import Request
from rest_framework.response import Response

_lock = threading.Lock()
_schemas: dict[str, Any] = {}


class CachedSchemaView(SpectacularJSONAPIView):
    uses_database = False  # core/openapi.py: no 503 to document

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, description="This OpenAPI 3 document.")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.build_absolute_uri("/")
        with _lock:
            if key not in _schemas:
                _schemas[key] = super().get(request, *args, **kwargs).data
        return Response(_schemas[key])
