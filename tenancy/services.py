"""Writes for tenancy. Property changes take the org's next change version and are
recorded in its change log, like finance writes (see finance/services.py)."""

from typing import Any

from django.db import transaction

from accounts.models import User
from changelog.services import change_record, org_counter_create, org_version_take
from core.ids import uuid7
from replicas.context import use_org_cluster
from tenancy.models import Membership, Organization, Property
from tenancy.representation import property_output
from tenancy.roles import Role

PROPERTY_UPDATABLE_FIELDS = frozenset({"name", "currency", "timezone"})


def organization_create(*, name: str, owner: User) -> Membership:
    """Create an org with `owner` as its first member; returns the owner's membership.
    The new id decides the database cluster the org lives in (replicas/topology.py)."""
    org_id = uuid7()
    with use_org_cluster(org_id) as cluster, transaction.atomic(using=cluster.primary):
        org = Organization.objects.create(id=org_id, name=name)
        org_counter_create(org_id=org.id)
        return Membership.objects.create(org=org, user=owner, role=Role.OWNER)


def membership_add(*, org: Organization, user: User, role: Role) -> Membership:
    return Membership.objects.create(org=org, user=user, role=role)


def property_create(*, org: Organization, name: str, currency: str, timezone: str) -> Property:
    with transaction.atomic():
        version = org_version_take(org_id=org.id)
        prop = Property.objects.create(
            org=org, name=name, currency=currency, timezone=timezone, version=version
        )
        _record(prop, "created")
    return prop


def property_update(*, prop: Property, changes: dict[str, Any]) -> Property:
    unknown = set(changes) - PROPERTY_UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    with transaction.atomic():
        version = org_version_take(org_id=prop.org_id)
        locked = Property.objects.select_for_update().get(org_id=prop.org_id, id=prop.id)
        for name, value in changes.items():
            setattr(locked, name, value)
        locked.version = version
        locked.save(update_fields=[*changes, "version"])
        _record(locked, "updated")
    return locked


def property_delete(*, prop: Property) -> None:
    """Delete a property without entries (finance rows protect theirs: ProtectedError)."""
    with transaction.atomic():
        version = org_version_take(org_id=prop.org_id)
        locked = Property.objects.select_for_update().get(org_id=prop.org_id, id=prop.id)
        deleted_id = locked.pk
        locked.delete()
        locked.pk, locked.version = deleted_id, version  # delete() cleared the pk
        _record(locked, "deleted")


def _record(prop: Property, action: str) -> None:
    change_record(
        org_id=prop.org_id,
        version=prop.version,
        topic=f"property.{action}",
        entity_id=prop.id,
        data=property_output(prop),
    )
