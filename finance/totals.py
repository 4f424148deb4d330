"""Per-day totals, kept in each finance write's transaction: the summary's read model.

Every entry counts once in the row of its key (org, day, property, currency, kind):
`total` is the sum of the key's amounts and `count` the number of its entries. A
create adds (+amount, +1), a delete (-amount, -1), an update that changes the amount
or the key applies -old and +new (two keys when the entry moves to another day,
property or currency, none when only the category or description changed).

All of a write's deltas go in one `INSERT ... ON CONFLICT DO UPDATE SET total = total +
EXCLUDED.total` statement, keys sorted; a create's and a delete's is the same statement
as the entry's own INSERT or DELETE (a CTE), so they cost no extra round trip (a
create's version and outbox row too). The org's counter row is taken first
(changelog.services.org_version_take, or a create's first CTE), so the lock order is always: org counter,
entry rows, totals rows; and since the repair (finance.totals_repair) takes the same
counter lock, it never races an increment.
"""

import datetime
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any, NamedTuple

from django.db import connections, router
from django.db.models import Field

from changelog.services import PreparedChange
from finance.models import DailyTotal, FinanceEntry
from tenancy.models import Property


class TotalKey(NamedTuple):
    org_id: str
    day: datetime.date
    property_id: str
    currency: str
    kind: str


class Delta(NamedTuple):
    total: Decimal
    count: int  # type: ignore[assignment]  # the column's name; shadows tuple.count, never called


COLUMNS = "org_id, day, property_id, currency, kind, total, count"


def _column_list(fields: list[Field]) -> str:
    """The columns of concrete fields (Django's "concrete" is "has a column"), for SQL."""
    return ", ".join(field.column for field in fields if field.column is not None)


CONFLICT = """
ON CONFLICT (org_id, day, property_id, currency, kind)
DO UPDATE SET total = finance_daily_total.total + EXCLUDED.total,
              count = finance_daily_total.count + EXCLUDED.count
"""


def entry_total_key(entry: FinanceEntry) -> TotalKey:
    return TotalKey(
        org_id=str(entry.org_id),
        day=entry.occurred_on,
        property_id=str(entry.property_id),
        currency=entry.currency,
        kind=entry.kind,
    )


def totals_database() -> str:
    """The org's primary, as for every other write of the org."""
    return router.db_for_write(DailyTotal)


def totals_add(*, deltas: dict[TotalKey, Delta]) -> None:
    """Apply `deltas` in one statement, keys in sorted order (deadlock-free with any
    other transaction that takes the same keys). Keys whose delta is zero are skipped;
    nothing at all is sent when every delta is zero."""
    changed = sorted((key, delta) for key, delta in deltas.items() if delta.total or delta.count)
    if not changed:
        return
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(changed))
    params: list[Any] = []
    for key, delta in changed:
        params += [key.org_id, key.day, key.property_id, key.currency, key.kind, delta.total, delta.count]
    with connections[totals_database()].cursor() as cursor:
        cursor.execute(f"INSERT INTO finance_daily_total ({COLUMNS}) VALUES {rows} {CONFLICT}", params)


def entry_move_deltas(*, old: FinanceEntry | None, new: FinanceEntry | None) -> dict[TotalKey, Delta]:
    """The deltas of replacing `old` by `new` (either may be None: create, delete)."""
    deltas: dict[TotalKey, Delta] = {}
    for entry, sign in ((old, -1), (new, 1)):
        if entry is None:
            continue
        key = entry_total_key(entry)
        total, count = deltas.get(key, Delta(Decimal(0), 0))
        deltas[key] = Delta(total + sign * entry.amount, count + sign)
    return deltas


def entry_insert_counted(*, entry: FinanceEntry, change: Callable[[], PreparedChange]) -> bool:
    """Take the org's next version, insert the new (unsaved) entry stamped with it, add
    it to its total and write its change's outbox row, in one statement (CTEs): what
    `save()` would write, with the same field preparation, and no further round trip.
    The row is inserted only if the entry's property belongs to its org (checked in the
    same statement: no SELECT of its own). False, with no entry, total or outbox row
    written, when the property is not the org's or the org's counter row is missing or
    moved away (`PreparedChange.version_take` says what to do then); a version may have
    been taken, which the caller's rollback gives back. `change` is called once the
    entry's fields are prepared (its creation time set), to describe the change."""
    return _entry_insert(entry=entry, change=change, counted=True)


