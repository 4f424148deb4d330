"""Reads for tenancy: memberships, orgs and properties, always scoped to a user or org."""

import uuid

from django.db.models import QuerySet

from accounts.models import User
from tenancy.models import Membership, Organization, Property


def membership_get(*, org_id: uuid.UUID, user: User) -> Membership | None:
    return Membership.objects.select_related("org").filter(org_id=org_id, user=user).first()


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.select_related("org").filter(user=user)


def memberships_of_org(*, org: Organization) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").filter(org=org)


def properties_of_org(*, org: Organization) -> QuerySet[Property]:
    return Property.objects.filter(org=org)


def property_get(*, org: Organization, property_id: uuid.UUID) -> Property | None:
    return Property.objects.filter(org=org, id=property_id).first()
