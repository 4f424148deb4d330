"""Reads for tenancy: memberships, orgs and properties, always scoped to a user or org."""

import datetime
import uuid
from collections.abc import Iterator, Sequence
from functools import cache
from hmac import compare_digest
from typing import Any

from django.db import connections, router
from django.db.models import Model, QuerySet
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS

from accounts.access_cache import access_cache
from accounts.models import User
from accounts.selectors import token_is_plausible
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


def token_with_membership(
    *, token: str, org_id: uuid.UUID, cached: bool = False
) -> tuple[AuthToken, Membership | None] | None:
    """The live token (as `accounts.selectors.token_find`) and its user's membership of
    `org_id` with the org (None when not a member), in one round trip: the user, the
    membership and the org are joined to the token's row. None when the token is not live.

    One fixed statement, built once from the models: the ORM's compile of the same
    query (a FilteredRelation and one annotation per column) cost more CPU than the
    round trip it saves (docs/performance.md).

    `cached`: a member's answer may come from this process's access cache (at most
    ACCESS_CACHE_SECONDS old, never past the token's expiry: accounts/access_cache.py)."""
    if not token_is_plausible(token):
        return None
    digest = hash_token(token)
    now = datetime.datetime.now(tz=datetime.UTC)
    alias = router.db_for_read(AuthToken)
    key = (digest, org_id)
    rows = access_cache.get(key) if cached else None
    if rows is not None:
        return _access_from_rows(rows, digest, alias, now)
    stamp = access_cache.stamp()
    with connections[alias].cursor() as cursor:
        cursor.execute(_access_statement(), [org_id, token[: CONSTANTS.TOKEN_KEY_LENGTH], now])
        rows = cursor.fetchall()
    found = _access_from_rows(rows, digest, alias, now)
    if cached and found is not None and found[1] is not None:
        access_cache.put(key, stamp, rows)
    return found


def _access_from_rows(
    rows: Sequence[tuple[Any, ...]], digest: str, alias: str, now: datetime.datetime
) -> tuple[AuthToken, Membership | None] | None:
    for row in rows:
        values = iter(row)
        found = _from_values(AuthToken, values, alias)
        found.user = _from_values(User, values, alias)
        live = found.expiry is not None and found.expiry > now  # as the statement's; a cached row's now
        if not (compare_digest(digest, found.digest) and found.user.is_active and live):
            continue
        membership = _from_values(Membership, values, alias)
        if membership.pk is None:  # LEFT JOINed: not a member
            return found, None
        membership.org = _from_values(Organization, values, alias)
        membership.user = found.user
        return found, membership
    return None


def _columns(model: type[Model], table_alias: str) -> str:
    return ", ".join(f'{table_alias}."{field.column}"' for field in model._meta.concrete_fields)


def _from_values(model: type[Model], values: Iterator[Any], db: str) -> Any:
    fields = model._meta.concrete_fields
    return model.from_db(db, [field.attname for field in fields], [next(values) for _ in fields])


@cache
def _access_statement() -> str:
    token, user = AuthToken._meta.db_table, User._meta.db_table
    membership, org = Membership._meta.db_table, Organization._meta.db_table
    return (
        f"SELECT {_columns(AuthToken, 't')}, {_columns(User, 'u')}, {_columns(Membership, 'm')},"
        f" {_columns(Organization, 'o')}"
        f' FROM "{token}" t JOIN "{user}" u ON u."id" = t."user_id"'
        f' LEFT JOIN "{membership}" m ON m."user_id" = t."user_id" AND m."org_id" = %s'
        f' LEFT JOIN "{org}" o ON o."id" = m."org_id"'
        ' WHERE t."token_key" = %s AND t."expiry" > %s'
    )


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
