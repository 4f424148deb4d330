"""The one place Redis connections come from, and the one breaker in front of them.

Every Redis use in the project (idempotency's fast path, replica write positions,
realtime caps, replay, publishing and stats, health, throttles) takes its client here
and makes its calls through `redis_call` / `aredis_call`:

- short timeouts (REDIS_SOCKET_TIMEOUT_SECONDS for connect and reads) and no retries
  (redis-py retries three times by default, which would quadruple a stall): a hung
  Redis costs a call one timeout;
- one circuit breaker per process (core/circuit_breaker.py): REDIS_BREAKER_FAILURES
  failures in a row, on any path, open it; while open, calls fail at once with
  `RedisUnavailable` (a RedisError, so callers' existing fallbacks apply) for
  REDIS_BREAKER_COOLDOWN_SECONDS; then one call probes. A dead or hung Redis therefore
  costs a few timeouts per process, not one per request and path.

Clients: one sync client per process and decoding (WSGI workers' threads share its
pool), one async client per event loop (redis.asyncio connections belong to a loop),
and a Pub/Sub client whose reads may wait indefinitely (a reader waiting for events),
which is not behind the breaker.
"""

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TypeVar

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.circuit_breaker import CircuitBreaker

logger = logging.getLogger("core.redis")

T = TypeVar("T")
ASYNC_POOL_CONNECTIONS = 32

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


class RedisUnavailable(redis.ConnectionError):
    """Refused without calling Redis: the breaker is open."""


def sync_redis(*, decode_responses: bool = True) -> redis.Redis:
    """This process's client for the current settings (read lazily: tests change them)."""
    return _sync_client(settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS, decode_responses)


@lru_cache(maxsize=8)
def _sync_client(url: str, timeout: float, decode_responses: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=decode_responses,
    )


def async_redis() -> aioredis.Redis:
    """The client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        timeout = max(settings.REDIS_SOCKET_TIMEOUT_SECONDS, 1.0)
        # Bounded and blocking: a burst of connects waits briefly for a connection
        # instead of opening hundreds (or failing with "Too many connections").
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=ASYNC_POOL_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )
        client = aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        _async_clients[loop] = client
    return client


def async_pubsub_redis() -> aioredis.Redis:
    """A client whose reads may block indefinitely (a Pub/Sub reader waits for events)."""
    return aioredis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1.0, socket_keepalive=True, decode_responses=True
    )


def sync_pubsub_redis(*, timeout: float) -> redis.Redis:
    """A client for a thread that waits on a subscription (the org directory's
    listener): not behind the breaker, its reads bounded by `timeout`."""
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 1.0),
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=True,
    )


def redis_breaker() -> CircuitBreaker:
    return _breaker(
        settings.REDIS_URL, settings.REDIS_BREAKER_FAILURES, settings.REDIS_BREAKER_COOLDOWN_SECONDS
    )


@lru_cache(maxsize=8)
def _breaker(url: str, failures: int, cooldown: float) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=failures, cooldown_seconds=cooldown)


# Redis did not answer (a reply such as "no such key", ResponseError, is an answer).
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError)


def _failed(breaker: CircuitBreaker, exc: BaseException) -> None:
    if breaker.record_failure():
        logger.warning("redis unavailable (%s): circuit open, callers fall back", type(exc).__name__)


def _answered(breaker: CircuitBreaker) -> None:
    if breaker.has_failures:
        breaker.record_success()


def redis_call(call: Callable[[], T]) -> T:
    """Run one Redis call behind the breaker; RedisError (RedisUnavailable while open)
    when Redis does not answer."""
    breaker = redis_breaker()
    if not breaker.allow():
        raise RedisUnavailable("redis circuit open")
    try:
        result = call()
    except _UNREACHABLE as exc:
        _failed(breaker, exc)
        raise
    except redis.RedisError:
        _answered(breaker)
        raise
    _answered(breaker)
    return result


async def aredis_call(call: Callable[[], Awaitable[T]]) -> T:
    """redis_call for coroutines (same breaker)."""
    breaker = redis_breaker()
    if not breaker.allow():
        raise RedisUnavailable("redis circuit open")
    try:
        result = await call()
    except _UNREACHABLE as exc:
        _failed(breaker, exc)
        raise
    except redis.RedisError:
        _answered(breaker)
        raise
    _answered(breaker)
    return result
