"""GET /v1/system/database/clusters: each cluster, its health and how many orgs it holds."""

import time
from typing import Any

from django.db import DatabaseError
from django.db.models import Count

from directory.models import OrgPlacement, PlacementState
from replicas.conf import replica_settings
from replicas.replica_set import DOWN, UNKNOWN, WARNING
from replicas.reports import HEALTHY, UNHEALTHY, checked_replica_set
from replicas.topology import topology


def _org_counts() -> dict[tuple[str, str], int] | None:
    """(cluster, state) -> orgs, from the directory; None when it cannot be read."""
    try:
        rows = (
            OrgPlacement.objects.using(topology().home.primary)
            .order_by()
            .values_list("cluster", "state")
            .annotate(orgs=Count("org_id"))
        )
        return {(cluster, state): orgs for cluster, state, orgs in rows}
    except DatabaseError:
        return None


def clusters_report(*, check_now: bool = False) -> dict[str, Any]:
    topo = topology()
    replicas = checked_replica_set(check_now=check_now)
    counts = _org_counts()
    now, critical = time.monotonic(), replica_settings().lag_critical_seconds
    clusters = []
    for cluster in topo.clusters.values():
        primary = replicas.primaries.get(cluster.name)
        primary_healthy = bool(primary and primary.healthy)
        states = [replicas.replicas[alias] for alias in cluster.replicas if alias in replicas.replicas]
        usable = [s for s in states if s.usable(now, critical)]
        if not primary_healthy or (states and not usable):
            status = UNHEALTHY
        elif len(usable) < len(states) or any(s.status == WARNING for s in usable):
            status = "degraded"
        else:
            status = HEALTHY
        orgs = None
        if counts is not None:
            orgs = {state: counts.get((cluster.name, state), 0) for state in PlacementState.values}
        clusters.append(
            {
                "name": cluster.name,
                "status": status,
                "directory": cluster.name == topo.directory_name,
                "default": cluster.name == topo.default_name,
                "primary": {
                    "alias": cluster.primary,
                    "healthy": primary_healthy,
                    "last_error": primary.last_error if primary else None,
                },
                "replicas": [
                    {
                        "alias": s.alias,
                        "status": DOWN if s.status == UNKNOWN else s.status,
                        "in_rotation": s.usable(now, critical),
                        "lag_seconds": None if s.lag_seconds is None else round(s.lag_seconds, 3),
                    }
                    for s in states
                ],
                "orgs": None if orgs is None else sum(orgs.values()),
                "orgs_by_state": orgs,
            }
        )
    # Placements naming a cluster this process does not know: a deploy error, shown.
    unknown = {} if counts is None else {c: n for (c, _), n in counts.items() if c not in topo.clusters}
    return {
        "directory_cluster": topo.directory_name,
        "default_cluster": topo.default_name,
        "directory_readable": counts is not None,
        "clusters": clusters,
        "orgs_on_unknown_clusters": unknown,
    }
