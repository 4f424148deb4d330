"""Who may call system and monitoring routes: staff users or the METRICS_TOKEN bearer."""

import hmac
from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from accounts.models import User


def has_metrics_token(request: Request) -> bool:
    expected = settings.METRICS_TOKEN
    if not expected:
        return False
    scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


class IsStaffOrMetricsToken(BasePermission):
    message = "Staff users or the metrics token only."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if has_metrics_token(request):
            return True
        # None unauthenticated: REST_FRAMEWORK's UNAUTHENTICATED_USER is None (the stubs
        # cannot know).
        user: User | AnonymousUser | None = request.user
        return bool(user is not None and user.is_authenticated and user.is_staff)
