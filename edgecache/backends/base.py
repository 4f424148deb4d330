"""What every purge backend does: send tags in batches over HTTP, and say exactly which
tags are still not purged when a call fails."""

import email.utils
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import httpx
from django.conf import settings

from monitoring.metrics import cdn_purges

_client: httpx.Client | None = None


def http_client() -> httpx.Client:
    """One keep-alive client per process (httpx.Client is thread-safe)."""
    global _client  # noqa: PLW0603 - a connection pool, not request state
    if _client is None:
        _client = httpx.Client(http2=False, follow_redirects=False)
    return _client


def timeout() -> httpx.Timeout:
    total = settings.CDN_PURGE_TIMEOUT_SECONDS
    return httpx.Timeout(total, connect=min(total, 0.5))


class _Headers(Protocol):
    def get(self, name: str, /) -> Any: ...


class PurgeAnswer(Protocol):
    """What a CDN answered to one purge call: an httpx response (the API CDNs), or the
    Varnish backend's lighter answer from the standard library's client."""

    @property
    def status_code(self) -> int: ...

    @property
    def is_success(self) -> bool: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> _Headers: ...


class PurgeFailed(Exception):
    """A purge that did not (fully) happen. `remaining` are the tags still to purge;
    `retry_after` is the CDN's Retry-After in seconds, when it gave one."""

    def __init__(self, message: str, *, remaining: Sequence[str], retry_after: float | None = None) -> None:
        super().__init__(message)
        self.remaining = list(remaining)
        self.retry_after = retry_after


def retry_after_seconds(response: PurgeAnswer) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class PurgeBackend:
    """Subclasses set `name` and `batch_size` and implement `send(batch, soft)`."""

    name: str = ""
    batch_size: int = 100

    def send(self, batch: list[str], *, soft: bool) -> PurgeAnswer:
        raise NotImplementedError

    def accepted(self, response: PurgeAnswer) -> bool:
        return response.is_success

    def purge(self, tags: Sequence[str], *, soft: bool = False) -> None:
        """Purge every tag, batch by batch; raise PurgeFailed naming what is left.

        A 429 or 503 whose Retry-After is at most CDN_PURGE_INLINE_RETRY_MAX_SECONDS is
        waited out once, here; a longer one goes back to the caller (the queue)."""
        unique = list(dict.fromkeys(tags))
        batches = [unique[i : i + self.batch_size] for i in range(0, len(unique), self.batch_size)]
        for index, batch in enumerate(batches):
            remaining = [tag for rest in batches[index:] for tag in rest]
            self._purge_batch(batch, soft=soft, remaining=remaining)

    def _purge_batch(self, batch: list[str], *, soft: bool, remaining: list[str]) -> None:
        inline_wait_left = settings.CDN_PURGE_INLINE_RETRY_MAX_SECONDS
        while True:
            response = self._call(lambda: self.send(batch, soft=soft), remaining)
            if self.accepted(response):
                cdn_purges.labels(provider=self.name, outcome="ok").inc()
                return
            wait = retry_after_seconds(response)
            limited = response.status_code in (429, 503)
            cdn_purges.labels(provider=self.name, outcome="rate_limited" if limited else "error").inc()
            if limited and wait is not None and wait <= inline_wait_left:
                inline_wait_left = -1.0  # once
                time.sleep(wait)
                continue
            raise PurgeFailed(
                f"{self.name} purge answered {response.status_code}: {response.text[:200]}",
                remaining=remaining,
                retry_after=wait,
            )

    def _call(self, send: Callable[[], PurgeAnswer], remaining: list[str]) -> PurgeAnswer:
        try:
            return send()
        except httpx.HTTPError as exc:
            cdn_purges.labels(provider=self.name, outcome="unreachable").inc()
            raise PurgeFailed(f"{self.name} unreachable: {exc!r}", remaining=remaining) from exc
