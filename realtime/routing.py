from typing import Any

from django.urls import path, re_path

from realtime.consumers import OrgEventsConsumer, UnknownRouteConsumer

# Channels routes ASGI apps with Django's path(): django-stubs types the view as an HTTP
# view, and types-channels wants its own URLPattern subclass (hence Any for URLRouter).
websocket_urlpatterns: list[Any] = [
    path("v2/realtime/orgs/<uuid:org_id>/", OrgEventsConsumer.as_asgi()),  # type: ignore[arg-type]
    re_path(r"", UnknownRouteConsumer.as_asgi()),  # type: ignore[arg-type]
]
