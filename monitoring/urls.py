from django.urls import path

from monitoring.views import AggregatedMetricsApi, HealthApi, PartitionsVerifyApi, PrometheusMetricsApi

urlpatterns = [
    path("health", HealthApi.as_view(), name="system-health"),
    path("metrics/aggregated", AggregatedMetricsApi.as_view(), name="metrics-aggregated"),
    path("metrics/prometheus", PrometheusMetricsApi.as_view(), name="metrics-prometheus"),
    path("monitoring/partitions/verify", PartitionsVerifyApi.as_view(), name="partitions-verify"),
]
