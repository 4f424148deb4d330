"""Serializer base that refuses fields it does not know."""

from typing import Any

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """A serializer whose input may only carry its writable fields.

    A typo such as `ammount` must not be silently dropped: the client would think it
    set a value. Unknown or read-only keys get a field error each.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)
