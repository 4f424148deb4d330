"""Where each offline client stands in its own queue of mutations, per org.

A row is created by the client's first push and is owned by the user who made it
(another user presenting the same client id gets 403). `last_mutation_id` is updated
in the same transaction as the mutation it counts, which is what makes a pushed
mutation apply exactly once (docs/sync.md). Like the change log, the row carries
`org_id` without a foreign key, so an org's rows can move between databases as a unit.
"""

from django.db import models


class SyncClient(models.Model):
    id = models.BigAutoField(primary_key=True)
    org_id = models.UUIDField()
    client_id = models.UUIDField()
    user_id = models.UUIDField()
    last_mutation_id = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "sync_client"
        constraints = [
            models.UniqueConstraint(fields=["org_id", "client_id"], name="sync_client_org_client"),
        ]

    def __str__(self) -> str:
        return f"client {self.client_id} of user {self.user_id} at mutation {self.last_mutation_id}"
