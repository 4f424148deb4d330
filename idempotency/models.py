"""The idempotency record: Postgres's memory of a write that succeeded under a key.

A row exists only for a committed success: it is inserted in the same transaction as
the write it describes, so the two commit or roll back together, and the primary
key on the scope is what makes a concurrent duplicate wait and then lose.
There is no "in progress" row: in-flight state lives in Redis (a claim) and, for
Postgres, in the uncommitted insert itself (the duplicate blocks on its index entry).

Neither the key nor the request is stored in clear: `key_hash` and `fingerprint` are
SHA-256 digests; the Authorization header and the request body are never stored.
`org_id` is the nil UUID for writes outside any org (POST /v1/orgs): user scope.
No foreign keys: records are short-lived, and a write must not lock user/org rows.
"""

from django.contrib.postgres.indexes import BrinIndex
from django.db import models


class IdempotencyRecord(models.Model):
    # The scope is the primary key: one B-tree serves the lookup, the uniqueness that
    # makes duplicates wait, and (org_id first) a later distribution by org.
    pk = models.CompositePrimaryKey("org_id", "user_id", "key_hash")
    org_id = models.UUIDField()
    user_id = models.UUIDField()
    key_hash = models.BinaryField(max_length=32)
    fingerprint = models.BinaryField(max_length=32)
    response_status = models.PositiveSmallIntegerField()
    response_content_type = models.CharField(max_length=100, blank=True)
    response_body = models.BinaryField()
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "idempotency_record"
        # The purge scans by expiry across all orgs. Rows arrive in expiry order
        # (constant TTL), so a BRIN index serves the range at almost no insert cost,
        # where a B-tree would add a second full index to every idempotent write.
        indexes = [BrinIndex(fields=["expires_at"], name="idempotency_record_expiry")]

    def __str__(self) -> str:
        return f"{self.response_status} for {self.key_hash.hex()[:12]} in {self.org_id}"
