"""Purge after commit, before the response: the one call services make.

    purge_after_commit(tags)   # in a service, next to the write

When the transaction commits, the tags are purged at once, on the request's own
thread, so the write's response leaves only after the edge dropped the old copies
(CONTRACT §6). If the CDN cannot take the purge, the write still succeeds: the tags go
to the durable queue (edgecache.queue), retried by `manage.py cdn_purge_retry`, and
`s-maxage` bounds how stale the edge can be meanwhile.

After a failure, a per-process breaker sends purges straight to the queue for
CDN_PURGE_BREAKER_SECONDS, so an unreachable CDN costs writes a connect timeout once,
not on every write.
"""

import logging
import time
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from edgecache.backends import PurgeFailed, purge_backend
from edgecache.queue import purge_enqueue

logger = logging.getLogger(__name__)

_breaker_open_until = 0.0  # per process; a monotonic deadline, not request state


def purge_after_commit(tags: Iterable[str], *, soft: bool = False, using: str | None = None) -> None:
    """Purge `tags` once the current transaction commits (at once in autocommit)."""
    tag_list = list(dict.fromkeys(tags))
    transaction.on_commit(lambda: purge_now(tag_list, soft=soft), using=using)


def purge_now(tags: list[str], *, soft: bool = False) -> bool:
    """Purge now, or queue what could not be purged. True when nothing was queued."""
    global _breaker_open_until  # noqa: PLW0603
    backend = purge_backend()
    if backend is None or not tags:
        return True
    if time.monotonic() < _breaker_open_until:
        purge_enqueue(tags=tags, soft=soft, error="breaker open after a recent purge failure")
        return False
    try:
        backend.purge(tags, soft=soft)
    except PurgeFailed as exc:
        _breaker_open_until = time.monotonic() + settings.CDN_PURGE_BREAKER_SECONDS
        logger.warning("edge purge failed, queued for retry: %s", exc)
        purge_enqueue(tags=exc.remaining, soft=soft, error=str(exc), retry_after=exc.retry_after)
        return False
    return True


def breaker_reset() -> None:
    """Close the breaker (after the CDN is known to be back, and in tests)."""
    global _breaker_open_until  # noqa: PLW0603
    _breaker_open_until = 0.0
