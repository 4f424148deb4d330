"""POST /v1/orgs/{org_id}/sync/pull and /sync/push (CONTRACT §10; docs/sync.md)."""

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import authenticated_user
from changelog.delivery import delivery_batch
from replicas.context import current_cluster
from replicas.router import read_alias_for_read_only_post
from sync.api.serializers import DetailOutput, GapOutput, PullInput, PullOutput, PushInput, PushOutput
from sync.selectors import sync_pull
from sync.services import ClientOfAnotherUser, sync_push
from tenancy.access import OrgScopedApi
from tenancy.roles import Role

OTHER_USERS_CLIENT = "This client_id belongs to another user; make a new one for this install."

_ERRORS = {
    400: OpenApiResponse(description="Invalid body: DRF's per-field errors, or {detail}."),
    401: OpenApiResponse(DetailOutput, description="No, bad or expired token."),
    404: OpenApiResponse(DetailOutput, description="Not a member of the org."),
    413: OpenApiResponse(DetailOutput, description="Body above MAX_JSON_BODY_BYTES."),
    422: OpenApiResponse(DetailOutput, description="Idempotency-Key reused with another request."),
}


class SyncPullApi(OrgScopedApi):
    """The org's changes since the cookie (all of them, with reset, for a null, unknown or
    stale cookie), one page from one snapshot; follow the cookie until has_more is false."""

    write_role = Role.VIEWER  # a POST that only reads: any member may pull

    @extend_schema(
        request=PullInput,
        responses={
            200: PullOutput,
            403: OpenApiResponse(DetailOutput, description="client_id belongs to another user."),
            409: OpenApiResponse(DetailOutput, description="Idempotency-Key in use by a running request."),
            **_ERRORS,
        },
    )
    def post(self, request: Request, org_id: uuid.UUID) -> Response:
        data = PullInput(data=request.data)
        data.is_valid(raise_exception=True)
        args = data.validated_data
        primary = current_cluster().primary
        page = None
        database = read_alias_for_read_only_post()
        if database != primary:
            page = sync_pull(database=database, primary=primary, org_id=self.org.id, **args)
        if page is None:
            page = sync_pull(database=primary, primary=primary, org_id=self.org.id, **args)
        assert page is not None  # the primary vouches for any cookie: only a replica answers None
        if page.client_user_id is not None and page.client_user_id != request.user.pk:
            raise PermissionDenied(OTHER_USERS_CLIENT)
        return Response(
            {
                "cookie": page.cookie,
                "reset": page.reset,
                "changes": page.changes,
                "has_more": page.has_more,
                "last_mutation_id": page.last_mutation_id,
            }
        )


class SyncPushApi(OrgScopedApi):
    """A client's queued mutations, in id order, each applied at most once: applied,
    already_applied or rejected (processed either way); a gap in the ids stops with 409."""

    write_role = Role.MANAGER  # viewers get 403 before any mutation is looked at

    @extend_schema(
        request=PushInput,
        responses={
            200: PushOutput,
            403: OpenApiResponse(DetailOutput, description="A viewer, or another user's client_id."),
            409: OpenApiResponse(
                GapOutput,
                description="A gap in the mutation ids: the ones before it are applied; resend from "
                "`expected`. (Also: Idempotency-Key in use by a running request, {detail} only.)",
            ),
            **_ERRORS,
        },
    )
    def post(self, request: Request, org_id: uuid.UUID) -> Response:
        data = PushInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            outcome = sync_push(
                org=self.org,
                user=authenticated_user(request),
                client_id=data.validated_data["client_id"],
                mutations=data.mutation_list(),
            )
        except ClientOfAnotherUser:
            raise PermissionDenied(OTHER_USERS_CLIENT) from None
        if outcome.expected is not None:
            detail = f"Mutation ids must rise by 1: expected {outcome.expected} next."
            return Response({"detail": detail, "expected": outcome.expected}, status=status.HTTP_409_CONFLICT)
        return Response(
            {"results": [r.as_dict() for r in outcome.results], "last_mutation_id": outcome.last_mutation_id}
        )

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # Around the Idempotency-Key transaction too: with a key, the mutations commit
        # together at its end, and are still delivered as one batch, before the response.
        with delivery_batch():
            return super().dispatch(request, *args, **kwargs)

    def idempotency_keeps(self, response: HttpResponseBase) -> bool:
        """A gap's 409 follows committed mutations: keep it with them (a replay answers it again)."""
        return super().idempotency_keeps(response) or response.status_code == status.HTTP_409_CONFLICT
