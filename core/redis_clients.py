"""The one place Redis connections come from, and the one breaker in front of them.

One Redis node (REDIS_URL, the default) or a Redis Cluster (REDIS_CLUSTER_NODES, comma-
separated host:port seeds): every client below is a redis-py `RedisCluster` then, which
routes each command by its key's slot and follows MOVED and failovers (docs/redis.md).
Features never care which: their multi-key commands and scripts keep their keys in one
slot by hash tag (core/redis_keys.py), and live events go through `publish_command()`
(SPUBLISH on a cluster, PUBLISH on one node).

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
and Pub/Sub clients whose reads may wait indefinitely (a reader waiting for events),
which are not behind the breaker: on one node one client, on a cluster one per master
(`async_pubsub_target`), for sharded Pub/Sub.
"""

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import lru_cache
from typing import TypeVar, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.crc import key_slot as _key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from core.circuit_breaker import CircuitBreaker

logger = logging.getLogger("core.redis")

T = TypeVar("T")
ASYNC_POOL_CONNECTIONS = 32

# Per node, per process and event loop: a burst of socket connects on one cluster node.
ASYNC_CLUSTER_NODE_CONNECTIONS = 64

SyncClient = redis.Redis | redis.RedisCluster
AsyncClient = aioredis.Redis | aiocluster.RedisCluster
Pipeline = (
    redis.client.Pipeline
    | redis.cluster.ClusterPipeline
    | aioredis.client.Pipeline
    | aiocluster.ClusterPipeline
)

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient]" = (
    weakref.WeakKeyDictionary()
)


class RedisUnavailable(redis.ConnectionError):
    """Refused without calling Redis: the breaker is open."""


def cluster_nodes() -> tuple[tuple[str, int], ...]:
    """The cluster's seed nodes from REDIS_CLUSTER_NODES; () on a single node."""
    seeds = []
    for seed in settings.REDIS_CLUSTER_NODES:
        host, _, port = seed.strip().rpartition(":")
        if seed.strip():
            seeds.append((host or "127.0.0.1", int(port)))
    return tuple(seeds)


def cluster_mode() -> bool:
    return bool(cluster_nodes())


def key_slot(key: str) -> int:
    """The cluster slot of a key or shard channel (hash tags honoured), as Redis computes it."""
    return _key_slot(key.encode())


def publish_command() -> str:
    """How live announcements go out: SPUBLISH on a cluster (only the shard that owns
    the channel's slot carries it), PUBLISH on one node."""
    return "SPUBLISH" if cluster_mode() else "PUBLISH"


def pipeline_eval(pipe: Pipeline, script: str, keys: Sequence[str], args: Sequence[str | int]) -> None:
    """Queue an EVAL of `script` in `pipe`, on one node or a cluster, sync or async.

    A sync cluster pipeline's eval() is another method (it takes no script: TypeError),
    so the command goes as such: the same EVAL on the wire, routed by the first key's
    slot on a cluster. There it names its node: without one, redis-py (8.1) asks a node
    for the keys of every EVAL in a sync cluster pipeline (COMMAND GETKEYS, a round trip
    of its own before the pipeline's); a MOVED answer still re-routes it by slot."""
    if isinstance(pipe, redis.cluster.ClusterPipeline) and keys:
        node = pipe.get_node_from_key(keys[0])
        pipe.execute_command("EVAL", script, len(keys), *keys, *args, target_nodes=node)
        return
    pipe.execute_command("EVAL", script, len(keys), *keys, *args)


def sync_redis(*, decode_responses: bool = True) -> SyncClient:
    """This process's client for the current settings (read lazily: tests change them)."""
    timeout = settings.REDIS_SOCKET_TIMEOUT_SECONDS
    seeds = cluster_nodes()
    if seeds:
        return _sync_cluster_client(seeds, timeout, decode_responses)
    return _sync_client(settings.REDIS_URL, timeout, decode_responses)


class LazyRedisCluster:
    """A redis-py RedisCluster made on first use. Its constructor reads the slot map
    from the seeds (network I/O that may fail), which must happen inside a Redis call
    (breaker, callers' fallbacks), not where a feature merely takes its client."""

    def __init__(self, factory: Callable[[], redis.RedisCluster]) -> None:
        self._factory = factory
        self._client: redis.RedisCluster | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return getattr(self._client, name)


@lru_cache(maxsize=8)
def _sync_cluster_client(
    seeds: tuple[tuple[str, int], ...], timeout: float, decode_responses: bool
) -> SyncClient:
    # No retries, as on one node; a call that meets a dead master fails once, and the
    # client reloads the slot map on the next call (it follows the promoted replica).
    def connect() -> redis.RedisCluster:
        return redis.RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in seeds],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=False,
            decode_responses=decode_responses,
        )

    return LazyRedisCluster(connect)  # type: ignore[return-value]  # a RedisCluster once used


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


