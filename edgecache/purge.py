"""Purge after commit, before the response: the edge's change-log handler.

Every recorded change of an org (changelog) is handed to `purge_for_change` right after
commit on the request's own thread, so the write's response leaves only after the edge
dropped the old copies (CONTRACT §6); if the process died first, the outbox worker
calls it within seconds. If the CDN cannot take the purge, the write still succeeds: the tags go
to the durable queue (edgecache.queue), retried by `manage.py cdn_purge_retry`, and
`s-maxage` bounds how stale the edge can be meanwhile.

After a failure, a per-process breaker (the project's one, core.circuit_breaker) sends
purges straight to the queue for CDN_PURGE_BREAKER_SECONDS, so an unreachable CDN costs
writes a connect timeout once, not on every write; then one purge probes the CDN.
"""

import functools
import logging

from django.conf import settings

from accounts.access_topics import ACCESS_TOPICS
from changelog.dispatch import Change
from core.circuit_breaker import CircuitBreaker
from edgecache.backends import PurgeFailed, purge_backend
from edgecache.queue import purge_enqueue
from edgecache.tags import finance_write_tags, org_section_tag, property_tag, user_access_tag

logger = logging.getLogger(__name__)


@functools.cache
def _breaker(cooldown_seconds: float) -> CircuitBreaker:
    """Per process, per cooldown setting (tests change it): one failure opens it."""
    return CircuitBreaker(failure_threshold=1, cooldown_seconds=cooldown_seconds)


def tags_for_change(change: Change) -> list[str]:
    """What a change makes stale at the edge. An access change (a token revoked, a
    member removed or demoted) drops the user's cached auth preflight answers."""
    if change.topic in ACCESS_TOPICS:
        return [user_access_tag(change.user_id)] if change.user_id else []
    if change.org_id is None:
        return []
    if change.entity in ("expense", "revenue"):
        return finance_write_tags(org_id=change.org_id, kind=change.entity)
    if change.entity == "property" and change.entity_id is not None:
        return [org_section_tag(change.org_id, "properties"), property_tag(change.entity_id)]
    return []


def purge_for_change(change: Change) -> None:
    """The change-log handler. Never raises for the CDN: what it cannot purge goes to
    the durable purge queue (`cdn_purge_retry`)."""
    tags = tags_for_change(change)
    if tags:
        purge_now(list(dict.fromkeys(tags)))


def purge_for_changes(changes: list[Change]) -> None:
    """The handler for several changes: one purge per org of the union of its changes'
    tags (a request's batch is one org). One org per PURGE lets the edge note the purge
    against that org alone; a PURGE naming several orgs counts for every object
    (docs/edge-cache.md)."""
    by_org: dict[str | None, list[str]] = {}
    for change in changes:
        by_org.setdefault(change.org_id, []).extend(tags_for_change(change))
    for tags in by_org.values():
        if tags:
            purge_now(list(dict.fromkeys(tags)))


def purge_now(tags: list[str], *, soft: bool = False) -> bool:
    """Purge now, or queue what could not be purged. True when nothing was queued."""
    backend = purge_backend()
    if backend is None or not tags:
        return True
    breaker = _breaker(settings.CDN_PURGE_BREAKER_SECONDS)
    if not breaker.allow():
        purge_enqueue(tags=tags, soft=soft, error="breaker open after a recent purge failure")
        return False
    try:
        backend.purge(tags, soft=soft)
    except PurgeFailed as exc:
        breaker.record_failure()
        logger.warning("edge purge failed, queued for retry: %s", exc)
        purge_enqueue(tags=exc.remaining, soft=soft, error=str(exc), retry_after=exc.retry_after)
        return False
    if breaker.has_failures:
        breaker.record_success()
    return True


def breaker_reset() -> None:
    """Close the breaker (after the CDN is known to be back, and in tests)."""
    _breaker.cache_clear()
