"""Generic views and a ModelSerializer, as a fresh DRF service would write them."""

from django.db.models import QuerySet
from rest_framework import generics, serializers
from rest_framework.pagination import CursorPagination

from bench.bare_drf.models import BareEntry


class BareEntrySerializer(serializers.ModelSerializer[BareEntry]):
    class Meta:
        model = BareEntry
        fields = ["id", "org_id", "property_id", "amount", "currency", "category", "description",
                  "occurred_on", "created_by_id", "created_at", "updated_at", "version"]  # fmt: skip
        read_only_fields = ["id", "org_id", "created_by_id", "created_at", "updated_at", "version"]


class NewestFirst(CursorPagination):
    ordering = ("-occurred_on", "-id")
    page_size = 50
    page_size_query_param = "page_size"


class OrgEntries(generics.GenericAPIView[BareEntry]):
    serializer_class = BareEntrySerializer

    def get_queryset(self) -> QuerySet[BareEntry]:
        return BareEntry.objects.filter(org_id=self.kwargs["org_id"])


class EntryListCreate(OrgEntries, generics.ListCreateAPIView[BareEntry]):
    pagination_class = NewestFirst

    def perform_create(self, serializer: serializers.BaseSerializer[BareEntry]) -> None:
        serializer.save(org_id=self.kwargs["org_id"])


class EntryDetail(OrgEntries, generics.RetrieveAPIView[BareEntry]):
    pass
