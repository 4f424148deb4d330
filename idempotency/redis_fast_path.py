"""Redis as the fast path: in-flight claims and a cache of finished responses.

One key per scope holds either a claim ("L" + request fingerprint + owner token,
expiring after IDEMPOTENCY_LOCK_TTL_MS) or a finished response ("D" + stored
response, expiring with the record). That makes every step on the hot path a single
plain command (Redis >= 7.0):

    claim    SET key claim NX PX lock_ttl GET   nil: ours; else what holds the key
    success  SET key done PX ttl                 the claim simply becomes the answer
    failure  compare-and-delete (Lua)            only our own claim is released

The claim is sent in the request's first Redis round trip, the per-token rate limit's
(`ClaimAhead`, pipelined with its count), and alone only when there is no such call.

Redis is never the authority (Postgres is). Every call here may fail: it then
returns None / does nothing, counts a failure on the project's Redis circuit breaker
(core/redis_clients.py), and the request carries on through Postgres alone, only
slower. Timeouts are short (REDIS_SOCKET_TIMEOUT_SECONDS) and never retried, and once
the breaker is open a dead or hung Redis costs nothing at all until the cooldown ends.
"""

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import redis

from core.circuit_breaker import CircuitBreaker
from core.redis_clients import (
    Pipeline,
    RedisUnavailable,
    SyncClient,
    cluster_mode,
    redis_breaker,
    redis_call,
    sync_redis,
)
from core.redis_keys import KeySample, atomic_script, key_pattern
from idempotency.identity import IdempotencyScope
from idempotency.stored_response import StoredResponse

logger = logging.getLogger("idempotency.redis")

_CLAIM_PREFIX = b"L"
_DONE_PREFIX = b"D"
_FINGERPRINT_BYTES = 32

# KEYS[1] the scope's key, ARGV[1] our claim: delete it only if it is still ours.
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _sample_key(sample: KeySample) -> str:
    scope = IdempotencyScope.of(org_id=uuid.UUID(sample.org_id), user_id=uuid.UUID(sample.user_id), key="k")
    return scope.redis_key()


key_pattern("idempotency.scope", pattern="idem:{<org id hex>}:<user id hex>:<key sha256>", hash_tag="org",
            sample=_sample_key)  # fmt: skip
atomic_script("idempotency.release", _RELEASE, keys=lambda s: [_sample_key(s)])


class ClaimOutcome(Enum):
    CLAIMED = "claimed"  # ours: run the request
    DONE = "done"  # a finished response is cached
    HELD = "held"  # another request with this key is in flight


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    value: bytes = b""  # our claim, when CLAIMED (needed to release it)
    stored: StoredResponse | None = None  # when DONE
    holder_fingerprint: bytes = b""  # when HELD


class ClaimAhead:
    """A claim sent in a round trip the request makes anyway (the per-token rate
    limit's: core.redis_riders.RideAlong) instead of alone. `result` is unset until
    it was sent; then the claim, or None when Redis did not answer. If the request ends
    before its handler (the rate limit's 429), `release` frees a claim it got."""

    def __init__(self, *, scope: IdempotencyScope, fingerprint: bytes, lock_ttl_ms: int) -> None:
        self.scope = scope
        self.fingerprint = fingerprint
        self._value = _CLAIM_PREFIX + fingerprint + secrets.token_bytes(8)
        self._lock_ttl_ms = lock_ttl_ms
        self.sent = False
        self.result: Claim | None = None

    def command(self) -> tuple[Any, ...]:
        return ("SET", self.scope.redis_key(), self._value, "NX", "PX", self._lock_ttl_ms, "GET")

    def outcome(self, found: bytes | None) -> Claim:
        """What SET ... GET's answer (the value the key held, if any) means."""
        if found is None:
            return Claim(ClaimOutcome.CLAIMED, value=self._value)
        if found.startswith(_DONE_PREFIX):
            return Claim(ClaimOutcome.DONE, stored=StoredResponse.from_bytes(found[1:]))
        return Claim(ClaimOutcome.HELD, holder_fingerprint=found[1 : 1 + _FINGERPRINT_BYTES])

    def queue(self, pipe: Pipeline) -> int:
        pipe.execute_command(*self.command(), get=True)  # `get`: the reply is the old value
        return 1

    def answered(self, replies: list[Any]) -> None:
        self.sent, self.result = True, self.outcome(replies[0])

    def failed(self) -> None:
        logger.info("idempotency: redis failed with the rate limit's call; Postgres alone decides")
        self.sent, self.result = True, None

    def release(self) -> None:
        if self.result is not None and self.result.outcome is ClaimOutcome.CLAIMED:
            fast_path().release(scope=self.scope, claim_value=self.result.value)


