from django.contrib import admin

from core.admin_filters import OrgIdFilter, PropertyIdFilter
from core.admin_paginator import EstimatedCountPaginator
from finance.models import Expense, FinanceEntry, Revenue


class FinanceEntryAdmin(admin.ModelAdmin):
    list_display = ("occurred_on", "money", "category", "property", "org", "created_by", "created_at")
    # No "currency" filter: its choices come from a DISTINCT over every row of the table.
    list_filter = (OrgIdFilter, PropertyIdFilter, "occurred_on")
    list_select_related = ("org", "property", "created_by")
    search_fields = ("=id", "category", "description")
    raw_id_fields = ("org", "property", "created_by")
    readonly_fields = ("id", "created_at", "updated_at")
    # By id (time-ordered UUIDv7): one backward scan of the partitions' id indexes,
    # where "-occurred_on" would sort every row of every org.
    ordering = ("-id",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="amount", ordering="amount")
    def money(self, entry: FinanceEntry) -> str:
        return f"{entry.amount:,.2f} {entry.currency}"


admin.site.register(Expense, FinanceEntryAdmin)
admin.site.register(Revenue, FinanceEntryAdmin)
