from django.urls import path

from realtime.consumers import OrgEventsConsumer

websocket_urlpatterns = [
    path("v2/realtime/orgs/<uuid:org_id>/", OrgEventsConsumer.as_asgi()),
]
