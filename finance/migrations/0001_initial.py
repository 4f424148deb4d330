"""Expenses and revenues as tables partitioned by hash of org_id.

Django cannot declare a partitioned table, so the model state comes from the usual
CreateModel operations while the database gets hand-written DDL
(SeparateDatabaseAndState). Differences from what Django would create:

- PARTITION BY HASH (org_id) with PARTITION_COUNT partitions;
- PRIMARY KEY (org_id, id): Postgres requires the partition key in every unique key;
  `id` alone stays the model's pk (a UUIDv7, unique by construction);
- FOREIGN KEY (org_id, property_id) -> tenancy_property (org_id, id): an entry's
  property must belong to the same org, enforced by the database;
- no single-column FK indexes: every index leads with org_id.
"""

import core.ids
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


PARTITION_COUNT = 16  # fixed here: changing it later is a data migration


def create_sql(table: str) -> str:
    statements = [
        f"""
        CREATE TABLE {table} (
            id uuid NOT NULL,
            org_id uuid NOT NULL
                REFERENCES tenancy_organization (id) DEFERRABLE INITIALLY DEFERRED,
            property_id uuid NOT NULL,
            amount numeric(14, 2) NOT NULL,
            currency varchar(3) NOT NULL,
            category varchar(64) NOT NULL,
            description text NOT NULL,
            occurred_on date NOT NULL,
            created_by_id uuid NOT NULL
                REFERENCES accounts_user (id) DEFERRABLE INITIALLY DEFERRED,
            created_at timestamp with time zone NOT NULL,
            updated_at timestamp with time zone NOT NULL,
            CONSTRAINT {table}_pkey PRIMARY KEY (org_id, id),
            CONSTRAINT {table}_property_same_org FOREIGN KEY (org_id, property_id)
                REFERENCES tenancy_property (org_id, id) DEFERRABLE INITIALLY DEFERRED,
            CONSTRAINT {table}_amount_positive CHECK (amount > 0)
        ) PARTITION BY HASH (org_id)
        """
    ]
    statements += [
        f"CREATE TABLE {table}_p{remainder:02d} PARTITION OF {table} "
        f"FOR VALUES WITH (MODULUS {PARTITION_COUNT}, REMAINDER {remainder})"
        for remainder in range(PARTITION_COUNT)
    ]
    statements += [
        f"CREATE INDEX {table}_org_recent ON {table} (org_id, occurred_on DESC, id DESC)",
        f"CREATE INDEX {table}_org_prop ON {table} (org_id, property_id, occurred_on DESC, id DESC)",
    ]
    return ";\n".join(statements)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("tenancy", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    create_sql("finance_expense"), "DROP TABLE finance_expense"
                ),
                migrations.RunSQL(
                    create_sql("finance_revenue"), "DROP TABLE finance_revenue"
                ),
            ],
            state_operations=[
                migrations.CreateModel(
                    name="Expense",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=core.ids.uuid7,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        (
                            "amount",
                            models.DecimalField(decimal_places=2, max_digits=14),
                        ),
                        ("currency", models.CharField(max_length=3)),
                        ("category", models.CharField(max_length=64)),
                        ("description", models.TextField(blank=True, default="")),
                        ("occurred_on", models.DateField()),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "org",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="tenancy.organization",
                            ),
                        ),
                        (
                            "property",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="tenancy.property",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "finance_expense",
                        "indexes": [
                            models.Index(
                                fields=["org", "-occurred_on", "-id"],
                                name="finance_expense_org_recent",
                            ),
                            models.Index(
                                fields=["org", "property", "-occurred_on", "-id"],
                                name="finance_expense_org_prop",
                            ),
                        ],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("amount__gt", 0)),
                                name="finance_expense_amount_positive",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="Revenue",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=core.ids.uuid7,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        (
                            "amount",
                            models.DecimalField(decimal_places=2, max_digits=14),
                        ),
                        ("currency", models.CharField(max_length=3)),
                        ("category", models.CharField(max_length=64)),
                        ("description", models.TextField(blank=True, default="")),
                        ("occurred_on", models.DateField()),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "org",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="tenancy.organization",
                            ),
                        ),
                        (
                            "property",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="tenancy.property",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "finance_revenue",
                        "indexes": [
                            models.Index(
                                fields=["org", "-occurred_on", "-id"],
                                name="finance_revenue_org_recent",
                            ),
                            models.Index(
                                fields=["org", "property", "-occurred_on", "-id"],
                                name="finance_revenue_org_prop",
                            ),
                        ],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("amount__gt", 0)),
                                name="finance_revenue_amount_positive",
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
