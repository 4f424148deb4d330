from django.urls import path

from replicas.views import (
    ConnectionPoolStatsApi,
    DatabaseClustersApi,
    ReplicaHealthApi,
    ReplicaHealthCheckApi,
    ReplicaLagApi,
    ReplicaStatsApi,
)

urlpatterns = [
    path("replicas/lag", ReplicaLagApi.as_view(), name="replicas-lag"),
    path("replicas/health", ReplicaHealthApi.as_view(), name="replicas-health"),
    path("replicas/health-check", ReplicaHealthCheckApi.as_view(), name="replicas-health-check"),
    path("replicas/stats", ReplicaStatsApi.as_view(), name="replicas-stats"),
    path("clusters", DatabaseClustersApi.as_view(), name="database-clusters"),
    path("connection-pool/stats", ConnectionPoolStatsApi.as_view(), name="connection-pool-stats"),
]
