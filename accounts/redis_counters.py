"""Fixed-window counters in Redis, shared by every server process (login throttles,
per-token rate limits).

Redis is reached through the project's one Redis module (core/redis_clients.py): short
socket timeouts and the one circuit breaker every Redis path shares. Every call
degrades open: when Redis is down or slow the counter answers "nothing counted" and
the request goes on; while the breaker is open Redis is not even asked.
"""

import logging
from collections.abc import Sequence
from typing import Any

import redis

from core.redis_clients import pipeline_eval, redis_breaker, redis_call, sync_redis
from core.redis_keys import atomic_script
from core.redis_riders import RideAlong, riders_answered

logger = logging.getLogger(__name__)

# KEYS[1]: counter. ARGV[1]: window seconds. Returns {count, ttl seconds}.
_INCREMENT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {count, redis.call('TTL', KEYS[1])}
"""
atomic_script("accounts.counter_increment", _INCREMENT, keys=lambda s: [f"rl:{{{s.token_digest[:40]}}}:1"])


def counter_increment(key: str, *, window_seconds: int) -> tuple[int, int] | None:
    """Add one; (count in the window, seconds until the window ends), None if Redis failed."""
    try:
        count, ttl = redis_call(lambda: sync_redis().eval(_INCREMENT, 1, key, window_seconds))
    except (redis.RedisError, OSError) as error:
        logger.info("shared counters: Redis unavailable, throttles are open for now: %s", error)
        return None
    return int(count), max(int(ttl), 1)


def counter_increment_with(
    key: str, *, window_seconds: int, riders: Sequence[RideAlong]
) -> tuple[int, int] | None:
    """`counter_increment` and the riders' commands in one round trip (a pipeline):
    (count, seconds left), None if Redis failed (each rider is then told `failed`)."""

    def run() -> tuple[list[Any], list[int]]:
        pipe = sync_redis(decode_responses=False).pipeline(transaction=False)
        pipeline_eval(pipe, _INCREMENT, [key], [window_seconds])
        sizes = [rider.queue(pipe) for rider in riders]
        return pipe.execute(), sizes

    try:
        ((count, ttl), *replies), sizes = redis_call(run)
    except (redis.RedisError, OSError) as error:
        logger.info("shared counters: Redis unavailable, throttles are open for now: %s", error)
        for rider in riders:
            rider.failed()
        return None
    riders_answered(list(riders), sizes, replies)
    return int(count), max(int(ttl), 1)


def counters_read(keys: list[str]) -> list[tuple[int, int]] | None:
    """(count, seconds left) for each key (0, 0 when absent); None if Redis failed."""

    def read() -> list:
        pipe = sync_redis().pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        return pipe.execute()

    try:
        values = redis_call(read)
    except (redis.RedisError, OSError) as error:
        logger.info("shared counters: Redis unavailable, throttles are open for now: %s", error)
        return None
    pairs = zip(values[0::2], values[1::2], strict=True)
    return [(int(count or 0), max(int(ttl), 1) if count else 0) for count, ttl in pairs]


def counter_clear(key: str) -> None:
    try:
        redis_call(lambda: sync_redis().delete(key))
    except (redis.RedisError, OSError) as error:
        logger.info("shared counters: could not clear %s: %s", key, error)


def breaker_reset() -> None:
    """Close the breaker (tests that restart Redis)."""
    redis_breaker().record_success()
