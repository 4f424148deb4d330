"""Liveness and dependency checks for GET /v1/system/health.

The answer names each dependency and whether it works, nothing more: no hosts, ports,
versions or error texts, since the route is open to anyone.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import redis
from django.conf import settings
from django.db import connections

from core.redis_clients import redis_call, sync_redis

logger = logging.getLogger("monitoring.health")

# The primary check runs here, so the answer comes within HEALTH_DEADLINE_SECONDS even
# when the primary hangs (CONTRACT §7: 503 within 3 s); a check still waiting is freed
# later by the connect timeout or the watchdog's deadlines.
_checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health-check")


def _select_one() -> bool:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    finally:
        connections["default"].close()  # back to the pool: this thread outlives the request


def check_primary() -> bool:
    try:
        return _checks.submit(_select_one).result(timeout=settings.HEALTH_DEADLINE_SECONDS)
    except FutureTimeout:
        logger.warning("health: the primary did not answer in %ss", settings.HEALTH_DEADLINE_SECONDS)
        return False
    except Exception:
        logger.warning("health: primary database check failed", exc_info=True)
        return False


def check_redis() -> bool:
    """PING through the shared client and breaker (an open breaker: failing, at once)."""
    try:  # inside redis_call: a cluster client connects on first use
        return bool(redis_call(lambda: sync_redis().ping()))
    except redis.RedisError:
        logger.warning("health: redis check failed", exc_info=True)
        return False


def health_report() -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): 503 when the primary is down, else 200 ok/degraded."""
    checks = {"database": check_primary(), "redis": check_redis()}
    body = {
        "status": "ok" if all(checks.values()) else "degraded",
        "checks": {name: "ok" if passed else "failing" for name, passed in checks.items()},
    }
    return (200 if checks["database"] else 503), body
