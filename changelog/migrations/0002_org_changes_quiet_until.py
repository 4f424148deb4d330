from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("changelog", "0001_change_log"),
    ]

    operations = [
        # Nullable without a default: adding it rewrites nothing, and every INSERT that
        # names its columns (org moves, bulk seeding) leaves a new row not quiet.
        migrations.AddField(
            model_name="orgchangecounter",
            name="quiet_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
