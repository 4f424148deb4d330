"""The durable purge queue: enqueue what the CDN could not take, drain it later.

Draining takes due rows with `FOR UPDATE SKIP LOCKED`, so several drainers (cron and a
sidecar, or two hosts) never send one row twice at the same time. A row that fails
again waits for the CDN's Retry-After, or an exponential backoff capped at 5 minutes,
and ends the pass.
"""

import datetime
import logging
from dataclasses import dataclass

from django.db import DatabaseError, transaction
from django.utils import timezone

from edgecache.backends import PurgeFailed, purge_backend
from edgecache.models import PurgeQueueEntry
from monitoring.metrics import cdn_purge_queue_depth

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300


@dataclass(frozen=True)
class DrainResult:
    sent: int
    failed: int
    left: int


def _backoff(attempts: int, retry_after: float | None) -> datetime.timedelta:
    seconds = min(2 ** max(attempts, 0), MAX_BACKOFF_SECONDS)
    return datetime.timedelta(seconds=max(seconds, retry_after or 0))


def purge_enqueue(*, tags: list[str], soft: bool, error: str, retry_after: float | None = None) -> None:
    """Store tags for a later retry. Never raises: if even Postgres fails, the object
    expires by its s-maxage, and the error is logged."""
    try:
        PurgeQueueEntry.objects.create(
            tags=tags,
            soft=soft,
            last_error=error[:1000],
            next_attempt_at=timezone.now() + datetime.timedelta(seconds=retry_after or 0),
        )
        queue_depth_refresh()
    except DatabaseError:
        logger.exception("could not queue an edge purge of %s; s-maxage bounds staleness", tags)


def queue_depth_refresh() -> int:
    depth = PurgeQueueEntry.objects.count()
    cdn_purge_queue_depth.set(depth)
    return depth


def purge_queue_drain(*, limit: int = 500) -> DrainResult:
    """Send due queued purges once. Rows that succeed are deleted."""
    backend = purge_backend()
    if backend is None:
        return DrainResult(sent=0, failed=0, left=queue_depth_refresh())
    sent = failed = 0
    with transaction.atomic():
        due = (
            PurgeQueueEntry.objects.select_for_update(skip_locked=True)
            .filter(next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at", "id")[:limit]
        )
        for entry in due:
            try:
                backend.purge(entry.tags, soft=entry.soft)
            except PurgeFailed as exc:
                failed += 1
                entry.tags = exc.remaining
                entry.attempts += 1
                entry.last_error = str(exc)[:1000]
                entry.next_attempt_at = timezone.now() + _backoff(entry.attempts, exc.retry_after)
                entry.save(update_fields=["tags", "attempts", "last_error", "next_attempt_at"])
                # The CDN is down or limiting us: the rest would fail too, and each try
                # would hold this transaction open for a timeout. The row just failed
                # now waits its backoff, so the next pass starts with the others.
                break
            else:
                entry.delete()
                sent += 1
    return DrainResult(sent=sent, failed=failed, left=queue_depth_refresh())


def purge_queue_retry(*, limit: int = 500) -> DrainResult:
    """One retry pass, closing the inline purge breaker once the CDN took everything."""
    from edgecache.purge import breaker_reset

    result = purge_queue_drain(limit=limit)
    if result.sent and not result.failed:
        breaker_reset()
    return result