def async_redis() -> AsyncClient:
    """The client of the running event loop."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        timeout = max(settings.REDIS_SOCKET_TIMEOUT_SECONDS, 1.0)
        seeds = cluster_nodes()
        if seeds:
            client = aiocluster.RedisCluster(
                startup_nodes=[aiocluster.ClusterNode(host, port) for host, port in seeds],
                max_connections=ASYNC_CLUSTER_NODE_CONNECTIONS,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=AsyncRetry(NoBackoff(), 0),
                require_full_coverage=False,
                decode_responses=True,
            )
            _async_clients[loop] = client
            return client
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
        # A client given a pool takes its connections' settings from the pool: theirs
        # default to no retries (a `retry` here would be ignored).
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def async_pubsub_redis() -> aioredis.Redis:
    """A client whose reads may block indefinitely (a Pub/Sub reader waits for events)."""
    return aioredis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=1.0, socket_keepalive=True, decode_responses=True
    )


async def async_pubsub_target(channel: str) -> tuple[str, aioredis.Redis | None]:
    """Where a subscriber of `channel` connects: ("single", None) on one node (use
    async_pubsub_redis), else the name of the cluster master owning the channel's slot
    and a new client for that node alone (sharded Pub/Sub: SSUBSCRIBE there)."""
    if not cluster_mode():
        return "single", None
    cluster = async_redis()
    assert isinstance(cluster, aiocluster.RedisCluster)
    node = await aredis_call(lambda: _node_of(cluster, channel))
    # No retries: a lost shard connection must surface (the hub closes its sockets,
    # clients resume with last_event_id), never silently reconnect past a gap.
    client = aioredis.Redis(
        host=node.host,
        port=int(node.port),
        socket_connect_timeout=1.0,
        socket_keepalive=True,
        retry=AsyncRetry(NoBackoff(), 0),
        decode_responses=True,
    )
    return node.name, client


async def _node_of(cluster: aiocluster.RedisCluster, key: str) -> aiocluster.ClusterNode:
    await cluster.initialize()
    return cluster.nodes_manager.get_node_from_slot(key_slot(key))


async def async_topology_refresh() -> None:
    """Reload the cluster's slot map (after a lost shard connection: a failover)."""
    cluster = async_redis()
    if isinstance(cluster, aiocluster.RedisCluster):
        await cluster.nodes_manager.initialize()


def sync_pubsub_redis(*, timeout: float) -> redis.Redis:
    """A client for a thread that waits on a plain subscription (the org directory's
    listener): not behind the breaker, its reads bounded by `timeout`. On a cluster,
    plain PUBLISH reaches every node, so the first seed node serves."""
    if cluster_mode():
        host, _, port = settings.REDIS_CLUSTER_NODES[0].rpartition(":")
        url = f"redis://{host}:{port}/0"
    else:
        url = settings.REDIS_URL
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 1.0),
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        decode_responses=True,
    )


def redis_breaker() -> CircuitBreaker:
    target = ",".join(settings.REDIS_CLUSTER_NODES) or settings.REDIS_URL
    return _breaker(target, settings.REDIS_BREAKER_FAILURES, settings.REDIS_BREAKER_COOLDOWN_SECONDS)


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


# A cluster node did not answer (a master died?): reload the slot map before the next
# call, so calls follow a promoted replica instead of knocking at the dead master.
_sync_topology_stale = threading.Event()
_async_topology_stale: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, bool]" = (
    weakref.WeakKeyDictionary()
)


def _sync_topology_refresh() -> None:
    if _sync_topology_stale.is_set():
        _sync_topology_stale.clear()
        if cluster_mode():
            for decode in (True, False):
                cluster = cast(redis.RedisCluster, sync_redis(decode_responses=decode))  # cluster mode
                cluster.nodes_manager.initialize()


def _as_redis_error(exc: RedisClusterException) -> redis.ConnectionError:
    """redis-py's cluster errors outside the RedisError tree (no seed answers, no slot
    map yet): callers' RedisError fallbacks must apply to them too."""
    logger.warning("redis cluster unusable: %s", exc)
    return redis.ConnectionError(f"redis cluster unusable: {exc}")


@contextlib.contextmanager
def _counted(breaker: CircuitBreaker, topology_stale: Callable[[bool], None]) -> Iterator[None]:
    """Count the call inside on the breaker: no answer is a failure (and may be a
    failover: `topology_stale(cluster_error)` marks the slot map for a reload), an
    answer (an error reply too) a success. A cluster error leaves as a RedisError."""
    try:
        yield
    except _UNREACHABLE as exc:
        topology_stale(False)
        _failed(breaker, exc)
        raise
    except RedisClusterException as exc:
        topology_stale(True)
        _failed(breaker, exc)
        raise _as_redis_error(exc) from exc
    except redis.RedisError:
        _answered(breaker)
        raise
    _answered(breaker)


def _allowed_breaker() -> CircuitBreaker:
    breaker = redis_breaker()
    if not breaker.allow():
        raise RedisUnavailable("redis circuit open")
    return breaker


def redis_call(call: Callable[[], T]) -> T:
    """Run one Redis call behind the breaker; RedisError (RedisUnavailable while open)
    when Redis does not answer."""
    with _counted(_allowed_breaker(), lambda cluster_error: _sync_topology_stale.set()):
        _sync_topology_refresh()
        return call()


async def aredis_call(call: Callable[[], Awaitable[T]]) -> T:
    """redis_call for coroutines (same breaker)."""
    breaker = _allowed_breaker()
    loop = asyncio.get_running_loop()

    def topology_stale(cluster_error: bool) -> None:
        _async_topology_stale[loop] = cluster_error or cluster_mode()

    with _counted(breaker, topology_stale):
        if _async_topology_stale.pop(loop, False):
            await async_topology_refresh()
        return await call()
