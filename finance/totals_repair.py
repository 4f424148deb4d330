"""Checking and repairing the per-day totals (finance.totals) against the entries.

`org_totals_verify` compares, in one REPEATABLE READ snapshot, the sums of the org's
rows with its totals, key by key. Both are written in the same transactions, so in a
snapshot they agree unless something wrote around the services (a bug, a hand edit,
a restore, writes from a release that predates the totals).

`org_total_key_rebuild` repairs one key while the service runs. A naive refresh (sum
the rows, then overwrite the total) loses or doubles the writes that commit between
the sum and the overwrite: GitLab's counter refresh had to learn this. Here the sum
and the overwrite run under the org's counter lock, the lock every writer of the org
takes first and holds until it commits; so no write is half done while the key is
recomputed, and every later write adds its delta to the repaired value.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connections, transaction

from changelog.services import org_lock_take
from finance.models import ENTRY_MODELS
from finance.totals import TotalKey, totals_database

_KEYS = "day, property_id, currency, kind"

_COMPARE = f"""
WITH entries AS (
    SELECT occurred_on AS day, property_id, currency, 'expense'::varchar AS kind,
           sum(amount) AS total, count(*) AS count
    FROM finance_expense WHERE org_id = %(org_id)s GROUP BY occurred_on, property_id, currency
    UNION ALL
    SELECT occurred_on, property_id, currency, 'revenue'::varchar, sum(amount), count(*)
    FROM finance_revenue WHERE org_id = %(org_id)s GROUP BY occurred_on, property_id, currency
), totals AS (
    SELECT {_KEYS}, total, count FROM finance_daily_total
    WHERE org_id = %(org_id)s AND NOT (count = 0 AND total = 0)
)
SELECT {_KEYS}, entries.total, entries.count, totals.total, totals.count
FROM entries FULL JOIN totals USING ({_KEYS})
WHERE entries.total IS DISTINCT FROM totals.total OR entries.count IS DISTINCT FROM totals.count
ORDER BY {_KEYS}
"""

_EMPTY_KEYS = f"""
SELECT {_KEYS} FROM finance_daily_total WHERE org_id = %s AND count = 0 AND total = 0 ORDER BY {_KEYS}
"""

# Run under the org's counter lock: the key's entries as committed, written over the
# total (or the total removed when no entry is left). One statement.
_KEY_REBUILD = """
WITH entries AS (
    SELECT coalesce(sum(amount), 0) AS total, count(*) AS count FROM {table}
    WHERE org_id = %(org_id)s AND property_id = %(property_id)s AND occurred_on = %(day)s
      AND currency = %(currency)s
), written AS (
    INSERT INTO finance_daily_total (org_id, day, property_id, currency, kind, total, count)
    SELECT %(org_id)s, %(day)s, %(property_id)s, %(currency)s, %(kind)s, total, count FROM entries
    WHERE count > 0
    ON CONFLICT (org_id, day, property_id, currency, kind)
    DO UPDATE SET total = EXCLUDED.total, count = EXCLUDED.count
), removed AS (
    DELETE FROM finance_daily_total
    WHERE org_id = %(org_id)s AND day = %(day)s AND property_id = %(property_id)s
      AND currency = %(currency)s AND kind = %(kind)s AND (SELECT count FROM entries) = 0
)
SELECT total, count FROM entries
"""


@dataclass(frozen=True)
class TotalMismatch:
    key: TotalKey
    rows_total: Decimal | None  # None: no entry has this key
    rows_count: int
    stored_total: Decimal | None  # None: no total row for this key
    stored_count: int

    def describe(self) -> str:
        key = self.key
        return (
            f"org {key.org_id} {key.kind} {key.day.isoformat()} property {key.property_id} {key.currency}: "
            f"rows {self.rows_total or Decimal('0.00')} ({self.rows_count}), "
            f"totals {self.stored_total or Decimal('0.00')} ({self.stored_count})"
        )


def org_totals_verify(*, org_id: uuid.UUID | str) -> list[TotalMismatch]:
    """Every key of the org whose stored total differs from its rows, in one snapshot."""
    database = totals_database()
    outer = connections[database].in_atomic_block
    with transaction.atomic(using=database), connections[database].cursor() as cursor:
        if not outer:  # inside a caller's transaction, its own snapshot rules
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute(_COMPARE, {"org_id": str(org_id)})
        rows = cursor.fetchall()
    return [
        TotalMismatch(
            key=TotalKey(str(org_id), day, str(property_id), currency, kind),
            rows_total=rows_total,
            rows_count=rows_count or 0,
            stored_total=stored_total,
            stored_count=stored_count or 0,
        )
        for day, property_id, currency, kind, rows_total, rows_count, stored_total, stored_count in rows
    ]


def org_total_empty_keys(*, org_id: uuid.UUID | str) -> list[TotalKey]:
    """Keys left at zero by deletions (harmless; the rebuild prunes them)."""
    with connections[totals_database()].cursor() as cursor:
        cursor.execute(_EMPTY_KEYS, [str(org_id)])
        return [TotalKey(str(org_id), *row) for row in cursor.fetchall()]


def org_total_key_rebuild(*, key: TotalKey) -> tuple[Decimal, int]:
    """Recompute one key from its rows under the org's counter lock; (total, count)."""
    database = totals_database()
    params: dict[str, Any] = {
        "org_id": key.org_id,
        "day": key.day,
        "property_id": key.property_id,
        "currency": key.currency,
        "kind": key.kind,
    }
    with transaction.atomic(using=database):
        org_lock_take(org_id=key.org_id)
        with connections[database].cursor() as cursor:
            table = ENTRY_MODELS[key.kind]._meta.db_table  # never a string from outside into SQL
            cursor.execute(_KEY_REBUILD.format(table=table), params)
            total, count = cursor.fetchone()
    return total, count


@dataclass
class OrgRebuild:
    org_id: str
    repaired: int = 0  # keys whose total differed from their rows
    pruned: int = 0  # keys left at zero by deletions, removed


def org_totals_rebuild(
    *, org_id: uuid.UUID | str, on_key: Callable[[OrgRebuild, TotalKey], None] | None = None
) -> OrgRebuild:
    """Repair every differing key of the org and prune its empty ones, each key under
    its own short hold of the org's lock (writers wait milliseconds, not the whole run)."""
    progress = OrgRebuild(org_id=str(org_id))
    for mismatch in org_totals_verify(org_id=org_id):
        org_total_key_rebuild(key=mismatch.key)
        progress.repaired += 1
        if on_key:
            on_key(progress, mismatch.key)
    for key in org_total_empty_keys(org_id=org_id):
        org_total_key_rebuild(key=key)
        progress.pruned += 1
        if on_key:
            on_key(progress, key)
    return progress
