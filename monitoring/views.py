from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.exposition import prometheus_text
from monitoring.health import health_report
from monitoring.partitions import partitions_report
from monitoring.permissions import IsStaffOrMetricsToken
from monitoring.pool_gauges import refresh_pool_gauges
from monitoring.sampler import ensure_sampler_running
from monitoring.slo import aggregated_report


class HealthChecksOutput(serializers.Serializer):
    database = serializers.ChoiceField(choices=["ok", "failing"])
    redis = serializers.ChoiceField(choices=["ok", "failing"])


class HealthOutput(serializers.Serializer):
    """200 ok or degraded (Redis failing); 503 when the primary database fails."""

    status = serializers.ChoiceField(choices=["ok", "degraded"])
    checks = HealthChecksOutput()


class HealthApi(APIView):
    """Open to all (load balancers, uptime checks); says nothing sensitive."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses={200: HealthOutput, 503: HealthOutput})
    def get(self, request: Request) -> Response:
        status_code, body = health_report()
        return Response(body, status=status_code, headers={"Cache-Control": "no-store"})


class PartitionsVerifyApi(APIView):
    permission_classes = [IsStaffOrMetricsToken]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(partitions_report(), headers={"Cache-Control": "no-store"})


class PrometheusMetricsApi(APIView):
    """All server processes' metrics in the Prometheus text format."""

    permission_classes = [IsStaffOrMetricsToken]

    @extend_schema(responses={(200, "text/plain"): str})
    def get(self, request: Request) -> HttpResponse:
        ensure_sampler_running()
        refresh_pool_gauges()
        return HttpResponse(
            prometheus_text(), content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
        )


class AggregatedMetricsApi(APIView):
    """API, realtime, cache, pool and replica figures and the SLOs over a sliding window."""

    permission_classes = [IsStaffOrMetricsToken]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        ensure_sampler_running()
        refresh_pool_gauges()
        return Response(aggregated_report(), headers={"Cache-Control": "no-store"})
