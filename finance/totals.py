"""Per-day totals, kept in each finance write's transaction: the summary's read model.

Every entry counts once in the row of its key (org, day, property, currency, kind):
`total` is the sum of the key's amounts and `count` the number of its entries. A
create adds (+amount, +1), a delete (-amount, -1), an update that changes the amount
or the key applies -old and +new (two keys when the entry moves to another day,
property or currency, none when only the category or description changed).

All of a write's deltas go in one `INSERT ... ON CONFLICT DO UPDATE SET total = total +
EXCLUDED.total` statement, keys sorted; a create's and a delete's is the same statement
as the entry's own INSERT or DELETE (a CTE), so they cost no extra round trip (a
create's outbox row too). The caller has already taken the org's counter
row (changelog.services.org_version_take), so the lock order is always: org counter,
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
    """Insert the new (unsaved) entry, add it to its total and write its change's outbox
    row, in one statement (a CTE): what `save()` would write, with the same field
    preparation, and no second or third round trip. The row is inserted only if its
    property belongs to its org (checked in the same statement: no SELECT of its own);
    False, with nothing written (no outbox row either), when it does not. `change` is
    called once the entry's fields are prepared (its creation time set), to describe the
    change."""
    model = type(entry)
    database = totals_database()
    connection = connections[database]
    fields = list(model._meta.concrete_fields)
    values = [field.get_db_prep_save(field.pre_save(entry, add=True), connection) for field in fields]
    prepared = change()
    outbox_sql, outbox_params = prepared.outbox_insert(source="entry")
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_counted_statement(model) + outbox_sql,
            [*values, entry.property_id, entry.org_id, model.kind, *outbox_params],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    entry._state.adding = False
    entry._state.db = database
    prepared.recorded(row[0])
    return True


@cache
def _insert_counted_statement(model: type[FinanceEntry]) -> str:
    """The entry's INSERT and its total's, as CTEs (a statement that writes the outbox
    row from `entry` follows). Each value cast to its column's type: a SELECT list
    (unlike VALUES) does not take the types of the columns it is inserted into."""
    fields = list(model._meta.concrete_fields)
    connection = connections[totals_database()]
    casts = ", ".join(f"%s::{field.db_type(connection)}" for field in fields if field.column is not None)
    return f"""
        WITH entry AS (
            INSERT INTO {model._meta.db_table} ({_column_list(fields)})
            SELECT {casts}
            WHERE EXISTS (SELECT 1 FROM {Property._meta.db_table} WHERE id = %s AND org_id = %s)
            RETURNING org_id, occurred_on, property_id, currency, amount
        ), total AS (
            INSERT INTO finance_daily_total ({COLUMNS})
            SELECT org_id, occurred_on, property_id, currency, %s, amount, 1 FROM entry
            {CONFLICT}
        )
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
