"""Django admin with the same login throttle as the API (accounts/login_throttle.py).

`/admin/login/` counts failed password logins per username and client address in
Redis, across every server process; once either is over its limit the login page
answers 429 with Retry-After (the right password included) until the window ends.
"""

import math
from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse, JsonResponse

from accounts.login_throttle import (
    LoginAttempt,
    client_address,
    login_blocked_for,
    login_failure_record,
    login_success_record,
)


class ThrottledAdminSite(AdminSite):
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method != "POST":
            return super().login(request, extra_context)
        attempt = LoginAttempt(
            username=request.POST.get("username", "")[:150], address=client_address(request)
        )
        wait = login_blocked_for(attempt)
        if wait is not None:
            response: HttpResponse = JsonResponse(
                {"detail": "Too many failed logins; try again later."}, status=429
            )
            response["Retry-After"] = str(math.ceil(wait))
            return response
        response = super().login(request, extra_context)
        if request.user.is_authenticated and request.user.is_staff and response.status_code == 302:
            login_success_record(attempt)
        else:
            login_failure_record(attempt)
        return response


class ProjectAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.ThrottledAdminSite"
