"""Expenses and revenues live in tables partitioned by hash of org_id."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def _partition_of(table: str, entry_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE id = %s", [entry_id])
        return cursor.fetchone()[0]


def _rule_says(table: str, partition: str, org_id: str) -> bool:
    """Postgres' own hash rule: does org_id belong in this partition?"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT satisfies_hash_partition(%s::regclass, 16, %s, %s::uuid)",
            [table, int(partition.rsplit("_p", 1)[1]), org_id],
        )
        return cursor.fetchone()[0]


def test_tables_are_hash_partitioned_on_org_id_with_org_in_the_primary_key():
    with connection.cursor() as cursor:
        for table in ("finance_expense", "finance_revenue"):
            cursor.execute("SELECT pg_get_partkeydef(%s::regclass)", [table])
            assert cursor.fetchone()[0] == "HASH (org_id)"
            cursor.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                "AND contype = 'p'",
                [table],
            )
            assert cursor.fetchone()[0] == "PRIMARY KEY (org_id, id)"
            cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [table])
            assert cursor.fetchone()[0] == 16


def test_every_tenant_index_leads_with_org_id():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, i.relname, a.attname
            FROM pg_index x
            JOIN pg_class c ON c.oid = x.indrelid
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = x.indkey[0]
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
              AND c.relname IN ('finance_expense', 'finance_revenue', 'tenancy_property', 'tenancy_membership')
            """
        )
        rows = cursor.fetchall()
    offenders = [
        (table, index, column)
        for table, index, column in rows
        if column != "org_id"
        and not index.endswith("_pkey")  # property/membership pk is the global id
        and index != "tenancy_membership_user_org"  # documented: "orgs of a user" lookup
        and index not in ("finance_expense_id", "finance_revenue_id")  # documented: lookups by bare id
    ]
    assert offenders == []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'org_id' "
            "AND is_nullable = 'YES' AND table_schema = 'public' "
            # The outbox is a queue, not tenant data: user-wide access changes (all of a
            # user's tokens revoked) belong to no org (docs/changelog.md).
            "AND table_name <> 'changelog_outbox'"
        )
        assert cursor.fetchall() == []


def test_rows_land_in_the_partition_the_hash_rule_names_and_verify_reports_it(
    make_tenant, make_user, client_for
):
    tenants = [make_tenant() for _ in range(12)]
    partitions_used = set()
    for t in tenants:
        for kind, table in (("expenses", "finance_expense"), ("revenues", "finance_revenue")):
            entry = t.manager.post(t.url(f"/{kind}"), t.entry_payload(), format="json").json()
            partition = _partition_of(table, entry["id"])
            assert partition.startswith(f"{table}_p")
            assert _rule_says(table, partition, str(t.org.id))
            partitions_used.add(partition)
    assert len(partitions_used) > 4  # 12 orgs spread over several of the 16 partitions

    staff = client_for(make_user(is_staff=True))
    report = staff.get("/v1/system/monitoring/partitions/verify").json()
    assert report["ok"] is True
    by_table = {t["table"]: t for t in report["tables"]}
    for table in ("finance_expense", "finance_revenue"):
        info = by_table[table]
        assert info["partition_key"] == "HASH (org_id)"
        assert len(info["partitions"]) == 16
        assert info["rows"] == 12
        assert all(p["misplaced_rows"] == 0 for p in info["partitions"])
        counted = {p["name"]: p["rows"] for p in info["partitions"] if p["rows"]}
        assert set(counted) == {p for p in partitions_used if p.startswith(table + "_p")}
