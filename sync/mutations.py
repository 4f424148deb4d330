"""What each pushed mutation does, through the same finance services as REST.

`mutation_apply` runs inside one of the push's transactions, after the org's
counter lock and the client's row lock are held. It returns the change's version, or
raises `Rejected` with the error the client gets (a rejection still counts the mutation
as processed: it never blocks the client's queue).
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from rest_framework import serializers

from accounts.models import User
from core.serializers import StrictSerializer
from finance.api.serializers import EntryInput, entry_output
from finance.models import ENTRY_MODELS, FinanceEntry
from finance.services import EntryGone, entry_create, entry_delete, entry_update
from tenancy.models import Organization

MUTATION_NAMES = tuple(
    f"{kind}.{action}" for kind in ENTRY_MODELS for action in ("create", "update", "delete")
)


@dataclass(frozen=True)
class Mutation:
    id: int
    name: str
    args: dict[str, Any]


class Rejected(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("code"))
        self.error = error


def invalid(field_errors: dict[str, Any]) -> Rejected:
    """Validation errors: §2's field errors, and `code: invalid`."""
    errors = {
        name: list(messages) if isinstance(messages, list) else messages
        for name, messages in field_errors.items()
    }
    if "code" in errors:  # an unknown argument named "code" must not hide the code
        errors.setdefault("non_field_errors", []).append("Unknown field: code.")
        del errors["code"]
    return Rejected({"code": "invalid", **errors})


class PropertiesSeen(EntryInput):
    """Looks each property up once per transaction of a push (context["properties"]):
    the transaction holds the org's lock, which every property write takes, so a
    property found there stays as it is until the transaction ends."""

    def validate_property_id(self, value: Any) -> Any:
        seen: dict[Any, Any] = self.context["properties"]
        if value not in seen:
            seen[value] = super().validate_property_id(value)  # an error is raised, not kept
        return seen[value]


class CreateArgs(PropertiesSeen):
    id = serializers.UUIDField(help_text="Made by the client (a UUID); the entry's id.")


class UpdateArgs(PropertiesSeen):
    id = serializers.UUIDField()
    base_version = serializers.IntegerField(
        min_value=0, help_text="The entry's version the change was made on."
    )


class DeleteArgs(StrictSerializer):
    id = serializers.UUIDField()
    base_version = serializers.IntegerField(min_value=0)


def _validated(serializer: serializers.Serializer) -> dict[str, Any]:
    if not serializer.is_valid():
        raise invalid(dict(serializer.errors))
    return dict(serializer.validated_data)


def _required(args: dict[str, Any], names: tuple[str, ...]) -> None:
    missing = {name: ["This field is required."] for name in names if name not in args}
    if missing:
        raise invalid(missing)


# Where the id is in use already: (org, table) of a row, or of this org's tombstone.
_ID_IN_USE = """
SELECT org_id, 'expense' FROM finance_expense WHERE id = %(id)s
UNION ALL SELECT org_id, 'revenue' FROM finance_revenue WHERE id = %(id)s
UNION ALL SELECT org_id, 'tombstone' FROM changelog_tombstone WHERE org_id = %(org)s AND entity_id = %(id)s
LIMIT 1
"""


def _check_id_unused(model: type[FinanceEntry], org: Organization, entry_id: uuid.UUID) -> None:
    """A create's id is new: the same entry again is a conflict; any other use, invalid."""
    with connections[router.db_for_write(model)].cursor() as cursor:
        cursor.execute(_ID_IN_USE, {"id": entry_id, "org": org.id})
        found = cursor.fetchone()
    if found is None:
        return
    existing = model.objects.filter(org=org, id=entry_id).first() if found[1] == model.kind else None
    if existing is not None:
        raise Rejected(
            {"code": "conflict", "detail": "An entry with this id exists.", "current": entry_output(existing)}
        )
    raise invalid({"id": ["This id is already in use; make a new UUID."]})


def _locked_entry(model: type[FinanceEntry], org: Organization, entry_id: uuid.UUID) -> FinanceEntry | None:
    return model.objects.select_for_update().filter(org=org, id=entry_id).first()


def _check_base_version(entry: FinanceEntry | None, base_version: int) -> FinanceEntry:
    if entry is None:
        raise Rejected({"code": "not_found", "detail": "No such entry: it was deleted, or never existed."})
    if entry.version != base_version:
        raise Rejected(
            {
                "code": "conflict",
                "detail": f"The entry changed since version {base_version}: the current value is attached.",
                "current": entry_output(entry),
            }
        )
    return entry


def mutation_apply(
    *, org: Organization, user: User, mutation: Mutation, properties: dict[Any, Any] | None = None
) -> int:
    """Apply the mutation; its change's version. Raises Rejected. `properties`: the
    properties already looked up in this transaction (filled as it goes)."""
    kind, _, action = mutation.name.partition(".")
    model = ENTRY_MODELS[kind]
    args = mutation.args
    context = {"org": org, "properties": {} if properties is None else properties}
    if action == "create":
        values = _validated(CreateArgs(data=args, context=context))
        entry_id = values.pop("id")
        _check_id_unused(model, org, entry_id)
        property_id = values.pop("property").id  # looked up once per push (PropertiesSeen)
        entry = entry_create(
            model=model, org=org, created_by=user, entry_id=entry_id, property_id=property_id, **values
        )
        return entry.version
    if action == "update":
        values = _validated(UpdateArgs(data=args, partial=True, context=context))
        _required(args, ("id", "base_version"))
        entry = _check_base_version(_locked_entry(model, org, values.pop("id")), values.pop("base_version"))
        if not values:
            raise invalid({"non_field_errors": ["Nothing to change."]})
        try:
            return entry_update(entry=entry, changes=values).version
        except EntryGone:  # pragma: no cover (the row is locked above)
            raise Rejected({"code": "not_found", "detail": "No such entry."}) from None
    values = _validated(DeleteArgs(data=args))
    entry = _check_base_version(_locked_entry(model, org, values["id"]), values["base_version"])
    try:
        entry_delete(entry=entry)
    except EntryGone:  # pragma: no cover (the row is locked above)
        raise Rejected({"code": "not_found", "detail": "No such entry."}) from None
    return _deleted_version(org, model)


def _deleted_version(org: Organization, model: type[FinanceEntry]) -> int:
    """The version the deletion just took (this transaction holds the org's counter)."""
    with connections[router.db_for_write(model)].cursor() as cursor:
        cursor.execute("SELECT version FROM org_changes WHERE org_id = %s", [str(org.id)])
        return int(cursor.fetchone()[0])
