"""Org resolution for every /v1/orgs/{org_id}/... route.

The order of refusals is part of the contract: no or bad token 401; not a member of
the org 404 (never 403, which would confirm the org exists); a member whose role may
not do the action 403. The membership is read from the primary, never a replica that
may not have replayed a removal or a demotion yet (revocation within 1 s).

The token and the membership are read in one query (`OrgTokenAuthentication`): the
token lookup LEFT JOINs the user's membership of the URL's org, when the org lives on
the cluster that holds the tokens. Both come from the primary, or from this process's
access cache, whose answers are at most ACCESS_CACHE_SECONDS (below 1 s) old and never
past the token's expiry (accounts/access_cache.py).
"""

import logging
import uuid
from typing import Any

from django.http import HttpRequest
from knox.models import AuthToken
from rest_framework import status
from rest_framework.exceptions import APIException, AuthenticationFailed, NotFound, PermissionDenied
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.authentication import ExpiringTokenAuthentication, authenticated_user
from accounts.models import User
from directory.exceptions import OrgMoving
from directory.selectors import org_cluster_get, org_fence_wait
from idempotency.api import IdempotentWritesMixin
from replicas.context import bind_org_cluster, primary_reads
from replicas.topology import Cluster, ClusterNotConfigured, OrgNotRouted, topology
from tenancy.models import Membership, Organization
from tenancy.roles import Role, role_allows
from tenancy.selectors import membership_get, token_with_membership

logger = logging.getLogger("tenancy.access")


class OrgTokenAuthentication(ExpiringTokenAuthentication):
    """The project's token authentication, reading the caller's membership of the URL's
    org in the same query (kept on the token row as `org_membership`: (org id,
    membership or None)). A new instance per request (DRF), so `_org_id` is the request's."""

    _org_id: uuid.UUID | None = None
    _request_context: dict[str, Any] | None = None

    def authenticate(self, request: Request) -> tuple[User, AuthToken] | None:
        self._request_context = request.parser_context
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
        view = (self._request_context or {}).get("view")
        cached = bool(getattr(view, "access_cacheable", False))
        with primary_reads():
            found = token_with_membership(token=text, org_id=self._org_id, cached=cached)
        if found is None:
            raise AuthenticationFailed("Invalid token.")
        row, membership = found
        row.org_membership = (self._org_id, membership)
        return row.user, row


def _tokens_cluster_holds(org_id: uuid.UUID) -> bool:
    """Whether the directory places the org on the cluster that holds the tokens."""
    try:
        return org_cluster_get(org_id=org_id)[0].primary == topology().home.primary
    except OrgNotRouted:
        return False


class OrgClusterUnavailable(APIException):
    """The directory places the org on a cluster this server cannot reach (a deploy
    error): fail closed, never serve or write the org from another cluster."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The organization's database is not available on this server; retry later."
    default_code = "org_cluster_unavailable"


class OrgScopedApi(IdempotentWritesMixin, APIView):
    """Base view: resolves `self.org` and `self.membership` from the URL's org_id.

    Org resolution is part of the permission check, so it is done when the
    idempotency hook (which runs at the end of `initial`) needs the org for its scope.
    """

    authentication_classes = [OrgTokenAuthentication]
    # The token and membership may come from this process's access cache (at most
    # ACCESS_CACHE_SECONDS old: accounts/access_cache.py). False for a view whose answer
    # is kept elsewhere for longer (the edge's auth preflight) or shows the membership.
    access_cacheable = True
    read_role: Role = Role.VIEWER
    write_role: Role = Role.MANAGER

    org: Organization
    membership: Membership
    _keyed_cluster: Cluster | None = None  # where a keyed write's transaction was opened
    _fence_outlasted = False  # a keyed write waited out ORG_MOVE_FENCE_SECONDS before its transaction

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)  # authentication first: 401 before 404
        org_id = self.kwargs["org_id"]
        if self._fence_outlasted:
            raise OrgMoving()  # answered now, after authentication, with DRF's handling
        try:
            if request.method not in SAFE_METHODS:
                org_fence_wait(org_id=org_id)  # a move's final switch: wait, or 503
            cluster = bind_org_cluster(org_id)  # the org's database cluster, for the request
        except ClusterNotConfigured:
            logger.error("org %s is placed on a cluster this server has no database for", org_id)
            raise OrgClusterUnavailable() from None
        except OrgNotRouted:
            raise NotFound() from None  # not in the directory: like an org one is not a member of
        if self._keyed_cluster is not None and cluster != self._keyed_cluster:
            raise OrgMoving()  # moved since the keyed write's transaction opened on the old cluster
        joined = getattr(request.auth, "org_membership", None)  # read with the token, same query
        if joined is not None and joined[0] == org_id and cluster.primary == topology().home.primary:
            membership = joined[1]
        else:
            with primary_reads():  # a removal or demotion holds from the next request on
                membership = membership_get(org_id=org_id, user=authenticated_user(request))
        if membership is None:
            raise NotFound()
        required = self.read_role if request.method in SAFE_METHODS else self.write_role
        if not role_allows(membership.role, required):
            raise PermissionDenied(f"The {membership.role} role may not do this; {required} or above may.")
        self.membership = membership
        self.org = membership.org

    def bind_database(self, request: HttpRequest, **kwargs: Any) -> None:
        """A keyed write's transaction opens on the org's primary. Refusals (an org the
        directory cannot place, a move's switch outlasting the wait) are raised by
        check_permissions, after authentication (401 first)."""
        try:
            org_fence_wait(org_id=kwargs["org_id"])
            self._keyed_cluster = bind_org_cluster(kwargs["org_id"])
        except OrgMoving:
            self._fence_outlasted = True
        except OrgNotRouted:
            pass

    def idempotency_org_id(self) -> uuid.UUID:
        return self.org.id
