"""Per-day totals (finance.totals), hash-partitioned by org_id like the entries, and
their backfill from the rows already there.

The backfill is one INSERT ... SELECT per entry table, aggregated partition by
partition (every group key starts with org_id, the partition key). Writes made by
servers still running the previous release between this migration and their restart
do not maintain totals: run `manage.py finance_totals rebuild` once every server runs
this release (docs/read-models.md).
"""

from django.db import migrations, models


TABLE = "finance_daily_total"
PARTITION_COUNT = 16  # as the entry tables (0001_initial): an org's rows share a remainder

CREATE = [
    f"""
    CREATE TABLE {TABLE} (
        org_id uuid NOT NULL,
        day date NOT NULL,
        property_id uuid NOT NULL,
        currency varchar(3) NOT NULL,
        kind varchar(7) NOT NULL CONSTRAINT {TABLE}_kind CHECK (kind IN ('expense', 'revenue')),
        total numeric(20, 2) NOT NULL,
        count bigint NOT NULL,
        CONSTRAINT {TABLE}_pkey PRIMARY KEY (org_id, day, property_id, currency, kind)
    ) PARTITION BY HASH (org_id)
    """,
    *(
        f"CREATE TABLE {TABLE}_p{remainder:02d} PARTITION OF {TABLE} "
        f"FOR VALUES WITH (MODULUS {PARTITION_COUNT}, REMAINDER {remainder})"
        for remainder in range(PARTITION_COUNT)
    ),
]

BACKFILL = [
    "SET LOCAL enable_partitionwise_aggregate = on",
    *(
        f"""
        INSERT INTO {TABLE} (org_id, day, property_id, currency, kind, total, count)
        SELECT org_id, occurred_on, property_id, currency, '{kind}', sum(amount), count(*)
        FROM finance_{kind}
        GROUP BY org_id, occurred_on, property_id, currency
        """
        for kind in ("expense", "revenue")
    ),
]


class Migration(migrations.Migration):
    dependencies = [
        ("finance", "0003_entry_version"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(CREATE, f"DROP TABLE {TABLE}"),
                migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
            ],
            state_operations=[
                migrations.CreateModel(
                    name="DailyTotal",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "org_id",
                                "day",
                                "property_id",
                                "currency",
                                "kind",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("org_id", models.UUIDField()),
                        ("day", models.DateField()),
                        ("property_id", models.UUIDField()),
                        ("currency", models.CharField(max_length=3)),
                        ("kind", models.CharField(max_length=7)),
                        ("total", models.DecimalField(decimal_places=2, max_digits=20)),
                        ("count", models.BigIntegerField()),
                    ],
                    options={"db_table": TABLE},
                ),
            ],
        ),
    ]
