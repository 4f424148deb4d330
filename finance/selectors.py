"""Reads for finance: entry lists and the per-currency summary."""

import datetime
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum

from finance.models import Expense, FinanceEntry, Revenue
from tenancy.models import Organization


@dataclass(frozen=True)
class EntryFilters:
    property_id: uuid.UUID | None = None
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    category: str | None = None


def entries_list(*, model: type[FinanceEntry], org: Organization, filters: EntryFilters) -> QuerySet:
    queryset = model.objects.filter(org=org)
    if filters.property_id is not None:
        queryset = queryset.filter(property_id=filters.property_id)
    if filters.date_from is not None:
        queryset = queryset.filter(occurred_on__gte=filters.date_from)
    if filters.date_to is not None:
        queryset = queryset.filter(occurred_on__lte=filters.date_to)
    if filters.category is not None:
        queryset = queryset.filter(category=filters.category)
    return queryset


def entry_get(*, model: type[FinanceEntry], org: Organization, entry_id: uuid.UUID) -> FinanceEntry | None:
    # org first: Postgres prunes to the org's partition instead of probing all of them.
    return model.objects.filter(org=org, id=entry_id).first()


_ZERO = Decimal("0.00")


def _totals(revenue: Decimal, expense: Decimal) -> dict[str, str]:
    return {"revenue": f"{revenue:.2f}", "expense": f"{expense:.2f}", "net": f"{revenue - expense:.2f}"}


def finance_summary(*, org: Organization, filters: EntryFilters) -> dict[str, Any]:
    """Revenue, expense and net per currency and per property; never across currencies.

    Two grouped queries (one per table) by property and currency; the per-currency
    totals are the exact Decimal sums of those groups.
    """
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
        "totals": [
            {"currency": currency, **_totals(**by_currency[currency])} for currency in sorted(by_currency)
        ],
        "properties": [
            {
                "property_id": property_id,
                "totals": [
                    {"currency": currency, **_totals(**per_currency[currency])}
                    for currency in sorted(per_currency)
                ],
            }
            for property_id, per_currency in sorted(by_property.items(), key=lambda item: str(item[0]))
        ],
    }
