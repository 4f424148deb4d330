"""Organizations (tenants), their members and their properties.

Every tenant row carries `org_id` (NOT NULL) and every tenant index leads with it, so
an org's rows can later be distributed by `org_id` (Citus) and lookups prune to one
org. Ids are UUIDv7 made by the app: unique across databases.
"""

from zoneinfo import available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from core.ids import uuid7
from tenancy.roles import Role


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tenancy_organization"

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Indexed by the composite keys below, not one index per foreign key.
    org = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    # Users are global (the directory database), memberships live on the org's
    # cluster: no constraint across databases (docs/clusters.md).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
        db_index=False,
        db_constraint=False,
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "tenancy_membership"
        constraints = [
            models.UniqueConstraint(fields=["org", "user"], name="tenancy_membership_org_user_uniq"),
        ]
        # The one index not led by org_id: "which orgs is this user in" is asked on
        # every org list. Under Citus this lookup would live in a reference table.
        indexes = [models.Index(fields=["user", "org"], name="tenancy_membership_user_org")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.org_id} as {self.role}"


def validate_timezone(value: str) -> None:
    if value not in TIMEZONES:
        raise ValidationError(f"'{value}' is not an IANA time zone name.")


TIMEZONES = frozenset(available_timezones())


class Property(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="properties", db_index=False)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3)
    timezone = models.CharField(max_length=64, validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)
    # The org's change number of this row's last change (changelog): sync pulls by it.
    version = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        db_table = "tenancy_property"
        verbose_name_plural = "properties"
        constraints = [
            # Target of the finance tables' composite (org_id, property_id) foreign key,
            # which makes "a property of the same org" a database rule, not only a check.
            models.UniqueConstraint(fields=["org", "id"], name="tenancy_property_org_id_uniq"),
        ]
        indexes = [
            models.Index(fields=["org", "name"], name="tenancy_property_org_name"),
            models.Index(fields=["org", "version"], name="tenancy_property_org_version"),
        ]

    def __str__(self) -> str:
        return self.name
