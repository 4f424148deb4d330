"""Keyset (cursor) pagination over a descending, unique ordering.

Unlike offset pagination, a keyset cursor names the last row seen, so rows inserted or
deleted between page fetches never make a page skip or repeat a row, and page N costs
the same as page 1 (an index range scan). The cursor is opaque to clients and signed
(SECRET_KEY, salted with the list's model and ordering): a forged, altered, truncated
or foreign cursor is a 400, never a value the database is asked to compare.
"""

import datetime
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.serializers import BaseSerializer
from rest_framework.utils.urls import replace_query_param

_DECODERS: dict[str, Callable[[str], Any]] = {
    "date": datetime.date.fromisoformat,
    "datetime": datetime.datetime.fromisoformat,
    "uuid": uuid.UUID,
    "str": str,
}


def _kind(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return "datetime"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, uuid.UUID):
        return "uuid"
    return "str"


MAX_CURSOR_CHARS = 1000

# The query parameters of every paginated list, for its schema (core/openapi.py).
PAGE_PARAMETERS = [
    OpenApiParameter(
        "cursor",
        {"type": "string", "pattern": "^[A-Za-z0-9_:-]+$", "maxLength": MAX_CURSOR_CHARS},
        description="The `next` link's cursor (opaque and signed: a cursor this server did not make is 400).",
    ),
    OpenApiParameter(
        "page_size",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": settings.PAGE_SIZE_MAX,
            "default": settings.PAGE_SIZE_DEFAULT,
        },
    ),
]


@dataclass
class Page:
    items: list[Any]
    next_url: str | None

    def as_dict(self, results: list[Any]) -> dict[str, Any]:
        return {"results": results, "next": self.next_url}

    def serialized(self, output: type[BaseSerializer]) -> dict[str, Any]:
        """as_dict with the items rendered by the serializer class `output`."""
        return self.as_dict(output(self.items, many=True).data)


def page_size_from(request: Request) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return settings.PAGE_SIZE_DEFAULT
    try:
        size = int(raw)
    except ValueError:
        raise ValidationError({"page_size": ["A whole number is required."]}) from None
    if not 1 <= size <= settings.PAGE_SIZE_MAX:
        raise ValidationError({"page_size": [f"Must be between 1 and {settings.PAGE_SIZE_MAX}."]})
    return size


def _salt(scope: str) -> str:
    return f"core.pagination.cursor:{scope}"


def encode_cursor(values: list[Any], *, scope: str) -> str:
    payload = [[_kind(v), v.isoformat() if hasattr(v, "isoformat") else str(v)] for v in values]
    return signing.dumps(payload, salt=_salt(scope), compress=False)


def decode_cursor(cursor: str, *, expected_length: int, scope: str) -> list[Any]:
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        payload = signing.loads(cursor, salt=_salt(scope))
        if not isinstance(payload, list) or len(payload) != expected_length:
            raise ValueError("wrong length")
        return [_DECODERS[kind](text) for kind, text in payload]
    except (signing.BadSignature, ValueError, TypeError, KeyError, UnicodeError):
        raise ValidationError({"cursor": ["Invalid cursor."]}) from None


def _after(fields: tuple[str, ...], values: list[Any]) -> Q:
    """Rows strictly after `values` in descending order on `fields` (a row comparison)."""
    condition = Q()
    for i, name in enumerate(fields):
        step = Q(**{f"{name}__lt": values[i]})
        for previous, value in zip(fields[:i], values[:i], strict=True):
            step &= Q(**{previous: value})
        condition |= step
    return condition


def paginate_desc(queryset: QuerySet, request: Request, fields: tuple[str, ...]) -> Page:
    """Return one page of `queryset` ordered by `fields`, all descending, last one unique."""
    return paginate_desc_across([queryset], request, fields)


def paginate_desc_across(querysets: list[QuerySet], request: Request, fields: tuple[str, ...]) -> Page:
    """paginate_desc over the union of querysets of one model (e.g. one per database
    cluster): each gives its first size + 1 rows after the cursor, merged in order."""
    size = page_size_from(request)
    scope = f"{querysets[0].model._meta.label}:{','.join(fields)}"
    cursor = request.query_params.get("cursor")
    # an empty cursor is not the first page: a client bug, 400
    after = (
        _after(fields, decode_cursor(cursor, expected_length=len(fields), scope=scope))
        if cursor is not None
        else None
    )
    rows: list[Any] = []
    for queryset in querysets:
        selected = queryset if after is None else queryset.filter(after)
        rows += selected.order_by(*(f"-{name}" for name in fields))[: size + 1]
    if len(querysets) > 1:
        rows.sort(key=lambda row: tuple(getattr(row, name) for name in fields), reverse=True)
        rows = rows[: size + 1]
    next_url = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        token = encode_cursor([getattr(last, name) for name in fields], scope=scope)
        next_url = replace_query_param(request.build_absolute_uri(), "cursor", token)
    return Page(items=rows, next_url=next_url)
