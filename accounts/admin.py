from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import User
from core.admin_paginator import EstimatedCountPaginator


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "date_joined", "id")
    search_fields = ("username", "email", "=id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
