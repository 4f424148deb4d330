"""How a property is rendered: the API's resource, also carried by change events."""

from typing import Any

from tenancy.models import Property


def property_output(prop: Property) -> dict[str, Any]:
    from tenancy.api.serializers import PropertyOutput

    return dict(PropertyOutput(prop).data)
