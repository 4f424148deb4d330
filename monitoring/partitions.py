"""Report on the hash partitions of the finance tables.

For each partition: its bounds, its exact row count, and how many of its rows the
partitioning rule would put elsewhere (`satisfies_hash_partition`, Postgres' own hash
rule; should always be 0, and a non-zero count means a corrupted or hand-moved row).
Counting is exact and so scans every partition: an operator's tool, not a hot path.
"""

from typing import Any

from django.db import connections

from finance.models import ENTRY_MODELS

_PARTITIONS_SQL = """
SELECT child.relname,
       pg_get_expr(child.relpartbound, child.oid),
       (regexp_match(pg_get_expr(child.relpartbound, child.oid), 'modulus (\\d+)'))[1]::int,
       (regexp_match(pg_get_expr(child.relpartbound, child.oid), 'remainder (\\d+)'))[1]::int
FROM pg_inherits
JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
JOIN pg_class child ON child.oid = pg_inherits.inhrelid
WHERE parent.relname = %s
ORDER BY child.relname
"""


def _partition_key(cursor: Any, table: str) -> str | None:
    cursor.execute(
        "SELECT pg_get_partkeydef(c.oid) FROM pg_class c WHERE c.relname = %s AND c.relkind = 'p'",
        [table],
    )
    row = cursor.fetchone()
    return row[0] if row else None


def partitions_report(alias: str = "default") -> dict[str, Any]:
    tables = []
    with connections[alias].cursor() as cursor:
        for model in ENTRY_MODELS.values():
            table = model._meta.db_table
            key = _partition_key(cursor, table)
            cursor.execute(_PARTITIONS_SQL, [table])
            partitions = []
            for name, bound, modulus, remainder in cursor.fetchall():
                cursor.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE NOT satisfies_hash_partition("
                    f'%s::regclass, %s, %s, org_id)) FROM ONLY "{name}"',
                    [table, modulus, remainder],
                )
                rows, misplaced = cursor.fetchone()
                partitions.append({"name": name, "bound": bound, "rows": rows, "misplaced_rows": misplaced})
            tables.append(
                {
                    "table": table,
                    "partitioned": key is not None,
                    "partition_key": key,
                    "partitions": partitions,
                    "rows": sum(p["rows"] for p in partitions),
                    "all_rows_placed_correctly": key is not None
                    and all(p["misplaced_rows"] == 0 for p in partitions),
                }
            )
    return {"ok": all(t["all_rows_placed_correctly"] for t in tables), "tables": tables}
