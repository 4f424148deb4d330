"""The primary's breaker: while the primary is down or hung, requests fail at once
(503 with Retry-After, core/errors.py) instead of each waiting out a pool timeout.

Connection failures on the primary (a pool timeout, a server gone mid-statement, a
check or statement cut by the watchdog) count toward DB_PRIMARY_BREAKER_FAILURES in a
row; then the breaker opens and the pool is discarded (its connections died with the
server, and its background reconnects back off for many seconds). While open, a new
connection is refused without trying the server. After DB_PRIMARY_BREAKER_COOLDOWN_SECONDS
one caller probes with a direct connection, bounded by the connect timeout and the
check deadline; success closes the breaker and the next connection comes from a fresh
pool, so requests succeed as soon as the primary accepts connections again. One breaker
per process and alias, shared by the process's threads.
"""

import logging
import threading
from typing import Any

import psycopg
from django.conf import settings

from core.circuit_breaker import CircuitBreaker
from core.db_errors import DatabaseUnavailable
from replicas.pools import discard_pool
from replicas.watchdog import watchdog

logger = logging.getLogger("replicas.primary")

_breakers: dict[str, CircuitBreaker] = {}
_lock = threading.Lock()


def breaker_of(alias: str) -> CircuitBreaker:
    with _lock:
        breaker = _breakers.get(alias)
        if breaker is None:
            breaker = _breakers[alias] = CircuitBreaker(
                failure_threshold=settings.DB_PRIMARY_BREAKER_FAILURES,
                cooldown_seconds=settings.DB_PRIMARY_BREAKER_COOLDOWN_SECONDS,
            )
        return breaker


def reset_breakers() -> None:
    """Forget every breaker (tests, and settings changes)."""
    with _lock:
        _breakers.clear()


def primary_failed(alias: str, reason: str) -> None:
    if breaker_of(alias).record_failure():
        logger.error("primary %s unavailable (%s): refusing connections for a while", alias, reason)
        discard_pool(alias)


def primary_succeeded(alias: str) -> None:
    breaker = breaker_of(alias)
    if breaker.has_failures:
        breaker.record_success()


def before_connect(alias: str, connect_params: dict[str, Any]) -> None:
    """Raise DatabaseUnavailable while the breaker is open; in half-open state probe
    the server directly (one caller per process), and on success start a fresh pool."""
    breaker = breaker_of(alias)
    if not breaker.is_open:
        return
    if not breaker.allow():
        raise DatabaseUnavailable(f"primary {alias} is unavailable (breaker open)")
    try:
        _probe(alias, connect_params)
    except BaseException as exc:
        breaker.record_failure()
        raise DatabaseUnavailable(f"primary {alias} is still unavailable") from exc
    discard_pool(alias)  # connections made before the outage are dead
    breaker.record_success()
    logger.warning("primary %s answers again", alias)


def _probe(alias: str, connect_params: dict[str, Any]) -> None:
    params = {k: v for k, v in connect_params.items() if k not in ("cursor_factory", "context")}
    with (
        psycopg.connect(**params, autocommit=True) as conn,
        watchdog.guard(conn.pgconn.socket, settings.DB_CHECK_TIMEOUT_SECONDS, f"{alias} (probe)"),
    ):
        conn.execute("SELECT 1")
