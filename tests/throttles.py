"""Helpers for the throttle tests: clear the shared counters, reach Redis directly."""

import contextlib

import redis
from django.conf import settings

from accounts.redis_counters import breaker_reset

PATTERNS = ("auth:fail:*", "rl:*")


def clear_throttle_counters() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    with contextlib.suppress(redis.RedisError):
        for pattern in PATTERNS:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    breaker_reset()
