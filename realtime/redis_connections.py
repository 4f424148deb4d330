"""Redis clients for realtime: one sync client per process (publishers in WSGI
workers) and one async client per event loop (consumers under uvicorn).

Commands get REDIS_SOCKET_TIMEOUT_SECONDS, so a hung Redis costs a write at most that
long; the Pub/Sub reader gets its own connection without a read timeout.
"""

import asyncio
import weakref
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

ASYNC_POOL_CONNECTIONS = 32

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


@cache
def sync_redis() -> redis.Redis:
    timeout = settings.REDIS_SOCKET_TIMEOUT_SECONDS
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def async_redis() -> aioredis.Redis:
    """The client of the running event loop (redis.asyncio connections are per loop)."""
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
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def async_pubsub_redis() -> aioredis.Redis:
    """A client whose reads may block indefinitely (a Pub/Sub reader waits for events)."""
    return aioredis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1.0, socket_keepalive=True, decode_responses=True
    )
