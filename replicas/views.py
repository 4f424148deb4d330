"""GET/POST /v1/system/database/...: staff users or the METRICS_TOKEN bearer only."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from directory.reports import clusters_report
from monitoring.permissions import IsStaffOrMetricsToken
from replicas.reports import health_report, lag_report, pool_report, stats_report

_NO_STORE = {"Cache-Control": "no-store"}


class SystemDatabaseApi(APIView):
    permission_classes = [IsStaffOrMetricsToken]


class ReplicaLagApi(SystemDatabaseApi):
    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(lag_report(), headers=_NO_STORE)


class ReplicaHealthApi(SystemDatabaseApi):
    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(health_report(), headers=_NO_STORE)


class ReplicaHealthCheckApi(SystemDatabaseApi):
    @extend_schema(request=None, responses=dict)
    def post(self, request: Request) -> Response:
        return Response(health_report(check_now=True), headers=_NO_STORE)


class ReplicaStatsApi(SystemDatabaseApi):
    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(stats_report(), headers=_NO_STORE)


class ConnectionPoolStatsApi(SystemDatabaseApi):
    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(pool_report(), headers=_NO_STORE)


class DatabaseClustersApi(SystemDatabaseApi):
    """CONTRACT §13: each cluster, its health and how many orgs it holds."""

    @extend_schema(responses=dict)
    def get(self, request: Request) -> Response:
        return Response(clusters_report(), headers=_NO_STORE)
