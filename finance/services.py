"""Writes for finance. Every expense and revenue change goes through here."""

from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.models import User
from edgecache.purge import purge_after_commit
from edgecache.tags import finance_write_tags
from finance.events import entry_event_on_commit
from finance.models import FinanceEntry
from replicas.middleware import record_write_position
from tenancy.models import Organization, Property


def entry_create(
    *,
    model: type[FinanceEntry],
    org: Organization,
    created_by: User,
    property: Property,
    amount: Decimal,
    currency: str,
    category: str,
    occurred_on: Any,
    description: str = "",
) -> FinanceEntry:
    if property.org_id != org.id:
        raise ValueError("property belongs to another organization")
    entry = model.objects.create(
        org=org,
        property=property,
        amount=amount,
        currency=currency,
        category=category,
        occurred_on=occurred_on,
        description=description,
        created_by=created_by,
    )
    _announce_after_commit(entry, "created")
    return entry


@transaction.atomic
def entry_update(*, entry: FinanceEntry, changes: dict[str, Any]) -> FinanceEntry:
    """Apply `changes` under a row lock, so two concurrent PATCHes never interleave."""
    locked = type(entry).objects.select_for_update().get(org_id=entry.org_id, id=entry.id)
    new_property = changes.get("property")
    if new_property is not None and new_property.org_id != locked.org_id:
        raise ValueError("property belongs to another organization")
    for name, value in changes.items():
        setattr(locked, name, value)
    locked.save(update_fields=[*changes, "updated_at"])
    _announce_after_commit(locked, "updated")
    return locked


@transaction.atomic
def entry_delete(*, entry: FinanceEntry) -> None:
    deleted, _ = type(entry).objects.filter(org_id=entry.org_id, id=entry.id).delete()
    if deleted:
        _announce_after_commit(entry, "deleted")


def _announce_after_commit(entry: FinanceEntry, action: str) -> None:
    """After commit, in this order: publish the write's WAL position for the org's
    readers (so no replica without the write serves them, the edge's refill included),
    purge the edge cache, push the realtime event. A rolled-back write does none."""
    transaction.on_commit(record_write_position)
    purge_after_commit(finance_write_tags(org_id=entry.org_id, kind=entry.kind))
    entry_event_on_commit(entry=entry, action=action)
