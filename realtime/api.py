"""GET /v2/realtime/metrics (staff or METRICS_TOKEN): figures across all processes."""

import redis
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.permissions import IsStaffOrMetricsToken
from realtime.connection_limits import live_connections_count
from realtime.stats import stats_snapshot


class RealtimeMetricsApi(APIView):
    permission_classes = [IsStaffOrMetricsToken]

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        try:
            body = {"connections": live_connections_count(), **stats_snapshot()}
        except redis.RedisError:
            return Response({"detail": "Realtime figures unavailable: Redis unreachable."}, status=503)
        body["limits"] = {
            "max_connections_per_user": settings.MAX_CONNECTIONS_PER_USER,
            "max_connections_per_org": settings.MAX_CONNECTIONS_PER_ORG,
        }
        return Response(body, headers={"Cache-Control": "no-store"})
