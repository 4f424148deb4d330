from django.urls import path

from push import api

urlpatterns = [
    path("push/vapid-public-key", api.VapidPublicKeyApi.as_view(), name="push-vapid-public-key"),
    path("devices", api.DeviceListCreateApi.as_view(), name="device-list"),
    path("devices/<uuid:device_id>", api.DeviceDetailApi.as_view(), name="device-detail"),
    path(
        "orgs/<uuid:org_id>/notification-preferences",
        api.NotificationPreferenceApi.as_view(),
        name="notification-preferences",
    ),
]
