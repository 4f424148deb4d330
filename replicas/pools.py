"""Connection pools: checked connections, and pools thrown away when their server
failed or came back.

A connection that answered a statement less than `DB_CHECK_SKIP_SECONDS` ago and whose
socket holds nothing unread is handed out without the check's round trip: a server
that restarted or closed the connection has left an error message or an end-of-file
there (`recently_alive`). Under load that spares every request one round trip.

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
import select
import time
from typing import Any

from django.conf import settings
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from psycopg_pool import ConnectionPool

from replicas.watchdog import watchdog

logger = logging.getLogger("replicas.pools")


def connection_pools() -> dict[str, ConnectionPool]:
    """Django's psycopg pools of this process, by alias (created on first use)."""
    return PostgresWrapper._connection_pools  # type: ignore[attr-defined]  # Django 5.1+; not in the stubs


def discard_pool(alias: str) -> None:
    pool = connection_pools().pop(alias, None)
    if pool is None:
        return
    try:
        pool.close(timeout=0)
    except Exception:
        logger.warning("replicas: closing the pool of %s failed", alias, exc_info=True)


_ALIVE_AT = "_hospitality_alive_at"


def mark_alive(connection: Any) -> None:
    """The connection just answered (its check or a statement)."""
    setattr(connection, _ALIVE_AT, time.monotonic())


def recently_alive(connection: Any) -> bool:
    """Whether the connection can skip its check: it answered within DB_CHECK_SKIP_SECONDS,
    psycopg does not know it as closed or broken, and nothing (an error notice, an EOF)
    waits on its socket. A zero-timeout poll, no round trip."""
    alive_at = getattr(connection, _ALIVE_AT, None)
    if alive_at is None or time.monotonic() - alive_at > settings.DB_CHECK_SKIP_SECONDS:
        return False
    if connection.closed or connection.broken:
        return False
    poller = select.poll()
    poller.register(connection.pgconn.socket, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def check_within_deadline(alias: str, connection: Any) -> None:
    """psycopg_pool's check (an empty statement), cut by the watchdog if the server does
    not answer in DB_CHECK_TIMEOUT_SECONDS."""
    with watchdog.guard(
        connection.pgconn.socket, settings.DB_CHECK_TIMEOUT_SECONDS, f"{alias} (connection check)"
    ):
        ConnectionPool.check_connection(connection)
    mark_alive(connection)
