"""Org resolution for every /v1/orgs/{org_id}/... route.

The order of refusals is part of the contract: no or bad token 401; not a member of
the org 404 (never 403, which would confirm the org exists); a member whose role may
not do the action 403. The membership is read from the primary, never a replica that
may not have replayed a removal or a demotion yet (revocation within 1 s).

The token and the membership are read in one query (`OrgTokenAuthentication`): the
token lookup LEFT JOINs the user's membership of the URL's org, when the org lives on
the cluster that holds the tokens. Both still come from the primary, on every request.
"""

import logging
import uuid
from typing import Any

from knox.models import AuthToken
from rest_framework.exceptions import AuthenticationFailed, NotFound, PermissionDenied
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.authentication import ExpiringTokenAuthentication
from accounts.models import User
from idempotency.api import IdempotentWritesMixin
from replicas.context import bind_org_cluster, primary_reads
from replicas.topology import OrgNotRouted, topology
from tenancy.models import Membership, Organization
from tenancy.roles import Role, role_allows
from tenancy.selectors import membership_get, token_with_membership

logger = logging.getLogger("tenancy.access")


class OrgTokenAuthentication(ExpiringTokenAuthentication):
    """The project's token authentication, reading the caller's membership of the URL's
    org in the same query (kept on the token row as `org_membership`: (org id,
    membership or None)). A new instance per request (DRF), so `_org_id` is the request's."""

    _org_id: uuid.UUID | None = None

    def authenticate(self, request: Request) -> tuple[User, AuthToken] | None:
        org_id = (request.parser_context or {}).get("kwargs", {}).get("org_id")
        self._org_id = org_id if isinstance(org_id, uuid.UUID) and _tokens_cluster_holds(org_id) else None
        return super().authenticate(request)

    def authenticate_credentials(self, token: Any) -> tuple[User, AuthToken]:
        if self._org_id is None:
            return super().authenticate_credentials(token)
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid token.") from None
        with primary_reads():
            found = token_with_membership(token=text, org_id=self._org_id)
        if found is None:
            raise AuthenticationFailed("Invalid token.")
        row, membership = found
        row.org_membership = (self._org_id, membership)  # type: ignore[attr-defined]
        return row.user, row


def _tokens_cluster_holds(org_id: uuid.UUID) -> bool:
    """Whether the org's rows live on the primary that holds the tokens (the home cluster's)."""
    try:
        return topology().cluster_for_org(org_id).primary == topology().home.primary
    except OrgNotRouted:
        return False


class OrgScopedApi(IdempotentWritesMixin, APIView):
    """Base view: resolves `self.org` and `self.membership` from the URL's org_id.

    Org resolution is part of the permission check, so it is done when the
    idempotency hook (which runs at the end of `initial`) needs the org for its scope.
    """

    authentication_classes = [OrgTokenAuthentication]
    read_role: Role = Role.VIEWER
    write_role: Role = Role.MANAGER

    org: Organization
    membership: Membership

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)  # authentication first: 401 before 404
        org_id = self.kwargs["org_id"]
        try:
            bind_org_cluster(org_id)  # the org's database cluster, for the request
        except OrgNotRouted:
            logger.error("org %s is outside every database cluster range", org_id)
            raise NotFound() from None
        joined = getattr(request.auth, "org_membership", None)  # read with the token, same query
        if joined is not None and joined[0] == org_id:
            membership = joined[1]
        else:
            with primary_reads():  # a removal or demotion holds from the next request on
                membership = membership_get(org_id=org_id, user=request.user)
        if membership is None:
            raise NotFound()
        required = self.read_role if request.method in SAFE_METHODS else self.write_role
        if not role_allows(membership.role, required):
            raise PermissionDenied(f"The {membership.role} role may not do this; {required} or above may.")
        self.membership = membership
        self.org = membership.org

    def idempotency_org_id(self) -> uuid.UUID:
        return self.org.id
