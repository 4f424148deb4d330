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

Redis down, slow or behind its circuit breaker: the position is UNKNOWN and the
client's reads go to the primary (unless it sent `X-DB-Position`); never a replica
that may be behind. Positions are kept for `position_ttl_seconds`, always longer than
the critical lag: past that, every replica allowed to serve reads has the write.
"""

import hashlib
import logging
import threading
import time

import redis
from django.conf import settings

from replicas.conf import replica_settings
from replicas.context import UNKNOWN_POSITION

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
_BREAKER_SECONDS = 2.0


def client_id(credentials: str) -> str:
    """Who the client is, before authentication: a hash of its credentials header."""
    return hashlib.sha256(credentials.encode()).hexdigest()[:40]


def _key(cluster: str, client: str) -> str:
    return f"{_KEY_PREFIX}{cluster}:{client}"


class PositionStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._client_url = ""
        self._script = None
        self._open_until = 0.0

    def _redis(self) -> redis.Redis:
        url = settings.REDIS_URL
        if self._client is None or self._client_url != url:
            with self._lock:
                timeout = settings.REDIS_SOCKET_TIMEOUT_SECONDS
                self._client = redis.Redis.from_url(
                    url, socket_connect_timeout=timeout, socket_timeout=timeout
                )
                self._client_url = url
                self._script = self._client.register_script(_RAISE_SCRIPT)
        return self._client

    def _available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _trip(self, action: str) -> None:
        self._open_until = time.monotonic() + _BREAKER_SECONDS
        logger.warning(
            "replicas: redis unavailable while %s positions; reads fall back to the primary", action
        )

    def load(self, cluster: str, clients: list[str]) -> int | None:
        """The newest stored position of these clients in `cluster`: None if none,
        UNKNOWN_POSITION if Redis fails."""
        if not self._available():
            return UNKNOWN_POSITION
        try:
            values = self._redis().mget([_key(cluster, client) for client in clients])
        except redis.RedisError:
            self._trip("reading")
            return UNKNOWN_POSITION
        found = [int(v, 16) for v in values if v]
        return max(found) if found else None

    def remember(self, cluster: str, clients: list[str], position: int) -> bool:
        if not self._available():
            return False
        ttl_ms = str(int(replica_settings().position_ttl_seconds * 1000))
        try:
            self._redis()
            for client in clients:
                self._script(keys=[_key(cluster, client)], args=[f"{position:016x}", ttl_ms])
        except redis.RedisError:
            self._trip("storing")
            return False
        return True


position_store = PositionStore()
