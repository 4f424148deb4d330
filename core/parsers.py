"""JSON parsing that never passes money through a float, refuses duplicate keys, and
refuses bodies over MAX_JSON_BODY_BYTES before reading them."""

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class JsonBodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "JSON body too large."
    default_code = "body_too_large"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`{"amount": "1", "amount": "900"}` is valid JSON, but which one counts differs
    between parsers (a proxy or an audit log may read the other): refuse it."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _declared_length(parser_context: Mapping[str, Any]) -> int | None:
    request = parser_context.get("request")
    meta = getattr(request, "META", None) or {}
    try:
        return int(meta.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class DecimalJSONParser(JSONParser):
    """Reads JSON numbers with a fraction as `Decimal`, exactly as sent.

    `1234567890.12` would be `1234567890.1199999` after a float; here it stays exact.
    NaN and Infinity are not JSON and are refused like any other syntax error, and so
    are duplicate keys. A body over MAX_JSON_BODY_BYTES is 413 before it is read
    (config/body_limit.py gives every body a Content-Length, chunked ones included).
    """

    def parse(
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:  # any JSON value, as json.loads answers
        parser_context = parser_context or {}
        limit = settings.MAX_JSON_BODY_BYTES
        declared = _declared_length(parser_context)
        if declared is not None and declared > limit:
            raise JsonBodyTooLarge()
        encoding = parser_context.get("encoding", "utf-8")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise JsonBodyTooLarge()
        try:
            return json.loads(
                raw.decode(encoding),
                parse_float=Decimal,
                parse_constant=_reject_constant,
                object_pairs_hook=_object_without_duplicates,
            )
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
