from django.urls import path, re_path

from realtime.consumers import OrgEventsConsumer, UnknownRouteConsumer

websocket_urlpatterns = [
    path("v2/realtime/orgs/<uuid:org_id>/", OrgEventsConsumer.as_asgi()),
    re_path(r"", UnknownRouteConsumer.as_asgi()),
]
