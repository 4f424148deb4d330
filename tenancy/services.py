"""Writes for tenancy."""

from django.db import transaction

from accounts.models import User
from core.ids import uuid7
from edgecache.purge import purge_after_commit
from edgecache.tags import org_section_tag
from replicas.context import use_org_cluster
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role


def organization_create(*, name: str, owner: User) -> Membership:
    """Create an org with `owner` as its first member; returns the owner's membership.
    The new id decides the database cluster the org lives in (replicas/topology.py)."""
    org_id = uuid7()
    with use_org_cluster(org_id) as cluster, transaction.atomic(using=cluster.primary):
        org = Organization.objects.create(id=org_id, name=name)
        return Membership.objects.create(org=org, user=owner, role=Role.OWNER)


def membership_add(*, org: Organization, user: User, role: Role) -> Membership:
    return Membership.objects.create(org=org, user=user, role=role)


def property_create(*, org: Organization, name: str, currency: str, timezone: str) -> Property:
    prop = Property.objects.create(org=org, name=name, currency=currency, timezone=timezone)
    purge_after_commit([org_section_tag(org.id, "properties")])
    return prop
