"""The device registration body in /v1/schema: one shape per push kind this server has
credentials for (CONTRACT §11), so a schema-valid body is one the API can accept."""

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension

from push.credentials import kind_configured
from push.models import DeviceKind
from push.serializers import APNS_TOKEN, FCM_TOKEN, WebPushSubscriptionInput


class DeviceInputExtension(OpenApiSerializerExtension):
    target_class = "push.serializers.DeviceInput"

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        subscription = auto_schema.resolve_serializer(WebPushSubscriptionInput, direction).ref
        shapes = {
            DeviceKind.WEBPUSH: ("subscription", subscription),
            DeviceKind.FCM: ("token", {"type": "string", "pattern": FCM_TOKEN.pattern}),
            DeviceKind.APNS: ("token", {"type": "string", "pattern": APNS_TOKEN.pattern}),
        }
        variants = [
            {
                "type": "object",
                "properties": {"kind": {"type": "string", "enum": [kind.value]}, field: schema},
                "required": ["kind", field],
                "additionalProperties": False,
            }
            for kind, (field, schema) in shapes.items()
            if kind_configured(kind)
        ]
        return {"oneOf": variants} if variants else {"not": {}}