def _store_command(scope: IdempotencyScope, stored: StoredResponse, ttl_ms: int) -> tuple[Any, ...]:
    """The answer replaces the claim, whoever holds it (Postgres agrees)."""
    return ("SET", scope.redis_key(), _DONE_PREFIX + stored.to_bytes(), "PX", max(ttl_ms, 1))


class StoreAhead:
    """A committed answer to cache, sent in the write's first Redis call after its
    commit (core.redis_riders: the write position raised for the org's readers) instead
    of alone. `sent` once that call was made, answered or not: the cache is best
    effort (a replay it misses is answered from Postgres)."""

    def __init__(self, *, scope: IdempotencyScope, stored: StoredResponse, ttl_ms: int) -> None:
        self._command = _store_command(scope, stored, ttl_ms)
        self.sent = False

    def queue(self, pipe: Pipeline) -> int:
        pipe.execute_command(*self._command)
        return 1

    def answered(self, replies: list[Any]) -> None:
        self.sent = True
        if isinstance(replies[0], Exception):
            logger.info("idempotency: redis refused the answer to cache (%s); Postgres keeps it", replies[0])

    def failed(self) -> None:
        self.sent = True
        logger.info(
            "idempotency: redis failed with the write position's call; the answer is kept in Postgres"
        )


class RedisFastPath:
    def __init__(self, client: SyncClient) -> None:
        self._client = client
        self._cluster = cluster_mode()
        self._release: Any = None  # registered on first use: a cluster client connects then

    @property
    def breaker(self) -> CircuitBreaker:
        return redis_breaker()

    def claim(self, *, scope: IdempotencyScope, fingerprint: bytes, lock_ttl_ms: int) -> Claim | None:
        """Claim the key for this request, or report what holds it; None when Redis is unavailable."""
        ahead = ClaimAhead(scope=scope, fingerprint=fingerprint, lock_ttl_ms=lock_ttl_ms)
        found = self._call(lambda: self._command(*ahead.command()))
        return None if found is _UNAVAILABLE else ahead.outcome(found)

    def store(self, *, scope: IdempotencyScope, stored: StoredResponse, ttl_ms: int) -> None:
        """Cache a committed response; it replaces the claim, whoever holds it (Postgres agrees)."""
        command = _store_command(scope, stored, ttl_ms)
        self._call(lambda: self._command(*command))

    def release(self, *, scope: IdempotencyScope, claim_value: bytes) -> None:
        """Free the key after a request that kept nothing, if our claim still holds it."""
        self._call(lambda: self._release_script()(keys=[scope.redis_key()], args=[claim_value]))

    def _release_script(self) -> Any:
        if self._release is None:
            self._release = self._client.register_script(_RELEASE)
        return self._release

    def _command(self, *args: Any) -> Any:
        """One command on a pooled connection, without redis-py's per-call machinery
        (retry wrapper, observability hooks): it halves the client CPU of the two
        commands every idempotent write makes. Any error drops the connection. On a
        cluster the client routes by the key's slot (and follows MOVED) instead."""
        if self._cluster:  # `get`: SET ... GET answers the old value, not a bool
            return self._client.execute_command(*args, get="GET" in args)
        pool = cast(redis.Redis, self._client).connection_pool  # one node: not a cluster
        connection = pool.get_connection()
        try:
            connection.send_command(*args)
            return connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def _call(self, command: Callable[[], Any]) -> Any:
        try:
            return redis_call(command)
        except RedisUnavailable:
            return _UNAVAILABLE
        except (redis.RedisError, OSError) as exc:
            logger.info("idempotency: redis failed (%s); Postgres alone decides", exc.__class__.__name__)
            return _UNAVAILABLE


_UNAVAILABLE: Any = object()
_fast_paths: dict[int, RedisFastPath] = {}


def fast_path() -> RedisFastPath:
    """This process's fast path on the shared client for the current settings."""
    client = sync_redis(decode_responses=False)
    path = _fast_paths.get(id(client))
    if path is None:
        path = _fast_paths[id(client)] = RedisFastPath(client)
    return path
