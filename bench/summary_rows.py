"""The finance summary as it was before the per-day totals: two grouped aggregates
over the org's rows on every call. Kept for `make bench-summary`'s "before" figures
only (served at /bench/orgs/{org}/finance/summary-rows by bench/urls.py)."""

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from rest_framework.request import Request
from rest_framework.response import Response

from finance.api.serializers import SummaryFilterInput
from finance.api.views import FinanceSummaryApi
from finance.models import Expense, Revenue
from finance.selectors import EntryFilters, entries_list
from tenancy.models import Organization

_ZERO = Decimal("0.00")


def _totals(revenue: Decimal, expense: Decimal) -> dict[str, str]:
    return {"revenue": f"{revenue:.2f}", "expense": f"{expense:.2f}", "net": f"{revenue - expense:.2f}"}


def finance_summary_from_rows(*, org: Organization, filters: EntryFilters) -> dict[str, Any]:
    sums: dict[tuple[uuid.UUID, str], dict[str, Decimal]] = defaultdict(
        lambda: {"revenue": _ZERO, "expense": _ZERO}
    )
    for model, key in ((Revenue, "revenue"), (Expense, "expense")):
        rows = (
            entries_list(model=model, org=org, filters=filters)
            .values("property_id", "currency")
            .annotate(total=Sum("amount"))
            .order_by()
        )
        for row in rows:
            sums[(row["property_id"], row["currency"])][key] += row["total"]
    by_currency: dict[str, dict[str, Decimal]] = defaultdict(lambda: {"revenue": _ZERO, "expense": _ZERO})
    by_property: dict[uuid.UUID, dict[str, dict[str, Decimal]]] = defaultdict(dict)
    for (property_id, currency), amounts in sums.items():
        by_currency[currency]["revenue"] += amounts["revenue"]
        by_currency[currency]["expense"] += amounts["expense"]
        by_property[property_id][currency] = amounts
    return {
        "from": filters.date_from,
        "to": filters.date_to,
        "property_id": filters.property_id,
        "totals": [{"currency": c, **_totals(**by_currency[c])} for c in sorted(by_currency)],
        "properties": [
            {"property_id": p, "totals": [{"currency": c, **_totals(**per[c])} for c in sorted(per)]}
            for p, per in sorted(by_property.items(), key=lambda item: str(item[0]))
        ],
    }


class SummaryFromRowsApi(FinanceSummaryApi):
    """The real summary view (auth, membership, edge headers) on the old selector."""

    def get(self, request: Request, org_id: uuid.UUID) -> Response:
        query = SummaryFilterInput(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        data = query.validated_data
        filters = EntryFilters(
            property_id=data.get("property_id"), date_from=data.get("from"), date_to=data.get("to")
        )
        return Response(finance_summary_from_rows(org=self.org, filters=filters))
