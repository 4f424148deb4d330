from django.urls import path

from realtime.api import RealtimeMetricsApi

urlpatterns = [path("metrics", RealtimeMetricsApi.as_view(), name="realtime-metrics")]
