"""The expense table's shape (columns, types, the list index), unpartitioned, no FKs."""

import uuid

from django.db import models


class BareEntry(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org_id = models.UUIDField()
    property_id = models.UUIDField()
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    category = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    occurred_on = models.DateField()
    created_by_id = models.UUIDField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    version = models.BigIntegerField(default=0)

    # Declared: mypy's Django plugin reads config.settings, where this app is not installed.
    objects: "models.Manager[BareEntry]" = models.Manager()

    class Meta:
        db_table = "bench_bare_entry"
        indexes = [models.Index(fields=["org_id", "-occurred_on", "-id"], name="bench_bare_entry_org_recent")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} {self.category}"
