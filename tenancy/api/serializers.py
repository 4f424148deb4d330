from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import StrictSerializer
from finance.api.serializers import CurrencyField
from tenancy.models import TIMEZONES, validate_timezone
from tenancy.roles import Role


class OrganizationInput(StrictSerializer):
    name = serializers.CharField(max_length=200)


class OrganizationOutput(serializers.Serializer):
    """An org as seen by one member (their role included)."""

    id = serializers.UUIDField(source="org.id")
    name = serializers.CharField(source="org.name")
    role = serializers.CharField()
    created_at = serializers.DateTimeField(source="org.created_at")


class MemberInput(StrictSerializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)


class MemberRoleInput(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


class MemberOutput(serializers.Serializer):
    user_id = serializers.UUIDField()
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()
    created_at = serializers.DateTimeField()


@extend_schema_field({"type": "string", "enum": sorted(TIMEZONES), "description": "IANA time zone name"})
class TimezoneField(serializers.CharField):
    pass


class PropertyInput(StrictSerializer):
    name = serializers.CharField(max_length=200)
    currency = CurrencyField()
    timezone = TimezoneField(max_length=64)

    def validate_timezone(self, value: str) -> str:
        try:
            validate_timezone(value)
        except Exception as exc:
            raise serializers.ValidationError(str(getattr(exc, "message", exc))) from None
        return value


class PropertyOutput(serializers.Serializer):
    id = serializers.UUIDField()
    org_id = serializers.UUIDField()
    name = serializers.CharField()
    currency = serializers.CharField()
    timezone = serializers.CharField()
    created_at = serializers.DateTimeField()
    version = serializers.IntegerField(help_text="The org's change number of this property's last change.")
