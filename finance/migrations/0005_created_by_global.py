"""Users are global (the directory database) while entries live on their org's
cluster: `created_by` names a user without a constraint across databases."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

TABLES = ("finance_expense", "finance_revenue")


def _field() -> models.ForeignKey:
    return models.ForeignKey(
        db_constraint=False,
        on_delete=django.db.models.deletion.PROTECT,
        related_name="+",
        to=settings.AUTH_USER_MODEL,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("finance", "0004_daily_totals"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    [f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_created_by_id_fkey" for table in TABLES],
                    [
                        f"ALTER TABLE {table} ADD CONSTRAINT {table}_created_by_id_fkey FOREIGN KEY (created_by_id) "
                        "REFERENCES accounts_user (id) DEFERRABLE INITIALLY DEFERRED"
                        for table in TABLES
                    ],
                )
            ],
            state_operations=[
                migrations.AlterField(model_name="expense", name="created_by", field=_field()),
                migrations.AlterField(model_name="revenue", name="created_by", field=_field()),
            ],
        )
    ]
