from django.urls import path

from monitoring.views import HealthApi, PartitionsVerifyApi

urlpatterns = [
    path("health", HealthApi.as_view(), name="system-health"),
    path("monitoring/partitions/verify", PartitionsVerifyApi.as_view(), name="partitions-verify"),
]
