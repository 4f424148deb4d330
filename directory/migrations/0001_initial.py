from django.db import migrations, models


def backfill(apps, schema_editor) -> None:  # noqa: ANN001
    """Orgs made before the directory live on the database being migrated: the
    directory cluster's primary (the only one that holds the directory)."""
    from replicas.topology import topology

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO org_directory (org_id, cluster, state, generation, updated_at) "
            "SELECT id, %s, 'active', 1, now() FROM tenancy_organization ON CONFLICT (org_id) DO NOTHING",
            [topology().directory_name],
        )


class Migration(migrations.Migration):
    initial = True
    dependencies = [("tenancy", "0002_property_version")]

    operations = [
        migrations.CreateModel(
            name="OrgPlacement",
            fields=[
                ("org_id", models.UUIDField(primary_key=True, serialize=False)),
                ("cluster", models.CharField(max_length=64)),
                (
                    "state",
                    models.CharField(
                        choices=[("active", "Active"), ("moving", "Moving"), ("fenced", "Fenced")],
                        default="active",
                        max_length=8,
                    ),
                ),
                ("generation", models.BigIntegerField(default=1)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "db_table": "org_directory",
                "indexes": [models.Index(fields=["cluster"], name="org_directory_cluster")],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
