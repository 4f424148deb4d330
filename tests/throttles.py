"""Helpers for the throttle tests: clear the shared counters, reach Redis directly."""

import contextlib

import redis

from accounts.redis_counters import breaker_reset
from core.redis_clients import sync_redis

PATTERNS = ("auth:fail:*", "rl:*")


def clear_throttle_counters() -> None:
    client = sync_redis()  # on a cluster, SCAN visits every master
    with contextlib.suppress(redis.RedisError):
        for pattern in PATTERNS:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    breaker_reset()
