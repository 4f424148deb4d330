"""Bench-only app: the finance write path without the per-day totals (the create and
the delete without their totals CTE, no upsert on update), to measure what keeping
them costs. Never in production settings: the summary would drift from the rows."""

import uuid
from collections.abc import Callable
from typing import Any

from django.apps import AppConfig


class TotalsBypassConfig(AppConfig):
    name = "bench.totals_bypass"
    label = "bench_totals_bypass"

    def ready(self) -> None:
        from django.db import connections

        import finance.services
        from changelog.services import PreparedChange
        from finance.models import FinanceEntry
        from finance.totals import _column_list, _entry_insert, totals_database

        def totals_add_nothing(*, deltas: Any) -> None:
            return None

        def insert_uncounted(*, entry: FinanceEntry, change: Callable[[], PreparedChange]) -> bool:
            """entry_insert_counted without its totals CTE: the version, the entry and its outbox row."""
            return _entry_insert(entry=entry, change=change, counted=False)

        def delete_returning(
            *, model: type[FinanceEntry], org_id: uuid.UUID, entry_id: uuid.UUID
        ) -> FinanceEntry | None:
            fields = list(model._meta.concrete_fields)
            columns = _column_list(fields)
            database = totals_database()
            with connections[database].cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {model._meta.db_table} WHERE org_id = %s AND id = %s RETURNING {columns}",
                    [org_id, entry_id],
                )
                row = cursor.fetchone()
            return None if row is None else model.from_db(database, [f.attname for f in fields], row)

        finance.services.totals_add = totals_add_nothing
        finance.services.entry_insert_counted = insert_uncounted
        finance.services.entry_delete_returning = delete_returning
