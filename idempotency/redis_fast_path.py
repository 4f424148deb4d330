"""Redis as the fast path: in-flight claims and a cache of finished responses.

Redis is never the authority (Postgres is). Every call here may fail: it then
returns None / does nothing, counts a failure on the circuit breaker, and the request
carries on through Postgres alone, only slower. Timeouts are short
(REDIS_SOCKET_TIMEOUT_SECONDS) and never retried, and once the breaker is open a
dead or hung Redis costs nothing at all until the cooldown ends.
"""

import logging
import secrets
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from idempotency.circuit_breaker import CircuitBreaker
from idempotency.identity import IdempotencyScope
from idempotency.stored_response import StoredResponse

logger = logging.getLogger("idempotency.redis")

# KEYS: done, lock. ARGV: lock value, lock ttl (ms).
# -> {1, stored response} | {2, ""} claimed | {3, current lock value} held by another.
_CLAIM = """
local done = redis.call('GET', KEYS[1])
if done then return {1, done} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, ''} end
return {3, redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: done, lock. ARGV: our lock value or "", stored response or "", ttl (ms).
# Caches the response (if any) and deletes the lock only if it is still ours.
_FINISH = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


class ClaimOutcome(Enum):
    CLAIMED = 2  # ours: run the request
    DONE = 1  # a finished response is cached
    HELD = 3  # another request with this key is in flight


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    lock_value: bytes = b""  # ours, when CLAIMED
    stored: StoredResponse | None = None  # when DONE
    holder_fingerprint: bytes | None = None  # when HELD


class RedisFastPath:
    def __init__(self, *, url: str, timeout_seconds: float, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),  # a retry would double the stall; Postgres is the fallback
            health_check_interval=0,
        )
        self._claim = self._client.register_script(_CLAIM)
        self._finish = self._client.register_script(_FINISH)

    def claim(self, *, scope: IdempotencyScope, fingerprint: bytes, lock_ttl_ms: int) -> Claim | None:
        """Claim the key for this request, or report why not; None when Redis is unavailable."""
        lock_value = f"{secrets.token_hex(8)}:{fingerprint.hex()}".encode("ascii")
        keys = [scope.redis_key("done"), scope.redis_key("lock")]
        reply = self._call(self._claim, keys, [lock_value, lock_ttl_ms])
        if reply is None:
            return None
        outcome, value = ClaimOutcome(int(reply[0])), reply[1]
        if outcome is ClaimOutcome.CLAIMED:
            return Claim(outcome, lock_value=lock_value)
        if outcome is ClaimOutcome.DONE:
            return Claim(outcome, stored=StoredResponse.from_bytes(value))
        holder = bytes.fromhex(value.decode("ascii").partition(":")[2]) if value else None
        return Claim(outcome, holder_fingerprint=holder)

    def finish(
        self, *, scope: IdempotencyScope, lock_value: bytes, stored: StoredResponse | None, ttl_ms: int
    ) -> None:
        """After the transaction: cache the kept response (if any) and release our claim (if any)."""
        if not lock_value and stored is None:
            return
        keys = [scope.redis_key("done"), scope.redis_key("lock")]
        self._call(self._finish, keys, [lock_value, stored.to_bytes() if stored else b"", max(ttl_ms, 1)])

    def _call(self, script: "redis.commands.core.Script", keys: list, args: list) -> list | None:
        if not self.breaker.allow():
            return None
        try:
            reply = script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            if self.breaker.record_failure():
                logger.warning(
                    "idempotency: redis unavailable (%s); circuit open, Postgres alone decides",
                    exc.__class__.__name__,
                )
            return None
        self.breaker.record_success()
        return reply


def fast_path() -> RedisFastPath:
    """This process's fast path for the current settings (read lazily, so tests can change them)."""
    return _fast_path_for(
        settings.REDIS_URL,
        settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        settings.IDEMPOTENCY_REDIS_BREAKER_FAILURES,
        settings.IDEMPOTENCY_REDIS_BREAKER_COOLDOWN_SECONDS,
    )


@lru_cache(maxsize=8)
def _fast_path_for(url: str, timeout: float, failures: int, cooldown: float) -> RedisFastPath:
    breaker = CircuitBreaker(failure_threshold=failures, cooldown_seconds=cooldown)
    return RedisFastPath(url=url, timeout_seconds=timeout, breaker=breaker)
