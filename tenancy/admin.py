from django.contrib import admin

from core.admin_filters import OrgIdFilter
from core.admin_paginator import EstimatedCountPaginator
from tenancy.models import Membership, Organization, Property


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
    readonly_fields = ("id", "created_at")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
