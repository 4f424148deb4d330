"""Reads for tenancy: memberships, orgs and properties, always scoped to a user or org."""

import uuid
from typing import Any

from django.db.models import F, FilteredRelation, Model, Q, QuerySet, Subquery
from knox.models import AuthToken

from accounts.models import User
from accounts.selectors import token_candidates, token_pick
from tenancy.models import Membership, Organization, Property

_MEMBER = "org_member"  # the user's membership of the URL's org, LEFT JOINed to the token


def _joined_fields(model: type[Model], path: str, prefix: str) -> dict[str, F]:
    return {f"{prefix}{field.attname}": F(f"{path}{field.attname}") for field in model._meta.concrete_fields}


def _org_fields(org_id: uuid.UUID, prefix: str) -> dict[str, Subquery]:
    # Scalar subqueries by primary key: Django cannot join onward from a FilteredRelation.
    org = Organization.objects.filter(id=org_id)
    return {f"{prefix}{f.attname}": Subquery(org.values(f.attname)[:1]) for f in Organization._meta.concrete_fields}


def _from_row(model: type[Model], row: Any, prefix: str, db: str) -> Any:
    names = [field.attname for field in model._meta.concrete_fields]
    return model.from_db(db, names, [getattr(row, f"{prefix}{name}") for name in names])


def membership_get(*, org_id: uuid.UUID, user: User) -> Membership | None:
    return Membership.objects.select_related("org").filter(org_id=org_id, user=user).first()


def token_with_membership(*, token: str, org_id: uuid.UUID) -> tuple[AuthToken, Membership | None] | None:
    """The live token (as `accounts.selectors.token_find`) and its user's membership of
    `org_id` with the org (None when not a member), in one round trip: the membership
    is LEFT JOINed to the token's row, the org's columns are subqueries by its key.
    None when the token is not live."""
    found = token_candidates(token=token)
    if found is None:
        return None
    candidates, digest = found
    rows = candidates.annotate(
        **{_MEMBER: FilteredRelation("user__memberships", condition=Q(user__memberships__org_id=org_id))},
        **_joined_fields(Membership, f"{_MEMBER}__", "m__"),
        **_org_fields(org_id, "o__"),
    )
    row = token_pick(rows, digest)
    if row is None:
        return None
    if row.m__id is None:  # type: ignore[attr-defined]
        return row, None
    db = row._state.db or "default"
    membership = _from_row(Membership, row, "m__", db)
    membership.org = _from_row(Organization, row, "o__", db)
    membership.user = row.user
    return row, membership


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.select_related("org").filter(user=user)


def memberships_of_org(*, org: Organization) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").filter(org=org)


def properties_of_org(*, org: Organization) -> QuerySet[Property]:
    return Property.objects.filter(org=org)


def property_get(*, org: Organization, property_id: uuid.UUID) -> Property | None:
    return Property.objects.filter(org=org, id=property_id).first()
