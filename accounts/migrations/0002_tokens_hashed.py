"""Move DRF's plaintext tokens to knox's hashed, expiring tokens, and drop the old table.

Each old token keeps working (its SHA-512 digest is what knox compares) until
AUTH_TOKEN_TTL_SECONDS after this migration; the plaintext is gone from the database.
"""

from django.conf import settings
from django.db import migrations

MIGRATE_SQL = """
DO $$
BEGIN
  IF to_regclass('authtoken_token') IS NOT NULL THEN
    INSERT INTO knox_authtoken (digest, token_key, created, expiry, user_id)
    SELECT encode(sha512(convert_to(key, 'UTF8')), 'hex'), left(key, 15), created,
           now() + make_interval(secs => %s), user_id
    FROM authtoken_token
    ON CONFLICT (digest) DO NOTHING;
    DROP TABLE authtoken_token;
    DELETE FROM django_migrations WHERE app = 'authtoken';
  END IF;
END
$$;
"""


def migration_sql(*, ttl_seconds: int) -> str:
    return MIGRATE_SQL.replace("%s", str(int(ttl_seconds)))


def migrate_tokens(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_editor.execute(migration_sql(ttl_seconds=settings.AUTH_TOKEN_TTL_SECONDS))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(migrate_tokens, migrations.RunPython.noop)]
