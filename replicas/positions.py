"""Read-your-writes across requests: each client's last WAL position, in Redis.

After a request that wrote commits, the middleware stores the primary's WAL insert
position under a hash of the request's Authorization header (the client is known
before DRF authenticates) and returns it in `X-DB-Position`. A later request of that
client may read from a replica only once the replica has replayed that position.

Why the insert position (`pg_current_wal_insert_lsn()`): it is at or after the end of
every commit record already made, even with `synchronous_commit=off`, where a commit
returns before its WAL is written or flushed, so the write or flush position could
still be short of it. Its cost: a position a few bytes past a page boundary is only
reached with the next WAL record; meanwhile that client reads from the primary.

Redis down, slow or behind the project's Redis circuit breaker (core/redis_clients.py):
the position is UNKNOWN and the
client's reads go to the primary (unless it sent `X-DB-Position`); never a replica
that may be behind. Positions are kept for `position_ttl_seconds`, always longer than
the critical lag: past that, every replica allowed to serve reads has the write.
"""

import hashlib
import logging
from typing import Any

import redis

from core.redis_clients import Pipeline, RedisUnavailable, pipeline_eval, redis_call, sync_redis
from core.redis_keys import atomic_script, key_pattern
from core.redis_riders import after_commit_riders_take, riders_answered
from replicas.conf import replica_settings
from replicas.context import UNKNOWN_POSITION, current_cluster, current_routing

logger = logging.getLogger("replicas.positions")

_KEY_PREFIX = "replicas:pos:"
# Values are 16 hex digits, so string order is numeric order; only ever raised.
_RAISE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if (not current) or current < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
atomic_script("replicas.position_raise", _RAISE_SCRIPT, keys=lambda s: [_key("default", s.client_id)])


def client_id(credentials: str) -> str:
    """Who the client is, before authentication: a hash of its credentials header."""
    return hashlib.sha256(credentials.encode()).hexdigest()[:40]


def _key(cluster: str, client: str) -> str:
    """Tagged by the client: a request's clients (token, org readers, session) are read
    with one GET each, in one pipeline, never with a multi-key command."""
    return f"{_KEY_PREFIX}{cluster}:{{{client}}}"


key_pattern("replicas.position", pattern="replicas:pos:<db cluster>:{<client id>}", hash_tag="client",
            sample=lambda s: _key("default", s.client_id))  # fmt: skip


def _failed(action: str, exc: redis.RedisError) -> None:
    if not isinstance(exc, RedisUnavailable):
        logger.warning("replicas: redis failed while %s positions; reads fall back to the primary", action)


def _newest(values: list[str | None]) -> int | None:
    found = [int(v, 16) for v in values if v]
    return max(found) if found else None


class PositionStore:
    def load(self, cluster: str, clients: list[str]) -> int | None:
        """The newest stored position of these clients in `cluster`: None if none,
        UNKNOWN_POSITION if Redis fails."""
        client = sync_redis()

        def read_all() -> list:
            with client.pipeline(transaction=False) as pipe:
                for name in clients:
                    pipe.get(_key(cluster, name))
                return pipe.execute()

        try:
            values = redis_call(read_all)
        except redis.RedisError as exc:
            _failed("reading", exc)
            return UNKNOWN_POSITION
        return _newest(values)

    def read_ahead(self) -> "PositionReadAhead | None":
        """The GETs of the stored positions this request's reads may need, for a caller
        that talks to Redis anyway (the per-token rate limit) to send in the same round
        trip (core.redis_riders.RideAlong); None when the reads cannot go to a
        replica or the position is known already. A GET's reads are routed after the
        access checks, so a request that makes its first Redis call there saves one
        round trip of two."""
        state = current_routing()
        cluster = current_cluster()
        if state is None or state.pinned or not state.client_ids or not cluster.replicas:
            return None
        if not replica_settings().enabled or not state.needs_stored_position(cluster):
            return None
        return PositionReadAhead(cluster.name, [_key(cluster.name, c) for c in state.client_ids])

    def remember(self, cluster: str, clients: list[str], position: int) -> bool:
        """Raise the clients' positions. Called after the write's commit: the riders
        waiting for the thread's first Redis call after a commit (core.redis_riders: the
        write's idempotent answer) go in the same round trip."""
        ttl_ms = str(int(replica_settings().position_ttl_seconds * 1000))
        client = sync_redis(decode_responses=False)
        riders = after_commit_riders_take()

        def raise_all() -> tuple[list[Any], list[int]]:
            with client.pipeline(transaction=False) as pipe:
                for name in clients:
                    pipeline_eval(pipe, _RAISE_SCRIPT, [_key(cluster, name)], [f"{position:016x}", ttl_ms])
                sizes = [rider.queue(pipe) for rider in riders]
                return pipe.execute(raise_on_error=False), sizes

        try:
            replies, sizes = redis_call(raise_all)
        except redis.RedisError as exc:
            for rider in riders:
                rider.failed()
            _failed("storing", exc)
            return False
        ours = replies[: len(clients)]
        riders_answered(riders, sizes, replies[len(clients) :])
        refused = next((reply for reply in ours if isinstance(reply, redis.RedisError)), None)
        if refused is not None:
            _failed("storing", refused)
            return False
        return True


class PositionReadAhead:
    """One GET per key (not an MGET: on a Redis Cluster the keys may live in other slots
    than the rate limit's counter); Redis failing leaves the position to the separate
    load (UNKNOWN: the primary), as without the read-ahead."""

    def __init__(self, cluster: str, keys: list[str]) -> None:
        self._cluster = cluster
        self._keys = keys

    def queue(self, pipe: Pipeline) -> int:
        for key in self._keys:
            pipe.get(key)
        return len(self._keys)

    def answered(self, replies: list[Any]) -> None:
        state = current_routing()
        if state is not None:
            values = [None if value is None else value.decode() for value in replies]
            state.preload_stored_position(self._cluster, _newest(values))

    def failed(self) -> None:
        pass


position_store = PositionStore()