def _entry_insert(*, entry: FinanceEntry, change: Callable[[], PreparedChange], counted: bool) -> bool:
    """`entry_insert_counted`; without the totals CTE when not `counted` (a benchmark's
    baseline, bench/totals_bypass)."""
    model = type(entry)
    database = totals_database()
    connection = connections[database]
    fields = [field for field in model._meta.concrete_fields if field.attname != "version"]
    values = [field.get_db_prep_save(field.pre_save(entry, add=True), connection) for field in fields]
    prepared = change()
    take_sql, take_params = prepared.version_take()
    outbox_sql, outbox_params = prepared.outbox_insert(source="entry", taken="taken")
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH taken AS ({take_sql}){_insert_statement(model, counted=counted)}{outbox_sql}",
            [
                *take_params,
                *values,
                entry.property_id,
                entry.org_id,
                *([model.kind] if counted else []),
                *outbox_params,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    outbox_id, version, quiet = row
    entry.version = version
    entry._state.adding = False
    entry._state.db = database
    prepared.recorded(outbox_id=outbox_id, version=version, quiet=quiet)
    return True


@cache
def _insert_statement(model: type[FinanceEntry], *, counted: bool) -> str:
    """The entry's INSERT, stamped with the version of the CTE `taken`, and its total's,
    as CTEs (the statement that writes the outbox row from `entry` follows). Each value
    cast to its column's type: a SELECT list (unlike VALUES) does not take the types of
    the columns it is inserted into.

    The property check locks the property row (KEY SHARE, as the foreign key's own check
    would) after the counter row: its reference to `taken` makes it run per row of
    `taken`, so after the counter's lock, in the lock order of every write. Locking also
    makes it see a property deleted by a writer this statement waited for at the counter
    (a plain subquery would see the statement's older snapshot, and the foreign key
    would fail at commit)."""
    fields = [field for field in model._meta.concrete_fields if field.attname != "version"]
    connection = connections[totals_database()]
    casts = ", ".join(f"%s::{field.db_type(connection)}" for field in fields if field.column is not None)
    total = f"""
        , total AS (
            INSERT INTO finance_daily_total ({COLUMNS})
            SELECT org_id, occurred_on, property_id, currency, %s, amount, 1 FROM entry
            {CONFLICT}
        )
    """
    return f"""
        , entry AS (
            INSERT INTO {model._meta.db_table} ({_column_list(fields)}, version)
            SELECT {casts}, taken.version FROM taken
            WHERE EXISTS (
                SELECT 1 FROM {Property._meta.db_table} WHERE id = %s AND org_id = %s AND taken.version > 0
                FOR KEY SHARE
            )
            RETURNING org_id, occurred_on, property_id, currency, amount, version
        ){total if counted else ""}
    """


def entry_delete_returning(
    *, model: type[FinanceEntry], org_id: uuid.UUID, entry_id: uuid.UUID
) -> FinanceEntry | None:
    """Delete the entry and take it off its total in one statement (a CTE); the
    deleted row, or None if there was none."""
    fields = [field for field in model._meta.concrete_fields]
    columns = _column_list(fields)
    sql = f"""
        WITH gone AS (
            DELETE FROM {model._meta.db_table} WHERE org_id = %s AND id = %s RETURNING {columns}
        ), total AS (
            INSERT INTO finance_daily_total ({COLUMNS})
            SELECT org_id, occurred_on, property_id, currency, %s, -amount, -1 FROM gone
            {CONFLICT}
        )
        SELECT {columns} FROM gone
    """
    database = totals_database()
    with connections[database].cursor() as cursor:
        cursor.execute(sql, [org_id, entry_id, model.kind])
        row = cursor.fetchone()
    if row is None:
        return None
    return model.from_db(database, [field.attname for field in fields], row)
