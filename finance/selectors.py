"""Reads for finance: entry lists and the per-currency summary (from the per-day totals)."""

import datetime
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncMonth

from finance.models import DailyTotal, FinanceEntry
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

_PERIOD_FORMATS = {"day": "%Y-%m-%d", "month": "%Y-%m"}


@dataclass(frozen=True)
class SummaryFilters:
    property_id: uuid.UUID | None = None
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    group_by: str | None = None  # None, "day" or "month"


class _Sums:
    """revenue and expense per currency, under any grouping key."""

    def __init__(self) -> None:
        self.by_group: dict[Any, dict[str, dict[str, Decimal]]] = defaultdict(
            lambda: defaultdict(lambda: {"revenue": _ZERO, "expense": _ZERO})
        )

    def add(self, group: Any, currency: str, kind: str, amount: Decimal) -> None:
        self.by_group[group][currency][kind] += amount

    def totals(self, group: Any) -> list[dict[str, str]]:
        per_currency = self.by_group[group]
        return [
            {"currency": currency, **_totals(**per_currency[currency])} for currency in sorted(per_currency)
        ]


def _totals(revenue: Decimal, expense: Decimal) -> dict[str, str]:
    return {"revenue": f"{revenue:.2f}", "expense": f"{expense:.2f}", "net": f"{revenue - expense:.2f}"}


def finance_summary(*, org: Organization, filters: SummaryFilters) -> dict[str, Any]:
    """Revenue, expense and net per currency and per property (and per day or month
    with `group_by`); never across currencies.

    One grouped query over the org's per-day totals (finance.totals), not its rows:
    the cost grows with the days and properties in range, not with the entries.
    Keys whose entries were all deleted (count 0) are left out, as if never written.
    """
    totals = DailyTotal.objects.filter(org_id=org.id)
    if filters.property_id is not None:
        totals = totals.filter(property_id=filters.property_id)
    if filters.date_from is not None:
        totals = totals.filter(day__gte=filters.date_from)
    if filters.date_to is not None:
        totals = totals.filter(day__lte=filters.date_to)
    group_fields = ["property_id", "currency", "kind"]
    if filters.group_by == "day":
        group_fields.append("day")
    elif filters.group_by == "month":
        totals = totals.annotate(period=TruncMonth("day"))
        group_fields.append("period")
    rows = (
        totals.values(*group_fields).annotate(amount=Sum("total"), entries=Sum("count")).filter(entries__gt=0)
    )

    overall, by_property, by_period = _Sums(), _Sums(), _Sums()
    for row in rows.order_by():
        currency, kind, amount = row["currency"], row["kind"], row["amount"]
        overall.add(None, currency, kind, amount)
        by_property.add(row["property_id"], currency, kind, amount)
        if filters.group_by is not None:
            by_period.add(row.get("day") or row.get("period"), currency, kind, amount)

    summary: dict[str, Any] = {
        "from": filters.date_from,
        "to": filters.date_to,
        "property_id": filters.property_id,
        "totals": overall.totals(None),
        "properties": [
            {"property_id": property_id, "totals": by_property.totals(property_id)}
            for property_id in sorted(by_property.by_group, key=str)
        ],
    }
    if filters.group_by is not None:
        summary["group_by"] = filters.group_by
        summary["periods"] = [
            {
                "period": period.strftime(_PERIOD_FORMATS[filters.group_by]),
                "totals": by_period.totals(period),
            }
            for period in sorted(by_period.by_group)
        ]
    return summary
