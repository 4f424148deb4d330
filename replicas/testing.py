"""Test support: replica aliases on the real standbys' copy of the test database."""

from django.conf import settings
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper


def point_replicas_at_test_database() -> None:
    test_name = connections["default"].settings_dict["NAME"]
    for alias in settings.REPLICA_ALIASES:
        params = connections.settings[alias]  # the same dict as settings.DATABASES[alias]
        params["NAME"] = test_name
        connection = connections[alias]
        connection.close()
        connection.settings_dict = params  # undo the mirror's switch to the primary
        pool = PostgresWrapper._connection_pools.pop(alias, None)
        if pool is not None:
            pool.close()


def close_all_pools() -> None:
    """Close every alias's pool (threads leave idle connections in them), so the test
    database can be dropped."""
    for alias, pool in list(PostgresWrapper._connection_pools.items()):
        pool.close()
        PostgresWrapper._connection_pools.pop(alias, None)
