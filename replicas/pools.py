"""Connection pools: checked connections, and pools thrown away when their server
failed or came back.

A primary's pooled connection is checked when it is handed out (replicas/primary), with
a deadline (`DB_CHECK_TIMEOUT_SECONDS`, enforced by the watchdog): on a hung server the
check fails instead of waiting forever. (psycopg_pool's own check, which Django's
CONN_HEALTH_CHECKS installs, has no deadline, and backs off a second and more between
failed checks: after a restart, with every idle connection dead, that is many seconds.)

psycopg_pool retries a dead server in the background with exponential backoff, so
after a server restarts its pool may wait many seconds before reconnecting, and keeps
connections that died with the server. When a replica leaves rotation on a connection
error, and again when it rejoins (and when the primary's breaker closes again), its
pool is closed and dropped; Django makes a new one on next use. Connections still
checked out are closed when they are returned.
"""

import logging
from typing import Any

from django.conf import settings
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from psycopg_pool import ConnectionPool

from replicas.watchdog import watchdog

logger = logging.getLogger("replicas.pools")


def discard_pool(alias: str) -> None:
    pool = PostgresWrapper._connection_pools.pop(alias, None)
    if pool is None:
        return
    try:
        pool.close(timeout=0)
    except Exception:
        logger.warning("replicas: closing the pool of %s failed", alias, exc_info=True)


def check_within_deadline(alias: str, connection: Any) -> None:
    """psycopg_pool's check (an empty statement), cut by the watchdog if the server does
    not answer in DB_CHECK_TIMEOUT_SECONDS."""
    with watchdog.guard(
        connection.pgconn.socket, settings.DB_CHECK_TIMEOUT_SECONDS, f"{alias} (connection check)"
    ):
        ConnectionPool.check_connection(connection)
