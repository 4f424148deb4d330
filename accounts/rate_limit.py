"""Per-token request rate limit (CONTRACT §7): API_RATE_LIMIT_PER_MINUTE requests per
token per clock minute, counted in Redis across every server process; beyond it 429
with Retry-After (the seconds left in the minute). Requests without a token (login,
health, metrics bearer) are not counted here. Redis down: not limited (degrade open).

The count is the request's first Redis command; what else the request needs from Redis
before its handler rides in the same round trip (core.redis_riders):
the stored read-your-writes position its reads may need (replicas/positions.py) and
the claim of its Idempotency-Key (the view's `rate_limit_riders`, idempotency/api.py).
"""

import time
from typing import Any

from django.conf import settings
from knox.models import AuthToken
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from accounts.redis_counters import counter_increment, counter_increment_with
from core.redis_keys import key_pattern
from core.redis_riders import RideAlong
from replicas.positions import position_store

WINDOW_SECONDS = 60


def rate_key(digest: str, minute: int) -> str:
    """Tagged by the token (one key per command)."""
    return f"rl:{{{digest[:40]}}}:{minute}"


key_pattern("accounts.token_rate", pattern="rl:{<token digest>}:<minute>", hash_tag="token",
            sample=lambda s: rate_key(s.token_digest, 1))  # fmt: skip


class TokenRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        token = request.auth
        limit = settings.API_RATE_LIMIT_PER_MINUTE
        if not isinstance(token, AuthToken) or limit <= 0:
            return True
        minute = int(time.time()) // WINDOW_SECONDS
        key, window = rate_key(token.digest, minute), WINDOW_SECONDS + 1
        riders: list[RideAlong] = list(getattr(view, "rate_limit_riders", list)())
        ahead = position_store.read_ahead()
        if ahead is not None:
            riders.append(ahead)
        if riders:
            counted = counter_increment_with(key, window_seconds=window, riders=riders)
        else:
            counted = counter_increment(key, window_seconds=window)
        if counted is None or counted[0] <= limit:
            return True
        self._wait = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
        return False

    def wait(self) -> float | None:
        return self._wait
