"""The bodies of the /v1/system/database/ endpoints and of `replica_healthcheck`.

They describe this server process's view (each process runs its own checker); a
report asked of a process that has never checked runs one check first.
"""

import time
from datetime import datetime
from typing import Any

from django.conf import settings

from monitoring import metrics
from replicas.checker import checker
from replicas.conf import replica_settings
from replicas.pools import connection_pools
from replicas.replica_set import DOWN, UNKNOWN, WARNING, ReplicaSet, replica_set
from replicas.stats import routing_stats

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"


def checked_replica_set(*, check_now: bool = False) -> ReplicaSet:
    replicas = replica_set()
    never_checked = any(p.healthy is None for p in replicas.primaries.values())
    if check_now or never_checked:
        replicas = checker.check_now()
    return replicas


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def overall_status(replicas: ReplicaSet) -> str:
    now, critical = time.monotonic(), replica_settings().lag_critical_seconds
    if not all(p.healthy for p in replicas.primaries.values()):
        return UNHEALTHY
    states = list(replicas.replicas.values())
    usable = [s for s in states if s.usable(now, critical)]
    if states and not usable:
        return UNHEALTHY
    if len(usable) < len(states) or any(s.status == WARNING for s in usable):
        return DEGRADED
    return HEALTHY


def lag_report() -> dict[str, Any]:
    replicas = checked_replica_set()
    config = replica_settings()
    return {
        "thresholds": {
            "warning_seconds": config.lag_warning_seconds,
            "critical_seconds": config.lag_critical_seconds,
        },
        "replicas": [
            {
                "alias": s.alias,
                "cluster": s.cluster,
                "lag_seconds": None if s.lag_seconds is None else round(s.lag_seconds, 3),
                "lag_bytes": s.lag_bytes,
                "status": DOWN if s.status == UNKNOWN else s.status,
            }
            for s in replicas.replicas.values()
        ],
    }


def health_report(*, check_now: bool = False) -> dict[str, Any]:
    replicas = checked_replica_set(check_now=check_now)
    now, critical = time.monotonic(), replica_settings().lag_critical_seconds
    primaries = [
        {
            "alias": p.alias,
            "cluster": name,
            "healthy": bool(p.healthy),
            "last_checked_at": _iso(p.last_checked_at),
            "last_error": p.last_error,
        }
        for name, p in replicas.primaries.items()
    ]
    return {
        "status": overall_status(replicas),
        "primary": primaries[0],
        "primaries": primaries,
        "replicas": [
            {
                "alias": s.alias,
                "cluster": s.cluster,
                "healthy": s.status not in (DOWN, UNKNOWN) and s.last_error is None,
                "in_rotation": s.usable(now, critical),
                "status": s.status,
                "lag_seconds": None if s.lag_seconds is None else round(s.lag_seconds, 3),
                "last_checked_at": _iso(s.last_checked_at),
                "last_error": s.last_error,
            }
            for s in replicas.replicas.values()
        ],
    }


def stats_report() -> dict[str, Any]:
    return {"scope": "process", "replicas_enabled": replica_settings().enabled, **routing_stats.snapshot()}


def pool_report() -> dict[str, Any]:
    pools = {}
    for alias, params in settings.DATABASES.items():
        options = params.get("OPTIONS", {}).get("pool") or {}
        pool = connection_pools().get(alias)
        stats = pool.get_stats() if pool is not None else {}
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        row = {
            "open": pool is not None,
            "min_size": options.get("min_size", 0),
            "max_size": options.get("max_size", 0),
            "size": size,
            "in_use": max(0, size - idle),
            "idle": idle,
            "waiting": stats.get("requests_waiting", 0),
            "connection_errors": stats.get("connections_errors", 0),
        }
        pools[alias] = row
        for state in ("size", "in_use", "idle", "waiting"):
            metrics.db_pool_connections.labels(alias, state).set(row[state])
        metrics.db_pool_max_connections.labels(alias).set(row["max_size"])
    return {"scope": "process", "pools": pools}
