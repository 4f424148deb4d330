"""Reads of the change log."""

import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connections


@dataclass(frozen=True)
class OutboxStatus:
    pending: int
    dead: int
    oldest_pending_age_seconds: float
    by_topic: dict[str, int]


def outbox_status(*, database: str = "default") -> OutboxStatus:
    with connections[database].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'dead'), "
            "coalesce(extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE state = 'pending')), 0) "
            "FROM changelog_outbox"
        )
        pending, dead, age = cursor.fetchone()
        cursor.execute("SELECT topic, count(*) FROM changelog_outbox GROUP BY topic ORDER BY topic")
        by_topic = {topic: count for topic, count in cursor.fetchall()}
    return OutboxStatus(pending=pending, dead=dead, oldest_pending_age_seconds=float(age), by_topic=by_topic)


def outbox_changes_between(
    *, database: str, org_id: uuid.UUID | str, after: int, before: int
) -> list[tuple[int, str, dict[str, Any], float]]:
    """(version, topic, data, committed_at) of the org's undelivered versioned changes with
    `after < version < before`, in version order (pending or dead: both not delivered)."""
    with connections[database].cursor() as cursor:
        cursor.execute(
            "SELECT version, topic, data, extract(epoch FROM created_at) FROM changelog_outbox "
            "WHERE org_id = %s AND version > %s AND version < %s ORDER BY version",
            [str(org_id), after, before],
        )
        rows = cursor.fetchall()
    # Django has psycopg load jsonb as text (JSONField decodes it itself).
    return [
        (v, topic, json.loads(data) if isinstance(data, str) else data, float(at))
        for v, topic, data, at in rows
    ]


def outbox_lowest_pending_version(*, database: str, org_id: uuid.UUID | str) -> int | None:
    with connections[database].cursor() as cursor:
        cursor.execute(
            "SELECT min(version) FROM changelog_outbox WHERE org_id = %s AND version IS NOT NULL",
            [str(org_id)],
        )
        value = cursor.fetchone()[0]
    return None if value is None else int(value)


def org_version_current(*, org_id: uuid.UUID | str, database: str = "default") -> int:
    with connections[database].cursor() as cursor:
        cursor.execute("SELECT version FROM org_changes WHERE org_id = %s", [str(org_id)])
        row = cursor.fetchone()
    return 0 if row is None else int(row[0])
