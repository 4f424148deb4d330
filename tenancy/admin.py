from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from core.admin_filters import OrgIdFilter
from core.admin_paginator import EstimatedCountPaginator
from tenancy.models import Membership, Organization, Property
from tenancy.services import PROPERTY_UPDATABLE_FIELDS, property_create, property_delete, property_update


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "=id")
    readonly_fields = ("id", "created_at")
    inlines = [MembershipInline]
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "org", "role", "created_at")
    list_filter = ("role", OrgIdFilter)
    list_select_related = ("user", "org")
    search_fields = ("user__username", "org__name", "=org__id")
    raw_id_fields = ("user", "org")
    show_full_result_count = False
    paginator = EstimatedCountPaginator


@admin.register(Property)
class PropertyAdmin(admin.ModelAdmin):
    list_display = ("name", "org", "currency", "timezone", "created_at")
    list_filter = ("currency", OrgIdFilter)
    list_select_related = ("org",)
    search_fields = ("name", "=id", "org__name", "=org__id")
    raw_id_fields = ("org",)
    readonly_fields = ("id", "created_at", "version")
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    # Admin writes are writes: through tenancy.services, with a change version and
    # every effect of an API write.
    def get_readonly_fields(self, request: HttpRequest, obj: Property | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "org") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Property, form: ModelForm, change: bool) -> None:
        if change:
            changes = {
                name: getattr(obj, name) for name in form.changed_data if name in PROPERTY_UPDATABLE_FIELDS
            }
            if changes:
                obj.version = property_update(prop=obj, changes=changes).version
            return
        created = property_create(org=obj.org, name=obj.name, currency=obj.currency, timezone=obj.timezone)
        obj.pk, obj.version, obj.created_at = created.pk, created.version, created.created_at

    def delete_model(self, request: HttpRequest, obj: Property) -> None:
        property_delete(prop=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for prop in queryset.order_by("id"):
            property_delete(prop=prop)
