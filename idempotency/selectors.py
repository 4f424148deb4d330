"""Reads of idempotency records. Always from the primary: a replica may not have the
record yet, and answering "not found" there would run a write twice."""

from django.db import router
from django.db.models.functions import Now
from django.utils import timezone

from idempotency.identity import IdempotencyScope
from idempotency.models import IdempotencyRecord
from idempotency.stored_response import StoredResponse


def idempotency_record_get(*, scope: IdempotencyScope) -> StoredResponse | None:
    """The live (unexpired, committed) response kept under this scope, if any."""
    row = (
        IdempotencyRecord.objects.using(router.db_for_write(IdempotencyRecord))
        .filter(org_id=scope.org_id, user_id=scope.user_id, key_hash=scope.key_hash, expires_at__gt=Now())
        .values_list(
            "fingerprint", "response_status", "response_content_type", "response_body", "expires_at"
        )[:1]
    )
    found = list(row)
    if not found:
        return None
    fingerprint, status, content_type, body, expires_at = found[0]
    return StoredResponse(
        fingerprint=bytes(fingerprint),
        status=status,
        content_type=content_type,
        body=bytes(body),
        expires_in_ms=max(1, int((expires_at - timezone.now()).total_seconds() * 1000)),
    )
