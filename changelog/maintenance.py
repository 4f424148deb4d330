"""Periodic upkeep run by the outbox worker: gauges, and the tombstone horizon."""

from django.conf import settings
from django.db import connections, transaction

from changelog.metrics import changelog_outbox_dead, changelog_outbox_depth, changelog_outbox_oldest_age
from changelog.selectors import outbox_status


def outbox_gauges_refresh(*, database: str = "default") -> None:
    status = outbox_status(database=database)
    changelog_outbox_depth.set(status.pending)
    changelog_outbox_dead.set(status.dead)
    changelog_outbox_oldest_age.set(status.oldest_pending_age_seconds)


_PRUNE = """
WITH pruned AS (
    DELETE FROM changelog_tombstone WHERE id IN (
        SELECT id FROM changelog_tombstone WHERE deleted_at < clock_timestamp() - make_interval(days => %s)
        LIMIT %s)
    RETURNING org_id, version
), horizon AS (
    SELECT org_id, max(version) AS version FROM pruned GROUP BY org_id
)
UPDATE org_changes SET pruned_through = greatest(org_changes.pruned_through, horizon.version)
FROM horizon WHERE org_changes.org_id = horizon.org_id
"""


def tombstones_prune(*, database: str = "default", batch_size: int = 5000) -> None:
    """Delete tombstones older than SYNC_TOMBSTONE_DAYS and raise each org's horizon, so
    a sync cookie from before it gets `reset` instead of missing a deletion."""
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        cursor.execute(_PRUNE, [settings.SYNC_TOMBSTONE_DAYS, batch_size])
