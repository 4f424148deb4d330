"""Request and response shapes of the push routes (CONTRACT §11)."""

import base64
import binascii
import re
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.serializers import StrictSerializer
from finance.currencies import ISO_4217, is_currency
from push.credentials import kind_configured
from push.models import DeviceKind
from push.webpush_endpoints import (
    MAX_ENDPOINT_LENGTH,
    EndpointRefused,
    webpush_endpoint_check,
    webpush_endpoint_pattern,
)

FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
APNS_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,100}$")
THRESHOLD_MAX_DIGITS = 14  # as an expense amount
THRESHOLD_DECIMAL_PLACES = 2


def _b64url_decode(value: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+={0,2}", value):
        raise serializers.ValidationError("Must be URL-safe base64.")
    try:
        return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise serializers.ValidationError("Must be URL-safe base64.") from None


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# JSON Schema cannot say "a point on the P-256 curve": the schema names a format
# (tests/schemathesis_hooks.py generates real keys for it).
@extend_schema_field({"type": "string", "format": "p256-public-key", "maxLength": 100})
class P256PublicKeyField(serializers.CharField):
    pass


@extend_schema_field({"type": "string", "pattern": "^[A-Za-z0-9_-]{22}={0,2}$"})
class AuthSecretField(serializers.CharField):
    pass


@extend_schema_field(
    {"type": "string", "maxLength": MAX_ENDPOINT_LENGTH, "pattern": webpush_endpoint_pattern()}
)
class EndpointField(serializers.CharField):
    pass


class WebPushKeysInput(StrictSerializer):
    p256dh = P256PublicKeyField(
        max_length=100, help_text="The browser's P-256 public key (65 bytes, URL-safe base64)."
    )
    auth = AuthSecretField(max_length=50, help_text="The 16-byte authentication secret (URL-safe base64).")

    def validate_p256dh(self, value: str) -> str:
        raw = _b64url_decode(value)
        try:
            if len(raw) != 65 or raw[0] != 4:
                raise ValueError
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise serializers.ValidationError("Must be an uncompressed P-256 public key.") from None
        return _b64url(raw)

    def validate_auth(self, value: str) -> str:
        raw = _b64url_decode(value)
        if len(raw) != 16:
            raise serializers.ValidationError("Must be 16 bytes.")
        return _b64url(raw)


class WebPushSubscriptionInput(StrictSerializer):
    """A browser's PushSubscription.toJSON()."""

    endpoint = EndpointField(max_length=MAX_ENDPOINT_LENGTH)
    expirationTime = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    keys = WebPushKeysInput()

    def validate_endpoint(self, value: str) -> str:
        try:
            return webpush_endpoint_check(value)
        except EndpointRefused as refusal:
            raise serializers.ValidationError(str(refusal)) from None


class DeviceInput(StrictSerializer):
    kind = serializers.ChoiceField(choices=DeviceKind.choices)
    subscription = WebPushSubscriptionInput(required=False, help_text="kind webpush only")
    token = serializers.CharField(required=False, max_length=4096, help_text="kind fcm or apns only")

    def validate_kind(self, value: str) -> str:
        if not kind_configured(value):
            raise serializers.ValidationError(
                "Push notifications of this kind are not configured on this server."
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        kind = attrs["kind"]
        if kind == DeviceKind.WEBPUSH:
            if "token" in attrs:
                raise serializers.ValidationError(
                    {"token": ["Not used with kind webpush; send subscription."]}
                )
            if "subscription" not in attrs:
                raise serializers.ValidationError(
                    {"subscription": ["This field is required for kind webpush."]}
                )
            subscription = attrs["subscription"]
            return {
                "kind": kind,
                "address": subscription["endpoint"],
                "p256dh": subscription["keys"]["p256dh"],
                "auth": subscription["keys"]["auth"],
            }
        if "subscription" in attrs:
            raise serializers.ValidationError({"subscription": [f"Not used with kind {kind}; send token."]})
        token = attrs.get("token")
        if token is None:
            raise serializers.ValidationError({"token": [f"This field is required for kind {kind}."]})
        pattern = FCM_TOKEN if kind == DeviceKind.FCM else APNS_TOKEN
        if not pattern.fullmatch(token):
            raise serializers.ValidationError({"token": [f"Not a valid {kind} token."]})
        return {"kind": kind, "address": token.lower() if kind == DeviceKind.APNS else token}


class DeviceOutput(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=DeviceKind.choices)
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()


class DevicePageOutput(serializers.Serializer):
    results = DeviceOutput(many=True)
    next = serializers.URLField(allow_null=True)


class VapidPublicKeyOutput(serializers.Serializer):
    public_key = serializers.CharField(help_text="The VAPID public key (URL-safe base64) for subscribe().")


def _thresholds_schema() -> dict[str, Any]:
    from core.openapi import decimal_pattern

    amount = {
        "type": "string",
        "pattern": decimal_pattern(
            THRESHOLD_MAX_DIGITS - THRESHOLD_DECIMAL_PLACES, THRESHOLD_DECIMAL_PLACES, positive=True
        ),
    }
    return {
        "type": "object",
        "properties": {code: amount for code in sorted(ISO_4217)},
        "additionalProperties": False,
        "description": 'Alert at or above this amount, per ISO 4217 currency: {"EUR": "500.00"}.',
    }


@extend_schema_field(_thresholds_schema())
class ThresholdsField(serializers.DictField):
    child = serializers.DecimalField(
        max_digits=THRESHOLD_MAX_DIGITS, decimal_places=THRESHOLD_DECIMAL_PLACES, min_value=Decimal("0.01")
    )

    def to_internal_value(self, data: Any) -> dict[str, Decimal]:
        values = super().to_internal_value(data)
        unknown = sorted(code for code in values if not is_currency(code))
        if unknown:
            raise serializers.ValidationError({code: ["Not an ISO 4217 currency code."] for code in unknown})
        return values


class LargeExpenseInput(StrictSerializer):
    enabled = serializers.BooleanField()
    thresholds = ThresholdsField(help_text='Alert at or above this amount, per currency: {"EUR": "500.00"}.')


class PreferenceInput(StrictSerializer):
    large_expense = LargeExpenseInput()
    sync = serializers.BooleanField()


class LargeExpenseOutput(serializers.Serializer):
    enabled = serializers.BooleanField(source="large_expense_enabled")
    thresholds = serializers.DictField(child=serializers.CharField(), source="large_expense_thresholds")


class PreferenceOutput(serializers.Serializer):
    large_expense = LargeExpenseOutput(source="*")
    sync = serializers.BooleanField()
