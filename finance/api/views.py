"""Expenses and revenues (one set of views, parameterised by model) and the summary."""

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import authenticated_user
from core.openapi import paginated
from core.pagination import PAGE_PARAMETERS, paginate_desc
from edgecache.cacheable import EdgeCachedApi
from edgecache.tags import org_section_tag
from finance.api.serializers import (
    NO_SUCH_PROPERTY,
    EntryCreateInput,
    EntryFilterInput,
    EntryInput,
    EntryOutput,
    SummaryFilterInput,
    SummaryOutput,
    entry_output,
)
from finance.models import FinanceEntry
from finance.selectors import entries_list, entry_get, finance_summary
from finance.services import EntryGone, PropertyNotInOrg, entry_create, entry_delete, entry_update
from tenancy.access import OrgScopedApi

LIST_ORDER = ("occurred_on", "id")  # newest first; id (UUIDv7) breaks ties by creation

_FILTER_PARAMS = [
    OpenApiParameter("property_id", {"type": "string", "format": "uuid"}),
    OpenApiParameter("from", {"type": "string", "format": "date"}, description="YYYY-MM-DD, inclusive"),
    OpenApiParameter("to", {"type": "string", "format": "date"}, description="YYYY-MM-DD, inclusive"),
    OpenApiParameter("category", {"type": "string", "maxLength": 64}),
    *PAGE_PARAMETERS,
]


def _filters(request: Request) -> EntryFilterInput:
    query = EntryFilterInput(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    return query


class EntryListCreateApi(EdgeCachedApi, OrgScopedApi):
    # as_view(model=...) sets the concrete model per route; the abstract base is the placeholder.
    model: type[FinanceEntry] = FinanceEntry  # type: ignore[type-abstract]

    def edge_cache_tags(self, request: Request) -> list[str]:
        return [org_section_tag(self.org.id, f"{self.model.kind}s")]

    @extend_schema(parameters=_FILTER_PARAMS, responses=paginated(EntryOutput))
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        queryset = entries_list(model=self.model, org=self.org, filters=_filters(request).filters())
        page = paginate_desc(queryset, request, LIST_ORDER)
        return Response(page.as_dict([entry_output(entry) for entry in page.items]))

    @extend_schema(request=EntryInput, responses={201: EntryOutput})
    def post(self, request: Request, org_id: uuid.UUID) -> Response:
        data = EntryCreateInput(data=request.data, context={"org": self.org})
        data.is_valid(raise_exception=True)
        # A failed create fails the request; a keyed one's transaction rolls back whole.
        try:
            entry = entry_create(
                model=self.model,
                org=self.org,
                created_by=authenticated_user(request),
                savepoint=False,
                **data.validated_data,
            )
        except PropertyNotInOrg:  # checked by the INSERT; the transaction rolled back
            raise ValidationError({"property_id": [NO_SUCH_PROPERTY]}) from None
        return Response(entry_output(entry), status=status.HTTP_201_CREATED)


class EntryDetailApi(EdgeCachedApi, OrgScopedApi):
    # as_view(model=...) sets the concrete model per route; the abstract base is the placeholder.
    model: type[FinanceEntry] = FinanceEntry  # type: ignore[type-abstract]

    def edge_cache_tags(self, request: Request) -> list[str]:
        return [org_section_tag(self.org.id, f"{self.model.kind}s")]

    def _entry(self, entry_id: uuid.UUID) -> FinanceEntry:
        entry = entry_get(model=self.model, org=self.org, entry_id=entry_id)
        if entry is None:
            raise NotFound()
        return entry

    @extend_schema(responses=EntryOutput)
    def get(self, request: Request, org_id: uuid.UUID, entry_id: uuid.UUID) -> Response:
        return Response(entry_output(self._entry(entry_id)))

    @extend_schema(request=EntryInput, responses=EntryOutput)
    def patch(self, request: Request, org_id: uuid.UUID, entry_id: uuid.UUID) -> Response:
        entry = self._entry(entry_id)
        data = EntryInput(data=request.data, partial=True, context={"org": self.org})
        data.is_valid(raise_exception=True)
        try:
            updated = entry_update(entry=entry, changes=data.validated_data)
        except EntryGone:
            raise NotFound() from None
        return Response(entry_output(updated))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, org_id: uuid.UUID, entry_id: uuid.UUID) -> Response:
        try:
            entry_delete(entry=self._entry(entry_id))
        except EntryGone:
            raise NotFound() from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class FinanceSummaryApi(EdgeCachedApi, OrgScopedApi):
    def edge_cache_tags(self, request: Request) -> list[str]:
        return [org_section_tag(self.org.id, "summary")]

    @extend_schema(
        parameters=[
            OpenApiParameter("property_id", OpenApiTypes.UUID),
            OpenApiParameter("from", OpenApiTypes.DATE, description="inclusive"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="inclusive"),
            OpenApiParameter("group_by", str, enum=["day", "month"], description="adds `periods`"),
        ],
        responses={
            200: SummaryOutput,
            400: OpenApiResponse(description="A malformed filter, `from` after `to`, or `category`."),
            401: OpenApiResponse(description="No or an invalid token."),
            404: OpenApiResponse(description="No such organization, or the caller is not a member."),
        },
    )
    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        query = SummaryFilterInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        summary: dict[str, Any] = finance_summary(org=self.org, filters=query.filters())
        return Response(summary)
