"""Serializer base that refuses fields it does not know and values of the wrong JSON type."""

from typing import Any

from rest_framework import serializers

# JSON types a field class accepts, checked before DRF's coercion (which would read 0 as
# "0", false as UUID(int=0) and "5" as 5): the schema states these types, and a value of
# another type is a client bug to answer with 400, not a guess. Most specific first.
_JSON_TYPES: tuple[tuple[type[serializers.Field], tuple[type, ...], str], ...] = (
    (serializers.BooleanField, (bool,), "A JSON boolean is required."),
    (serializers.IntegerField, (int,), "A JSON integer is required."),
    (serializers.CharField, (str,), "A JSON string is required."),
    (serializers.UUIDField, (str,), "A JSON string is required."),
    (serializers.DateField, (str,), "A JSON string is required."),
    (serializers.DateTimeField, (str,), "A JSON string is required."),
    (serializers.ChoiceField, (str,), "A JSON string is required."),
)


def _wrong_type(field: serializers.Field, value: Any) -> str | None:
    if value is None:
        return None  # allow_null is the field's own rule
    for field_class, json_types, message in _JSON_TYPES:
        if isinstance(field, field_class):
            if isinstance(value, bool) and bool not in json_types:
                return message  # bool is an int in Python, never in JSON
            return None if isinstance(value, json_types) else message
    return None


class StrictSerializer(serializers.Serializer):
    """A serializer whose input may only carry its writable fields, each of its JSON type.

    A typo such as `ammount` must not be silently dropped: the client would think it
    set a value. Unknown or read-only keys get a field error each.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name: field for name, field in self.fields.items() if not field.read_only}
            errors = {name: ["Unknown field."] for name in sorted(set(data) - set(writable))}
            for name, field in writable.items():
                message = _wrong_type(field, data.get(name))
                if name in data and message:
                    errors[name] = [message]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
