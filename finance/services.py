"""Writes for finance. Every expense and revenue change goes through here (the REST API,
sync push and Django admin alike).

Each write is one transaction that first takes the org's next change version (the
org's counter row stays locked until commit: one org's writes commit in version order
and lock in the same order), stamps the row with it, and records the change in the
org's change log. The per-day totals behind the summary (finance.totals) change in the
same transaction, after the entry: lock order org counter, entry row, totals rows.
Whatever must follow a write (read-your-writes position, edge purge,
realtime event, notifications) reacts to that record; nothing here knows of it.
"""

import copy
import uuid
from decimal import Decimal
from typing import Any

from django.db import models

from accounts.models import User
from changelog.services import (
    PreparedChange,
    change_prepare,
    change_record,
    org_lock_take,
    org_transaction,
    org_version_take,
)
from finance.api.serializers import entry_output
from finance.models import FinanceEntry
from finance.totals import entry_delete_returning, entry_insert_counted, entry_move_deltas, totals_add
from tenancy.models import Organization

UPDATABLE_FIELDS = frozenset({"property", "amount", "currency", "category", "occurred_on", "description"})


class EntryGone(LookupError):
    """The entry was deleted (or never existed) by the time its change was to be made."""


class PropertyNotInOrg(ValueError):
    """The property does not exist, or belongs to another org: nothing was written (the
    caller's transaction, or the create's own, is rolled back with this error)."""


def entry_create(
    *,
    model: type[FinanceEntry],
    org: Organization,
    created_by: User,
    property_id: uuid.UUID | str,
    amount: Decimal,
    currency: str,
    category: str,
    occurred_on: Any,
    description: str = "",
    entry_id: Any = None,
    savepoint: bool = True,
) -> FinanceEntry:
    """Raises PropertyNotInOrg unless the property is the org's (checked by the entry's
    statement itself; the error rolls back the version it took).

    `savepoint=False`: the caller's transaction, if any, fails as a whole when this
    fails (a REST create), so no savepoint is needed; callers that go on after a failed
    create in the same transaction (a sync push's next mutation) keep the default."""
    fields: dict[str, Any] = {"id": entry_id} if entry_id is not None else {}
    # Parsed values, as a row read back would hold them (the change's data renders them).
    amount = model._meta.get_field("amount").to_python(amount)
    occurred_on = model._meta.get_field("occurred_on").to_python(occurred_on)
    with org_transaction(savepoint=savepoint):
        entry = model(
            org=org,
            property_id=property_id,
            amount=amount,
            currency=currency,
            category=category,
            occurred_on=occurred_on,
            description=description,
            created_by=created_by,
            **fields,
        )

        def change() -> PreparedChange:
            return change_prepare(
                org_id=entry.org_id,
                topic=f"{entry.kind}.created",
                entity_id=entry.id,
                data=entry_output(entry),
            )

        # One statement takes the version and writes the entry, its total and its change;
        # when it finds nothing to write from, the org is locked the long way (a moved
        # org refused, a missing counter row added) and the statement runs again.
        if not entry_insert_counted(entry=entry, change=change):
            org_lock_take(org_id=org.id)
            if not entry_insert_counted(entry=entry, change=change):
                raise PropertyNotInOrg(str(property_id))
    return entry


def entry_update(*, entry: FinanceEntry, changes: dict[str, Any]) -> FinanceEntry:
    """Apply `changes` under a row lock, so two concurrent PATCHes never interleave.
    Raises EntryGone if the entry was deleted meanwhile."""
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    with org_transaction():
        version = org_version_take(org_id=entry.org_id)  # the org's lock first, then the row's
        locked = type(entry).objects.select_for_update().filter(org_id=entry.org_id, id=entry.id).first()
        if locked is None:
            raise EntryGone(str(entry.id))
        new_property = changes.get("property")
        if new_property is not None and new_property.org_id != locked.org_id:
            raise ValueError("property belongs to another organization")
        before = copy.copy(locked)
        for name, value in changes.items():
            field = locked._meta.get_field(name)
            assert isinstance(field, models.Field)  # the entry's own columns, never a reverse relation
            setattr(locked, name, value if name == "property" else field.to_python(value))
        locked.version = version
        locked.save(update_fields=[*changes, "updated_at", "version"])
        totals_add(deltas=entry_move_deltas(old=before, new=locked))
        _record(locked, "updated")
    return locked


def entry_delete(*, entry: FinanceEntry) -> None:
    """Delete the entry, leaving its tombstone in the change log. Raises EntryGone if it
    was already deleted (nothing is recorded then). The row's delete and its totals
    update are one statement."""
    with org_transaction():
        version = org_version_take(org_id=entry.org_id)
        deleted = entry_delete_returning(model=type(entry), org_id=entry.org_id, entry_id=entry.id)
        if deleted is None:
            raise EntryGone(str(entry.id))
        deleted.version = version
        _record(deleted, "deleted")


def _record(entry: FinanceEntry, action: str) -> None:
    change_record(
        org_id=entry.org_id,
        version=entry.version,
        topic=f"{entry.kind}.{action}",
        entity_id=entry.id,
        data=entry_output(entry),
    )
