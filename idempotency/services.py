"""Writes to idempotency records (Postgres, the authority)."""

from typing import Any

from django.db import connections, router

from idempotency.identity import IdempotencyScope
from idempotency.models import IdempotencyRecord
from idempotency.stored_response import StoredResponse

_TABLE = IdempotencyRecord._meta.db_table

# An expired record under the same scope is overwritten in place (the key is free
# again); a live one wins, and RETURNING then gives no row.
_INSERT = f"""
INSERT INTO {_TABLE} AS r (org_id, user_id, key_hash, fingerprint, response_status,
                           response_content_type, response_body, created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, statement_timestamp(), statement_timestamp() + make_interval(secs => %s))
ON CONFLICT (org_id, user_id, key_hash) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint, response_status = EXCLUDED.response_status,
    response_content_type = EXCLUDED.response_content_type, response_body = EXCLUDED.response_body,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
WHERE r.expires_at <= statement_timestamp()
RETURNING 1
"""

_DELETE_EXPIRED_BATCH = f"""
DELETE FROM {_TABLE} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {_TABLE} WHERE expires_at <= statement_timestamp() LIMIT %s FOR UPDATE SKIP LOCKED
))
"""


def idempotency_record_insert(*, scope: IdempotencyScope, response: StoredResponse, ttl_seconds: int) -> bool:
    """Insert the record in the caller's transaction (the one holding the write).

    Blocks while a concurrent duplicate's uncommitted record holds the same scope.
    Returns False when a live record already owns the key: the caller must roll back.
    """
    params: list[Any] = [scope.org_id, scope.user_id, scope.key_hash, response.fingerprint, response.status]
    params += [response.content_type, response.body, ttl_seconds]
    db = router.db_for_write(IdempotencyRecord)
    with connections[db].cursor() as cursor:
        cursor.execute(_INSERT, params)
        return cursor.fetchone() is not None


def idempotency_records_delete_expired(*, batch_size: int) -> int:
    """Delete one batch of expired records in its own short transaction; returns the count."""
    db = router.db_for_write(IdempotencyRecord)
    with connections[db].cursor() as cursor:
        cursor.execute(_DELETE_EXPIRED_BATCH, [batch_size])
        return cursor.rowcount
