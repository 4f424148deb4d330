"""Copy this process's psycopg pool statistics into the db_pool_* gauges.

Gauges are `livesum`: each server process reports its own pools and the scrape adds
up the live ones. Only pools that exist are read; none is created here.
"""

from monitoring.metrics import db_pool_connections, db_pool_max_connections
from replicas.pools import connection_pools


def refresh_pool_gauges() -> None:
    for alias, pool in list(connection_pools().items()):
        stats = pool.get_stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        db_pool_connections.labels(alias, "size").set(size)
        db_pool_connections.labels(alias, "idle").set(idle)
        db_pool_connections.labels(alias, "in_use").set(max(size - idle, 0))
        db_pool_connections.labels(alias, "waiting").set(stats.get("requests_waiting", 0))
        db_pool_max_connections.labels(alias).set(stats.get("pool_max", pool.max_size))
