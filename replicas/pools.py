"""Request pools of replica aliases, thrown away when their server failed or came back.

psycopg_pool retries a dead server in the background with exponential backoff, so
after a replica restarts its pool may wait many seconds before reconnecting, and keeps
connections that died with the server. When a replica leaves rotation on a connection
error, and again when it rejoins, its pool is closed and dropped; Django makes a new
one on next use. Connections still checked out are closed when they are returned.
"""

import logging

from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper

logger = logging.getLogger("replicas.pools")


def discard_pool(alias: str) -> None:
    pool = PostgresWrapper._connection_pools.pop(alias, None)
    if pool is None:
        return
    try:
        pool.close(timeout=0)
    except Exception:
        logger.warning("replicas: closing the pool of %s failed", alias, exc_info=True)
