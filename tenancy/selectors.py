"""Reads for tenancy: memberships, orgs and properties, always scoped to a user or org."""

import uuid

from django.db.models import QuerySet

from accounts.models import User
from replicas.context import use_org_cluster
from replicas.topology import OrgNotRouted, topology
from tenancy.models import Membership, Organization, Property


def membership_get(*, org_id: uuid.UUID, user: User) -> Membership | None:
    """The user's membership, read on the org's cluster; None also for an org the
    directory cannot place (fail closed: never looked up on another cluster)."""
    try:
        with use_org_cluster(org_id):
            return Membership.objects.select_related("org").filter(org_id=org_id, user=user).first()
    except OrgNotRouted:
        return None


def memberships_of_user(*, user: User) -> list[QuerySet[Membership]]:
    """The user's memberships, one queryset per database cluster (an org's memberships
    live on its cluster). With one cluster, routed like any read; with several, each
    cluster's primary (GET /v1/orgs fans out; docs/clusters.md)."""
    clusters = list(topology().clusters.values())
    if len(clusters) == 1:
        return [Membership.objects.select_related("org").filter(user=user)]
    return [Membership.objects.using(c.primary).select_related("org").filter(user=user) for c in clusters]


def memberships_of_org(*, org: Organization) -> QuerySet[Membership]:
    # Users are global (the directory database): fetched by a second query, not a join.
    return Membership.objects.prefetch_related("user").filter(org=org)


def properties_of_org(*, org: Organization) -> QuerySet[Property]:
    return Property.objects.filter(org=org)


def property_get(*, org: Organization, property_id: uuid.UUID) -> Property | None:
    return Property.objects.filter(org=org, id=property_id).first()
