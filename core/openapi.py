"""How every view documents itself in /v1/schema (docs/api-schema.md).

`ApiSchema` (REST_FRAMEWORK's DEFAULT_SCHEMA_CLASS) adds to what a view declares with
`@extend_schema` everything that follows from how the view is built, so a new route is
documented exactly without repeating it:

- error statuses and their bodies: 401 unless `AllowAny`; 403 for staff/METRICS_TOKEN
  routes and for org writes (a role too low); 404 for org-scoped routes and routes with
  an id in the path; 400 for a request body or query parameters; 413 and 415 for a
  body; 409 (with Retry-After) and 422 for Idempotency-Key writes; 503 with
  Retry-After while the database is unreachable (core/errors.py) on every route that
  reads it; 429 with Retry-After on every throttled route (the per-token rate limit);
- headers: the Idempotency-Key request header on idempotent writes, and on their
  responses Idempotent-Replayed and X-DB-Position;
- `paginated(Output)`: the {"results", "next"} list shape of core/pagination.py.
- decimal inputs: the pattern of what the field accepts (`decimal_pattern`); a PATCH
  body with required fields where the view says `patch_is_partial = False`;
- `add_links`: OpenAPI links from each create to the operations on what it created.

A view states only what is special to it: its request and success response
serializers (StrictSerializer inputs are `additionalProperties: false`, see
`postprocess`), and `extra_error_statuses = {code: description}` for anything else.
"""

from collections.abc import Sequence
from typing import Any, Literal

from django.conf import settings
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from core.serializers import StrictSerializer

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7E]{1,255}$"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
# DRF's validation errors: {"field": ["message", ...]} (nested for nested input), or
# {"detail": "..."} / {"non_field_errors": [...]} for the request as a whole.
VALIDATION_ERROR = {
    "type": "object",
    "additionalProperties": {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string"},
            {"type": "object"},
        ]
    },
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
}
WRITE_HEADERS = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier request with the same key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "X-DB-Position": {
        "description": "The write's database position; send it back as X-DB-Position to read your writes.",
        "schema": {"type": "string", "pattern": r"^([A-Za-z0-9_-]+:)?[0-9A-F]{1,8}/[0-9A-F]{1,8}$"},
    },
}


def decimal_pattern(whole_digits: int, decimal_places: int, *, positive: bool) -> str:
    """The decimal strings a DecimalField accepts, as a regex a generator can use: up to
    `whole_digits` before the point and `decimal_places` after, no leading zeros; with
    `positive`, zero is excluded (min_value 0.01)."""
    fraction = rf"(\.\d{{1,{decimal_places}}})?" if decimal_places else ""
    whole = rf"[1-9]\d{{0,{whole_digits - 1}}}"
    if not positive:
        return rf"^-?(0|{whole}){fraction}$"
    if not decimal_places:
        return rf"^{whole}$"
    zeros_then_digit = (rf"0{{{i}}}[1-9]\d{{0,{decimal_places - 1 - i}}}" for i in range(decimal_places))
    below_one = rf"0\.({'|'.join(zeros_then_digit)})"
    return rf"^({whole}{fraction}|{below_one})$"


