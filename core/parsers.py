"""JSON parsing that never passes money through a float."""

import json
from decimal import Decimal
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class DecimalJSONParser(JSONParser):
    """Reads JSON numbers with a fraction as `Decimal`, exactly as sent.

    `1234567890.12` would be `1234567890.1199999` after a float; here it stays exact.
    NaN and Infinity are not JSON and are refused like any other syntax error.
    """

    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", "utf-8")
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
            return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
