"""The real URL conf plus bare baselines, for benchmarks only (never in production):
bench/ping does no work at all (the request path alone), bench/bare-* render 20 rows; bench/orgs/{org}/finance/summary-rows is the summary
as it was before the per-day totals (bench/summary_rows.py)."""

from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.summary_rows import SummaryFromRowsApi
from config.urls import urlpatterns as real_urlpatterns

ROWS = [{"id": i, "amount": "12.50", "currency": "EUR", "category": "laundry"} for i in range(20)]


def bare_django(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"results": ROWS, "next": None})


class BareDRFList(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"results": ROWS, "next": None})


def ping(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


urlpatterns = [
    path("bench/ping", ping, name="bench-ping"),
    path("bench/bare-django", bare_django),
    path("bench/bare-drf", BareDRFList.as_view()),
    path("bench/orgs/<uuid:org_id>/finance/summary-rows", SummaryFromRowsApi.as_view()),
    *real_urlpatterns,
]
