"""Brute-force protection for password logins (POST /v1/auth/token and /admin/login/).

Failures are counted in Redis per username and per client address, in a window of
AUTH_FAILURE_WINDOW_SECONDS that starts at the first failure. Once a username has
AUTH_MAX_FAILURES failures, or an address AUTH_MAX_FAILURES_PER_ADDRESS, every login
for it is refused with 429 and Retry-After until the window ends, even with the right
password (so guessing cannot go on by noticing which answer differs). A success clears
the username's count. Usernames are hashed in the keys.

Redis down: logins are not throttled (degrade open), never refused.
"""

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest

from accounts.redis_counters import counter_clear, counter_increment, counters_read
from core.redis_keys import key_pattern


@dataclass(frozen=True)
class LoginAttempt:
    username: str
    address: str


def client_address(request: HttpRequest) -> str:
    """The caller's address: REMOTE_ADDR, or the X-Forwarded-For entry added by the
    TRUSTED_PROXY_COUNT-th proxy (counted from the right; clients can forge the rest)."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            return forwarded[-hops][:64]
    return request.META.get("REMOTE_ADDR", "")[:64]


# Tagged by the hashed username / address; read together in a pipeline, one GET each.
def _username_key(username: str) -> str:
    digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return "auth:fail:user:{" + digest + "}"


def _address_key(address: str) -> str:
    return "auth:fail:addr:{" + hashlib.sha256(address.encode()).hexdigest()[:40] + "}"


key_pattern("accounts.login_failures_user", pattern="auth:fail:user:{<username sha256>}", hash_tag="username",
            sample=lambda s: _username_key(s.user_id))  # fmt: skip
key_pattern("accounts.login_failures_address", pattern="auth:fail:addr:{<address sha256>}", hash_tag="address",
            sample=lambda s: _address_key(s.client_id))  # fmt: skip


def login_blocked_for(attempt: LoginAttempt) -> int | None:
    """Seconds until this login may be tried again, or None when it may be tried now."""
    counts = counters_read([_username_key(attempt.username), _address_key(attempt.address)])
    if counts is None:
        return None
    (user_failures, user_ttl), (address_failures, address_ttl) = counts
    waits = []
    if user_failures >= settings.AUTH_MAX_FAILURES:
        waits.append(user_ttl)
    if address_failures >= settings.AUTH_MAX_FAILURES_PER_ADDRESS:
        waits.append(address_ttl)
    return max(waits) if waits else None


def login_failure_record(attempt: LoginAttempt) -> None:
    window = settings.AUTH_FAILURE_WINDOW_SECONDS
    counter_increment(_username_key(attempt.username), window_seconds=window)
    counter_increment(_address_key(attempt.address), window_seconds=window)


def login_success_record(attempt: LoginAttempt) -> None:
    counter_clear(_username_key(attempt.username))
