from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.health import health_report
from monitoring.partitions import partitions_report
from monitoring.permissions import IsStaffOrMetricsToken


class HealthApi(APIView):
    """Open to all (load balancers, uptime checks); says nothing sensitive."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        status_code, body = health_report()
        return Response(body, status=status_code, headers={"Cache-Control": "no-store"})


class PartitionsVerifyApi(APIView):
    permission_classes = [IsStaffOrMetricsToken]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(partitions_report(), headers={"Cache-Control": "no-store"})