def paginated(output: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The documented shape of a cursor-paginated list of `output` (core/pagination.py)."""
    name = output.__name__.removesuffix("Output")
    return type(
        f"Paginated{name}List",
        (serializers.Serializer,),
        {
            "results": output(many=True),
            "next": serializers.URLField(allow_null=True, help_text="The next page; null on the last one."),
            "__doc__": f"A page of {name} items, newest first.",
        },
    )


def _any_permission(classes: Sequence[Any], wanted: type) -> bool:
    """Whether one of a view's permission classes is `wanted` (a composed `A | B`, which
    is no class, counts as neither)."""
    return any(isinstance(p, type) and issubclass(p, wanted) for p in classes)


class ApiSchema(AutoSchema):
    def _is_open(self) -> bool:
        return _any_permission(self.view.permission_classes, AllowAny)

    def _is_org_scoped(self) -> bool:
        from tenancy.access import OrgScopedApi

        return isinstance(self.view, OrgScopedApi)

    def _is_idempotent_write(self) -> bool:
        from idempotency.api import IdempotentWritesMixin

        return self.method in WRITE_METHODS and isinstance(self.view, IdempotentWritesMixin)

    def _is_staff_only(self) -> bool:
        from monitoring.permissions import IsStaffOrMetricsToken

        return _any_permission(self.view.permission_classes, IsStaffOrMetricsToken)

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> dict:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and direction == "request" and "pattern" in schema:
            # drf-spectacular's pattern admits "", "-." and, with min_value, zero: exactly
            # what the field refuses. State what it accepts.
            positive = field.min_value is not None and field.min_value > 0
            whole, places = field.max_whole_digits, field.decimal_places
            if whole is not None and places is not None:  # our DecimalFields set both
                schema["pattern"] = decimal_pattern(whole, places, positive=positive)
        return schema

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        if self.method == "PATCH" and not getattr(self.view, "patch_is_partial", True):
            # drf-spectacular documents every PATCH body as partial (no required field);
            # a view whose PATCH needs its fields says so (patch_is_partial = False).
            self.method = "PUT"
            try:
                return super()._get_request_for_media_type(serializer, direction)
            finally:
                self.method = "PATCH"
        return super()._get_request_for_media_type(serializer, direction)

    def get_operation_id(self) -> str:
        operation_id = super().get_operation_id()
        response = self.get_response_serializers()
        if self.method == "GET" and getattr(response, "__name__", "").startswith("Paginated"):
            return operation_id.removesuffix("_retrieve") + "_list"
        return operation_id

    def get_override_parameters(self) -> list:
        parameters = list(super().get_override_parameters())
        if self._is_idempotent_write():
            parameters.append(
                OpenApiParameter(
                    IDEMPOTENCY_HEADER,
                    {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                    OpenApiParameter.HEADER,
                    required=settings.IDEMPOTENCY_REQUIRED,
                    description=(
                        "1-255 printable ASCII characters, unique per operation. A retry with the same key "
                        "and request replays the first success (header Idempotent-Replayed: true); a "
                        "different request with the key is 422; while the first still runs, 409 with "
                        "Retry-After. Scoped to the user and org; kept IDEMPOTENCY_TTL_SECONDS."
                    ),
                )
            )
        return parameters

    def error_statuses(self) -> dict[str, tuple[str, dict, dict]]:
        """status -> (description, body schema, headers) this operation can answer with."""
        errors: dict[str, tuple[str, dict, dict]] = {}
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        has_query = any(p.get("in") == "query" for p in self._get_parameters())
        if has_body or has_query or self._is_idempotent_write():
            errors["400"] = ("Invalid input: an error list per field.", VALIDATION_ERROR, {})
        if not self._is_open():
            errors["401"] = ("Missing or invalid credentials.", DETAIL, {})
        if self._is_staff_only() or (self._is_org_scoped() and self.method in WRITE_METHODS):
            errors["403"] = ("Authenticated, but not allowed to do this.", DETAIL, {})
        if self._is_org_scoped() or "{" in self.path:
            errors["404"] = ("No such resource, or not visible to the caller.", DETAIL, {})
        if self._is_idempotent_write():
            errors["409"] = ("A request with this Idempotency-Key is still running.", DETAIL, RETRY_AFTER)
            errors["422"] = ("This Idempotency-Key was used with another request.", DETAIL, {})
        if has_body:
            errors["413"] = ("The request body is too large.", DETAIL, {})
            errors["415"] = ("The body is not JSON.", DETAIL, {})
        if self.view.throttle_classes:  # e.g. the per-token rate limit (accounts/rate_limit.py)
            errors["429"] = ("Too many requests; retry after Retry-After.", DETAIL, RETRY_AFTER)
        if getattr(self.view, "uses_database", True):
            errors["503"] = ("The database is unavailable; retry after Retry-After.", DETAIL, RETRY_AFTER)
        for code, description in getattr(self.view, "extra_error_statuses", {}).items():
            errors[str(code)] = (description, DETAIL, {})
        return errors

    def _get_response_bodies(self, direction: Literal["request", "response"] = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if self._is_idempotent_write():
            for code, documented in responses.items():
                if code.startswith("2"):
                    documented.setdefault("headers", {}).update(WRITE_HEADERS)
        for code, (description, body, headers) in self.error_statuses().items():
            if code in responses:
                continue
            response: dict[str, Any] = {
                "description": description,
                "content": {"application/json": {"schema": body}},
            }
            if headers:
                response["headers"] = headers
            responses[code] = response
        return dict(sorted(responses.items()))


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Inputs of StrictSerializers refuse unknown fields: `additionalProperties: false`."""
    strict = {f"{name}Request" if name.endswith("Input") else name for name in _strict_serializer_names()}
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if (name in strict or name.removesuffix("Request") in strict) and "properties" in schema:
            schema["additionalProperties"] = False
    return result


def add_links(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """OpenAPI links from each create (a POST answering 201) to the operations on what it
    created, `{collection}/{new_id}[/...]`: the new id from the 201 body (`id`, or the
    field named like the path parameter, e.g. a member's `user_id`), the other path
    parameters from the create's own. Clients and schemathesis's stateful phase follow
    them (create, then read, update, delete)."""
    paths = result.get("paths", {})
    schemas = result.get("components", {}).get("schemas", {})
    for collection, item in paths.items():
        created = item.get("post", {}).get("responses", {}).get("201")
        if not created:
            continue
        ref = created.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
        fields = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
        links: dict[str, Any] = {}
        for path, operations in paths.items():
            head, _, rest = path.removeprefix(collection + "/{").partition("}")
            if not path.startswith(collection + "/{") or "{" in rest:
                continue
            source = head if head in fields else "id"
            parameters = {name: f"$request.path.{name}" for name in _path_parameters(collection)} | {
                head: f"$response.body#/{source}"
            }
            for operation in operations.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    links[operation["operationId"]] = {
                        "operationId": operation["operationId"],
                        "parameters": parameters,
                    }
        if links:
            created["links"] = dict(sorted(links.items()))
    return result


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _strict_serializer_names() -> set[str]:
    names = set()
    stack = list(StrictSerializer.__subclasses__())
    while stack:
        cls = stack.pop()
        names.add(cls.__name__.removesuffix("Serializer"))
        stack.extend(cls.__subclasses__())
    return names
