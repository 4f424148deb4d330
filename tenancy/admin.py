from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.models import User
from core.admin_clusters import OrgClusterAdmin, org_admin_write
from core.admin_filters import OrgIdFilter
from core.admin_paginator import EstimatedCountPaginator
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tenancy.services import (
    PROPERTY_UPDATABLE_FIELDS,
    LastOwner,
    MembershipNotFound,
    membership_add,
    membership_remove,
    membership_role_change,
    property_create,
    property_delete,
    property_update,
)

USER_SEARCH_LIMIT = 100  # users matched by a membership search's username term


def _membership_save(request: HttpRequest, membership: Membership, *, previous_user_id: Any) -> None:
    """An admin edit of a membership, through the same services as the API (so a
    demotion or removal has the same revocation effects), in one transaction under the
    org's lock (core.admin_clusters.org_admin_write: refused on a copy a move left)."""
    try:
        with org_admin_write(membership.org_id):
            if previous_user_id is None:
                saved = membership_add(org=membership.org, user=membership.user, role=Role(membership.role))
                membership.pk, membership.created_at = saved.pk, saved.created_at
            elif previous_user_id != membership.user_id:  # moved to another user: remove, then add
                membership_remove(org=membership.org, user_id=previous_user_id)
                saved = membership_add(org=membership.org, user=membership.user, role=Role(membership.role))
                membership.pk, membership.created_at = saved.pk, saved.created_at
            else:
                membership_role_change(
                    org=membership.org, user_id=membership.user_id, role=Role(membership.role)
                )
    except LastOwner:
        messages.error(request, f"{membership.org} would have no owner left: that change was not made.")


def _membership_delete(request: HttpRequest, membership: Membership) -> None:
    try:
        with org_admin_write(membership.org_id):
            membership_remove(org=membership.org, user_id=membership.user_id)
    except LastOwner:
        messages.error(request, f"{membership.org} would have no owner left: its last owner was kept.")
    except MembershipNotFound:
        pass  # already gone


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Organization)
class OrganizationAdmin(OrgClusterAdmin):
    org_field = "id"
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "=id")
    readonly_fields = ("id", "created_at")
    inlines = [MembershipInline]
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        # What admin's change message reads (formset.save() would set them).
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.forms:
            membership = inline_form.instance
            if inline_form in formset.deleted_forms:
                if membership.pk is not None:
                    _membership_delete(
                        request, Membership.objects.select_related("org").get(pk=membership.pk)
                    )
                    formset.deleted_objects.append(membership)
            elif inline_form.has_changed():
                previous = inline_form.initial.get("user") if membership.pk is not None else None
                membership.org = form.instance
                _membership_save(request, membership, previous_user_id=previous)
                if previous is None:
                    formset.new_objects.append(membership)
                else:
                    formset.changed_objects.append((membership, inline_form.changed_data))


@admin.register(Membership)
class MembershipAdmin(OrgClusterAdmin):
    list_display = ("user", "org", "role", "created_at")
    list_filter = ("role", OrgIdFilter)
    # Users live on the directory cluster: read with a second query, never joined (a
    # join on an org's other cluster finds no user and drops the row).
    list_select_related = ("org",)
    search_fields = ("org__name", "=org__id")  # and usernames: get_search_results
    raw_id_fields = ("user", "org")
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).prefetch_related("user")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """Also the memberships of users whose username contains the term (the users
        are found on the directory cluster, then their memberships by id here)."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            users = User.objects.filter(username__icontains=term).values_list("id", flat=True)[
                :USER_SEARCH_LIMIT
            ]
            found |= queryset.filter(user_id__in=list(users))
        return found, may_have_duplicates

    # Admin writes are writes: through tenancy.services, with every revocation effect.
    def save_model(self, request: HttpRequest, obj: Membership, form: ModelForm, change: bool) -> None:
        if change and "org" in form.changed_data:
            _membership_delete(request, Membership.objects.select_related("org").get(pk=obj.pk))
            change = False
        previous = form.initial.get("user") if change else None
        _membership_save(request, obj, previous_user_id=previous)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        _membership_delete(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for membership in queryset.select_related("org").order_by("id"):
            _membership_delete(request, membership)


@admin.register(Property)
class PropertyAdmin(OrgClusterAdmin):
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
