"""Fixed-window counters in Redis, shared by every server process (login throttles,
per-token rate limits).

Redis is reached through Django's cache connection (django-redis) with short socket
timeouts. Every call degrades open: when Redis is down or slow the counter answers
"nothing counted" and the request goes on; a per-process circuit breaker then skips
Redis for a few seconds, so an outage costs a few timeouts, not one per request.
"""

import logging

import redis
from django_redis import get_redis_connection

from idempotency.circuit_breaker import CircuitBreaker

logger = logging.getLogger(__name__)

_breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=5.0)

# KEYS[1]: counter. ARGV[1]: window seconds. Returns {count, ttl seconds}.
_INCREMENT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {count, redis.call('TTL', KEYS[1])}
"""


def _client() -> redis.Redis | None:
    if not _breaker.allow():
        return None
    return get_redis_connection("default")


def _failed(error: Exception) -> None:
    if _breaker.record_failure():
        logger.warning("shared counters: Redis unavailable, throttles are open for now: %s", error)


def counter_increment(key: str, *, window_seconds: int) -> tuple[int, int] | None:
    """Add one; (count in the window, seconds until the window ends), None if Redis failed."""
    client = _client()
    if client is None:
        return None
    try:
        count, ttl = client.eval(_INCREMENT, 1, key, window_seconds)
    except (redis.RedisError, OSError) as error:
        _failed(error)
        return None
    _breaker.record_success()
    return int(count), max(int(ttl), 1)


def counters_read(keys: list[str]) -> list[tuple[int, int]] | None:
    """(count, seconds left) for each key (0, 0 when absent); None if Redis failed."""
    client = _client()
    if client is None:
        return None
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        values = pipe.execute()
    except (redis.RedisError, OSError) as error:
        _failed(error)
        return None
    _breaker.record_success()
    pairs = zip(values[0::2], values[1::2], strict=True)
    return [(int(count or 0), max(int(ttl), 1) if count else 0) for count, ttl in pairs]


def counter_clear(key: str) -> None:
    client = _client()
    if client is None:
        return
    try:
        client.delete(key)
    except (redis.RedisError, OSError) as error:
        _failed(error)
        return
    _breaker.record_success()


def breaker_reset() -> None:
    """Close the breaker (tests that restart Redis)."""
    _breaker.record_success()
