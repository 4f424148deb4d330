"""Admin for expenses and revenues. Admin writes are writes: saving, deleting and the
bulk delete action go through finance.services, so each takes a change version and
has every effect an API write has (realtime event, edge purge, read-your-writes).
Each page runs on the cluster of its org (core/admin_clusters.py)."""

import contextlib
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from core.admin_clusters import OrgClusterAdmin
from core.admin_filters import OrgIdFilter, PropertyIdFilter
from core.admin_paginator import EstimatedCountPaginator
from finance.models import Expense, FinanceEntry, Revenue
from finance.services import UPDATABLE_FIELDS, EntryGone, entry_create, entry_delete, entry_update


class FinanceEntryAdmin(OrgClusterAdmin):
    list_display = ("occurred_on", "money", "category", "property", "org", "created_by", "created_at")
    # No "currency" filter: its choices come from a DISTINCT over every row of the table.
    list_filter = (OrgIdFilter, PropertyIdFilter, "occurred_on")
    # Users live on the directory cluster: read with a second query, never joined
    # (a join on an org's other cluster finds no user and drops the row).
    list_select_related = ("org", "property")
    search_fields = ("=id", "category", "description")
    raw_id_fields = ("org", "property", "created_by")
    readonly_fields = ("id", "created_at", "updated_at", "version")
    # By id (time-ordered UUIDv7): one backward scan of the partitions' id indexes,
    # where "-occurred_on" would sort every row of every org.
    ordering = ("-id",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).prefetch_related("created_by")

    def get_readonly_fields(self, request: HttpRequest, obj: FinanceEntry | None = None) -> tuple[str, ...]:
        fixed = ("org", "created_by") if obj is not None else ()  # an entry never changes org
        return (*self.readonly_fields, *fixed)

    def save_model(self, request: HttpRequest, obj: FinanceEntry, form: ModelForm, change: bool) -> None:
        if change:
            changes = {name: getattr(obj, name) for name in form.changed_data if name in UPDATABLE_FIELDS}
            if changes:
                saved = entry_update(entry=obj, changes=changes)
                obj.version, obj.updated_at = saved.version, saved.updated_at
            return
        created = entry_create(
            model=type(obj),
            org=obj.org,
            created_by=obj.created_by,
            property_id=obj.property_id,
            amount=obj.amount,
            currency=obj.currency,
            category=obj.category,
            occurred_on=obj.occurred_on,
            description=obj.description,
            entry_id=obj.id,
        )
        obj.version, obj.created_at, obj.updated_at = created.version, created.created_at, created.updated_at

    def delete_model(self, request: HttpRequest, obj: FinanceEntry) -> None:
        with contextlib.suppress(EntryGone):  # already deleted: nothing left to do
            entry_delete(entry=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for entry in queryset.order_by("id"):
            self.delete_model(request, entry)

    @admin.display(description="amount", ordering="amount")
    def money(self, entry: FinanceEntry) -> str:
        return f"{entry.amount:,.2f} {entry.currency}"


admin.site.register(Expense, FinanceEntryAdmin)
admin.site.register(Revenue, FinanceEntryAdmin)
