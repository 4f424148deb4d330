"""Expenses and revenues: one shape, two tables, both hash-partitioned by org_id.

The tables are created by hand-written SQL in the migrations (Django cannot declare a
partitioned table): `PARTITION BY HASH (org_id)`, primary key `(org_id, id)` as
Postgres requires, and a composite foreign key `(org_id, property_id)` to the property.
The model keeps `id` alone as its primary key, so admin, DRF and lookups by id work;
`id` is a UUIDv7, unique by construction. Queries should still filter on `org` so
Postgres prunes to one partition.
"""

from django.conf import settings
from django.db import models

from core.ids import uuid7
from tenancy.models import Organization, Property


class FinanceEntry(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    property = models.ForeignKey(Property, on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    category = models.CharField(max_length=64)
    description = models.TextField(blank=True, default="")
    occurred_on = models.DateField()
    # A global user, on the directory database: no constraint across databases.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The org's change number of this row's last change (changelog): sync pulls by it.
    version = models.BigIntegerField(default=0, db_default=0)

    # Realtime event names and cache tags use this ("expense", "revenue").
    kind: str

    # Django gives each concrete model this manager anyway; declared here, code that takes
    # any entry model (type[FinanceEntry]) can use it.
    objects = models.Manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} {self.category} on {self.occurred_on}"


class Expense(FinanceEntry):
    kind = "expense"

    class Meta:
        db_table = "finance_expense"
        indexes = [
            models.Index(fields=["org", "-occurred_on", "-id"], name="finance_expense_org_recent"),
            models.Index(fields=["org", "property", "-occurred_on", "-id"], name="finance_expense_org_prop"),
            # Not led by org_id on purpose: admin and support look rows up by bare id.
            models.Index(fields=["id"], name="finance_expense_id"),
            models.Index(fields=["org", "version"], name="finance_expense_org_version"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="finance_expense_amount_positive"),
        ]


class Revenue(FinanceEntry):
    kind = "revenue"

    class Meta:
        db_table = "finance_revenue"
        indexes = [
            models.Index(fields=["org", "-occurred_on", "-id"], name="finance_revenue_org_recent"),
            models.Index(fields=["org", "property", "-occurred_on", "-id"], name="finance_revenue_org_prop"),
            # Not led by org_id on purpose: admin and support look rows up by bare id.
            models.Index(fields=["id"], name="finance_revenue_id"),
            models.Index(fields=["org", "version"], name="finance_revenue_org_version"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="finance_revenue_amount_positive"),
        ]


ENTRY_MODELS: dict[str, type[FinanceEntry]] = {"expense": Expense, "revenue": Revenue}


class DailyTotal(models.Model):
    """The read model behind the summary: one row per (org, day, property, currency, kind)
    with the sum and number of that day's entries, kept in each write's transaction
    (finance.totals). Hash-partitioned by org_id like the entries (migration 0004).

    Rows whose entries were all deleted stay with count 0 and total 0 (readers skip
    them; `finance_totals rebuild` prunes them): deleting on the write path would take
    a second statement per write. No foreign keys: an org's rows move as a unit.
    """

    pk = models.CompositePrimaryKey("org_id", "day", "property_id", "currency", "kind")
    org_id = models.UUIDField()
    day = models.DateField()
    property_id = models.UUIDField()
    currency = models.CharField(max_length=3)
    kind = models.CharField(max_length=7)  # "expense" or "revenue"
    total = models.DecimalField(max_digits=20, decimal_places=2)
    count = models.BigIntegerField()

    class Meta:
        db_table = "finance_daily_total"

    def __str__(self) -> str:
        return f"{self.kind} {self.day} {self.property_id} {self.total} {self.currency} ({self.count})"
