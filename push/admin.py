"""Operators' view of push: devices (deactivate one by hand) and deliveries, read-only
(a dead letter is a delivery with status `dead`; filter by status and org)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from core.admin_filters import OrgIdFilter
from core.admin_paginator import EstimatedCountPaginator
from push.models import Delivery, Device
from push.services import devices_of_user_may_fire


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "kind", "active", "last_error", "created_at")
    list_filter = ("kind", "active")
    list_select_related = ("user",)
    search_fields = ("=id", "user__username")
    raw_id_fields = ("user",)
    fields = ("id", "user", "kind", "active", "last_error", "created_at", "deactivated_at")
    readonly_fields = ("id", "user", "kind", "last_error", "created_at", "deactivated_at")
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # devices register themselves (POST /v1/devices)

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        """Reactivating a device by hand gives the fan-out work, like registering it."""
        super().save_model(request, obj, form, change)
        if obj.active:
            devices_of_user_may_fire(user_id=obj.user_id)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "notification_type",
        "status",
        "attempts",
        "last_status_code",
        "device_id",
        "created_at",
    )
    list_filter = ("status", "notification_type", OrgIdFilter)  # devices are on the directory database
    search_fields = ("=id", "event_key")
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the worker owns a delivery's state
