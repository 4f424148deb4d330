"""Orgs, members and properties: thin views over tenancy services and selectors."""

import uuid
from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import authenticated_user
from accounts.models import User
from core.openapi import paginated
from core.pagination import PAGE_PARAMETERS, paginate_desc, paginate_desc_across
from edgecache.cacheable import EdgeCachedApi
from edgecache.tags import org_section_tag, property_tag
from idempotency.api import IdempotentWritesMixin
from replicas.context import bind_cluster
from replicas.topology import topology
from tenancy.access import OrgScopedApi
from tenancy.api.serializers import (
    MemberInput,
    MemberOutput,
    MemberRoleInput,
    OrganizationInput,
    OrganizationOutput,
    PropertyInput,
    PropertyOutput,
)
from tenancy.roles import Role
from tenancy.selectors import memberships_of_org, memberships_of_user, properties_of_org, property_get
from tenancy.services import (
    LastOwner,
    MembershipNotFound,
    membership_add,
    membership_remove,
    membership_role_change,
    organization_create,
    property_create,
)

_DETAIL = inline_serializer("MemberErrorDetail", {"detail": serializers.CharField()})


class LastOwnerConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = (
        "The organization's last owner cannot be demoted or removed; make another member owner first."
    )
    default_code = "last_owner"


class OrganizationListCreateApi(IdempotentWritesMixin, APIView):
    """POST /v1/orgs has no org yet: its Idempotency-Key is scoped to the user alone,
    and its record kept on the cluster that receives new orgs, in the org's transaction."""

    def bind_database(self, request: HttpRequest, **kwargs: Any) -> None:
        bind_cluster(topology().default)

    @extend_schema(parameters=PAGE_PARAMETERS, responses=paginated(OrganizationOutput))
    def get(self, request: Request) -> Response:
        page = paginate_desc_across(
            memberships_of_user(user=authenticated_user(request)), request, ("org_id",)
        )
        return Response(page.serialized(OrganizationOutput))

    @extend_schema(request=OrganizationInput, responses={201: OrganizationOutput})
    def post(self, request: Request) -> Response:
        data = OrganizationInput(data=request.data)
        data.is_valid(raise_exception=True)
        membership = organization_create(name=data.validated_data["name"], owner=authenticated_user(request))
        return Response(OrganizationOutput(membership).data, status=status.HTTP_201_CREATED)


class OrganizationDetailApi(OrgScopedApi):
    access_cacheable = False  # shows the caller's role: read it fresh

    @extend_schema(responses=OrganizationOutput)
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        return Response(OrganizationOutput(self.membership).data)


class MemberListCreateApi(OrgScopedApi):
    write_role = Role.OWNER

    @extend_schema(parameters=PAGE_PARAMETERS, responses=paginated(MemberOutput))
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        page = paginate_desc(memberships_of_org(org=self.org), request, ("id",))
        return Response(page.serialized(MemberOutput))

    @extend_schema(request=MemberInput, responses={201: MemberOutput})
    def post(self, request: Request, org_id: uuid.UUID) -> Response:
        data = MemberInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = User.objects.filter(username=data.validated_data["username"], is_active=True).first()
        if user is None:
            raise serializers.ValidationError({"username": ["No active user with this username."]})
        if memberships_of_org(org=self.org).filter(user=user).exists():
            raise serializers.ValidationError({"username": ["Already a member of this organization."]})
        membership = membership_add(org=self.org, user=user, role=Role(data.validated_data["role"]))
        return Response(MemberOutput(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailApi(OrgScopedApi):
    """PATCH (role) and DELETE one member: owners only; the last owner is kept (409)."""

    write_role = Role.OWNER
    patch_is_partial = False  # core/openapi.py: PATCH needs its role

    _errors = {
        401: OpenApiResponse(_DETAIL, description="Missing, bad, revoked or expired token."),
        403: OpenApiResponse(_DETAIL, description="The caller is a member but not an owner."),
        404: OpenApiResponse(_DETAIL, description="No such org for the caller, or the user is not a member."),
        409: OpenApiResponse(_DETAIL, description="The org's last owner cannot be demoted or removed."),
        429: OpenApiResponse(_DETAIL, description="Rate limit of the token; see Retry-After."),
    }

    @extend_schema(request=MemberRoleInput, responses={200: MemberOutput, 400: None, **_errors})
    def patch(self, request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
        data = MemberRoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            membership = membership_role_change(
                org=self.org, user_id=user_id, role=Role(data.validated_data["role"])
            )
        except MembershipNotFound:
            raise NotFound() from None
        except LastOwner:
            raise LastOwnerConflict() from None
        return Response(MemberOutput(memberships_of_org(org=self.org).get(id=membership.id)).data)

    @extend_schema(request=None, responses={204: None, **_errors})
    def delete(self, request: Request, org_id: uuid.UUID, user_id: uuid.UUID) -> Response:
        try:
            membership_remove(org=self.org, user_id=user_id)
        except MembershipNotFound:
            raise NotFound() from None
        except LastOwner:
            raise LastOwnerConflict() from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class PropertyListCreateApi(EdgeCachedApi, OrgScopedApi):
    def edge_cache_tags(self, request: Request) -> list[str]:
        return [org_section_tag(self.org.id, "properties")]

    @extend_schema(parameters=PAGE_PARAMETERS, responses=paginated(PropertyOutput))
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        page = paginate_desc(properties_of_org(org=self.org), request, ("id",))
        return Response(page.serialized(PropertyOutput))

    @extend_schema(request=PropertyInput, responses={201: PropertyOutput})
    def post(self, request: Request, org_id: uuid.UUID) -> Response:
        data = PropertyInput(data=request.data)
        data.is_valid(raise_exception=True)
        prop = property_create(org=self.org, **data.validated_data)
        return Response(PropertyOutput(prop).data, status=status.HTTP_201_CREATED)


class PropertyDetailApi(EdgeCachedApi, OrgScopedApi):
    def edge_cache_tags(self, request: Request) -> list[str]:
        return [org_section_tag(self.org.id, "properties"), property_tag(self.kwargs["property_id"])]

    @extend_schema(responses=PropertyOutput)
    def get(self, request: Request, org_id: uuid.UUID, property_id: uuid.UUID) -> Response:
        prop = property_get(org=self.org, property_id=property_id)
        if prop is None:
            raise NotFound()
        return Response(PropertyOutput(prop).data)
