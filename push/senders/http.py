"""HTTP for every sender: one client per process and protocol, and one reading of a
push service's answer.

Redirects are never followed (a push endpoint that redirects is refused, never a
hop to a host the SSRF guard did not check). A request that failed before any byte
reached the service (connect error, pool timeout) is retried; one whose fate is
unknown (the connection dropped after sending, a read timeout) is not: each
notification is sent at most once.
"""

import email.utils
import functools
import time

import httpx
from django.conf import settings

from push.senders.outgoing import Outcome, SendResult

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
GONE_STATUSES = frozenset({404, 410})
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.PUSH_SEND_TIMEOUT_SECONDS)


def _limits() -> httpx.Limits:
    size = max(settings.PUSH_WORKER_CONCURRENCY, 1)
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)


@functools.cache
def http1_client() -> httpx.Client:
    """Web Push services and FCM (HTTP/1.1, kept-alive connections)."""
    return httpx.Client(timeout=_timeout(), limits=_limits(), follow_redirects=False)


@functools.cache
def http2_client() -> httpx.Client:
    """APNs: HTTP/2 only (TLS with ALPN h2; an http:// endpoint means h2 with prior
    knowledge, for a local stand-in server)."""
    return httpx.Client(http1=False, http2=True, timeout=_timeout(), limits=_limits(), follow_redirects=False)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def result_from_status(response: httpx.Response, *, error: str = "") -> SendResult:
    code = response.status_code
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    detail = error or f"HTTP {code}"
    if 200 <= code < 300:
        return SendResult(Outcome.SENT, code)
    if code in GONE_STATUSES:
        return SendResult(Outcome.GONE, code, error=detail)
    if code in RETRY_STATUSES:
        return SendResult(Outcome.RETRY, code, retry_after=retry_after, error=detail)
    return SendResult(Outcome.REJECTED, code, error=detail)


def post(client: httpx.Client, url: str, **kwargs: object) -> httpx.Response | SendResult:
    """POST, or the SendResult of a transport failure."""
    try:
        return client.post(url, **kwargs)  # type: ignore[arg-type]
    except NOT_SENT_ERRORS as error:
        return SendResult(Outcome.RETRY, error=f"not sent: {type(error).__name__}")
    except httpx.TransportError as error:
        return SendResult(Outcome.REJECTED, error=f"outcome unknown, not resent: {type(error).__name__}")
