"""Writes for tenancy. Property changes take the org's next change version and are
recorded in its change log, like finance writes (see finance/services.py)."""

import uuid
from typing import Any

from django.db import transaction

from accounts.access_cache import access_cache_drop
from accounts.access_topics import TOPIC_MEMBERSHIP_REMOVED, TOPIC_MEMBERSHIP_ROLE_CHANGED
from accounts.models import User
from changelog.services import (
    access_change_record,
    change_record,
    member_changes_lock,
    org_counter_create,
    org_quiet_end,
    org_transaction,
    org_version_take,
)
from core.ids import uuid7
from directory.services import placement_delete
from replicas.context import use_cluster, use_org_cluster
from replicas.topology import Cluster, topology
from tenancy.models import Membership, Organization, Property
from tenancy.representation import property_output
from tenancy.roles import Role

PROPERTY_UPDATABLE_FIELDS = frozenset({"name", "currency", "timezone"})


class MembershipNotFound(Exception):
    """The user is not a member of the org."""


class LastOwner(Exception):
    """The change would leave the org without an owner."""


def organization_create(*, name: str, owner: User, cluster: Cluster | None = None) -> Membership:
    """Create an org with `owner` as its first member; returns the owner's membership.
    The org is made on `cluster` (default: DEFAULT_CLUSTER), and placed there in the
    directory as it is saved (directory/apps.py); a failed creation takes its placement back."""
    org_id = uuid7()
    cluster = cluster or topology().default
    try:
        with use_cluster(cluster, org_id), transaction.atomic(using=cluster.primary):
            org = Organization.objects.create(id=org_id, name=name)
            org_counter_create(org_id=org.id)
            return Membership.objects.create(org=org, user=owner, role=Role.OWNER)
    except BaseException:
        placement_delete(org_id=org_id)
        raise


def membership_add(*, org: Organization, user: User, role: Role) -> Membership:
    """Add a member. A new member's devices may get the org's push notifications, so the
    org's quiet period ends (docs/changelog.md "Quiet orgs"); the member lock orders this
    against a device registration of the same user."""
    with use_org_cluster(org.id) as cluster, transaction.atomic(using=cluster.primary):
        member_changes_lock(user_id=user.id)
        membership = Membership.objects.create(org=org, user=user, role=role)
        org_quiet_end(org_ids=[org.id])
        return membership


def _locked_membership(*, org: Organization, user_id: uuid.UUID) -> tuple[Membership, int]:
    """The member's row and the org's owner count, both locked until commit.

    The org's owner rows are locked first, in id order, so two owners demoting or
    removing each other at once are serialized, and the second sees the first's
    change: the last owner can never be lost to a race.
    """
    owners = list(Membership.objects.select_for_update().filter(org=org, role=Role.OWNER).order_by("id"))
    target = (
        Membership.objects.select_for_update().select_related("org").filter(org=org, user_id=user_id).first()
    )
    if target is None:
        raise MembershipNotFound()
    return target, len(owners)


def membership_role_change(*, org: Organization, user_id: uuid.UUID, role: Role) -> Membership:
    """Change a member's role; LastOwner when it would demote the org's only owner."""
    with use_org_cluster(org.id) as cluster, transaction.atomic(using=cluster.primary):
        membership, owners = _locked_membership(org=org, user_id=user_id)
        if membership.role == role:
            return membership
        if membership.role == Role.OWNER and owners <= 1:
            raise LastOwner()
        previous = membership.role
        membership.role = role
        membership.save(update_fields=["role"])
        access_change_record(
            org_id=org.id,
            user_id=user_id,
            topic=TOPIC_MEMBERSHIP_ROLE_CHANGED,
            data={"role": str(role), "previous_role": previous},
        )
        access_cache_drop(using=cluster.primary)
        return membership


def membership_remove(*, org: Organization, user_id: uuid.UUID) -> None:
    """Remove a member; LastOwner when it is the org's only owner. From the commit on,
    the user's REST calls get 404, the edge forgets its "allowed", its sockets close."""
    with use_org_cluster(org.id) as cluster, transaction.atomic(using=cluster.primary):
        membership, owners = _locked_membership(org=org, user_id=user_id)
        if membership.role == Role.OWNER and owners <= 1:
            raise LastOwner()
        membership.delete()
        access_change_record(
            org_id=org.id, user_id=user_id, topic=TOPIC_MEMBERSHIP_REMOVED, data={"role": membership.role}
        )
        access_cache_drop(using=cluster.primary)


def property_create(*, org: Organization, name: str, currency: str, timezone: str) -> Property:
    with org_transaction():
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
    with org_transaction():
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
    with org_transaction():
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
