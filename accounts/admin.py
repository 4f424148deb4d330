from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from knox.models import AuthToken

from accounts.models import User
from accounts.tokens import token_revoke
from core.admin_paginator import EstimatedCountPaginator


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """A password change or a deactivation here revokes the user's API tokens
    (User.save), exactly as through the API."""

    list_display = ("username", "email", "is_staff", "is_active", "date_joined", "id")
    search_fields = ("username", "email", "=id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator


admin.site.unregister(AuthToken)  # knox's admin deletes rows without the revocation effects


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    """Tokens can be looked at and revoked, never created or read back (only digests
    are stored). Revoking goes through accounts.tokens, with its effects at the edge
    and on open sockets."""

    list_display = ("token_key", "user", "created", "expiry")
    list_select_related = ("user",)
    search_fields = ("=token_key", "user__username")
    raw_id_fields = ("user",)
    readonly_fields = ("token_key", "user", "created", "expiry")
    exclude = ("digest",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: AuthToken) -> None:
        token_revoke(token=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AuthToken]) -> None:
        for token in queryset:
            token_revoke(token=token)
