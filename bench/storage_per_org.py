"""Benchmark: bytes on disk per org and per row, for the capacity model of
docs/scale-out.md. Run with `make bench-storage`.

In a scratch database on the local primary (`hospitality_storage`, dropped at the end
unless BENCH_KEEP=1), migrated like any cluster:
1. typical orgs: BENCH_STORAGE_ORGS (5 000) orgs seeded by seed_orgs' COPY code
   (core.bulk_seed) with the load test's shape: 5 properties, 5 users (tokens,
   memberships), 2 entries per property (10 per org);
2. large orgs: BENCH_STORAGE_LARGE_ORGS (20) orgs of 10 properties and
   BENCH_STORAGE_ENTRIES (10 000) entries each over a year of days, so the entry rows,
   their indexes and the per-day totals dominate;
3. idempotency records: BENCH_STORAGE_KEYS (50 000) rows shaped like a keyed create's
   (a 400-byte JSON body), inserted by SQL.
After each step VACUUM ANALYZE, then `pg_total_relation_size` (heap + indexes + TOAST)
of every table, summed over its partitions; the step's growth divided by its rows.
"""

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ["DB_STATEMENT_TIMEOUT_MS"] = "3600000"

import environ
import psycopg

environ.Env.read_env(ROOT / ".env", overwrite=False)
DATABASE = "hospitality_storage"
_source = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:55432/hospitality"))
ADMIN_URL = _source._replace(path="/postgres").geturl()
os.environ |= {
    "DATABASE_URL": _source._replace(path=f"/{DATABASE}").geturl(),
    "REPLICA_URLS": "",
    "CLUSTER_COUNT": "1",
    "DIRECTORY_CLUSTER": "main",
    "DEFAULT_CLUSTER": "main",
}

ORGS = int(os.environ.get("BENCH_STORAGE_ORGS", "5000"))
LARGE_ORGS = int(os.environ.get("BENCH_STORAGE_LARGE_ORGS", "20"))
ENTRIES = int(os.environ.get("BENCH_STORAGE_ENTRIES", "10000"))
KEYS = int(os.environ.get("BENCH_STORAGE_KEYS", "50000"))

TABLES = (
    "tenancy_organization", "tenancy_property", "tenancy_membership", "finance_expense", "finance_revenue",
    "finance_daily_total", "org_changes", "org_directory", "accounts_user", "knox_authtoken",
    "idempotency_record",
)  # fmt: skip

SIZES_SQL = """
SELECT t.name,
       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
         WHERE c.oid = t.name::regclass AND c.relkind <> 'p'
            OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = t.name::regclass)),
       (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c
         WHERE c.oid = t.name::regclass AND c.relkind <> 'p'
            OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = t.name::regclass))
FROM unnest(%s::text[]) AS t(name)
"""


def recreate_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def drop_database() -> None:
    from django.db import connections

    connections.close_all()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def sizes() -> dict[str, tuple[int, int]]:
    """table -> (bytes, rows) after VACUUM ANALYZE (rows: the planner's exact count then)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute(SIZES_SQL, [list(TABLES)])
        return {name: (size, rows) for name, size, rows in cursor.fetchall()}


def report(title: str, before: dict, after: dict, orgs: int) -> None:
    print(f"\n{title}")
    print(f"| table | rows added | bytes added | bytes/row | bytes/org ({orgs} orgs) |")
    print("|---|---:|---:|---:|---:|")
    total = 0
    for table in TABLES:
        size = after[table][0] - before[table][0]
        rows = after[table][1] - before[table][1]
        if size <= 0 and rows <= 0:
            continue
        total += size
        per_row = f"{size / rows:,.0f}" if rows > 0 else "-"
        print(f"| {table} | {rows:,} | {size:,} | {per_row} | {size / orgs:,.0f} |")
    print(f"| all | | {total:,} | | {total / orgs:,.0f} |")


def seed_orgs(prefix: str, orgs: int, properties: int, users: int, entries_per_property: int) -> float:
    from core.bulk_seed import SeedPlan, seed

    started = time.monotonic()
    plan = SeedPlan(orgs=orgs, properties_per_org=properties, users_per_org=users,
                    entries_per_property=entries_per_property, prefix=prefix, password=os.urandom(8).hex(),
                    batch_orgs=min(orgs, 2000))  # fmt: skip
    seed(plan, progress=lambda n: None)
    return time.monotonic() - started


def insert_idempotency_records(count: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO idempotency_record
                (org_id, user_id, key_hash, fingerprint, response_status, response_content_type,
                 response_body, created_at, expires_at)
            SELECT o.id, gen_random_uuid(), sha256(('k' || g)::bytea), sha256(('f' || g)::bytea), 201,
                   'application/json', convert_to(repeat('x', 400), 'UTF8'), now(), now() + interval '1 day'
            FROM generate_series(1, %s) AS g
            CROSS JOIN LATERAL (SELECT id FROM tenancy_organization ORDER BY id LIMIT 1) AS o
            """,
            [count],
        )


def main() -> None:
    recreate_database()
    import django

    django.setup()
    from django.core.management import call_command

    try:
        call_command("migrate", verbosity=0)
        print(f"scratch database {DATABASE}; load average {os.getloadavg()[0]:.1f}", flush=True)
        empty = sizes()
        took = seed_orgs("st", ORGS, properties=5, users=5, entries_per_property=2)
        typical = sizes()
        report(f"Typical orgs: 5 properties, 5 users, 10 entries each (seeded in {took:.0f} s)", empty, typical,
               ORGS)  # fmt: skip
        took = seed_orgs("stl", LARGE_ORGS, properties=10, users=1, entries_per_property=ENTRIES // 10)
        large = sizes()
        report(f"Large orgs: 10 properties, {ENTRIES} entries over a year (seeded in {took:.0f} s)", typical, large,
               LARGE_ORGS)  # fmt: skip
        insert_idempotency_records(KEYS)
        keyed = sizes()
        report("Idempotency records (400-byte response body)", large, keyed, 1)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            drop_database()


if __name__ == "__main__":
    main()
