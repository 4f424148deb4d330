"""Helpers for the sync tests: pull until done, push, and read the org's state."""

import uuid
from typing import Any

from finance.api.serializers import entry_output
from finance.models import Expense, Revenue
from tenancy.models import Property
from tenancy.representation import property_output


def server_state(org_id: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every entity of the org as the API renders it, keyed by (entity, id)."""
    state: dict[tuple[str, str], dict[str, Any]] = {}
    for prop in Property.objects.filter(org_id=org_id):
        state[("property", str(prop.id))] = property_output(prop)
    for model in (Expense, Revenue):
        for entry in model.objects.filter(org_id=org_id):
            state[(model.kind, str(entry.id))] = entry_output(entry)
    return state


def apply_changes(state: dict, changes: list[dict[str, Any]]) -> None:
    for change in changes:
        key = (change["entity"], change["id"])
        if change["op"] == "put":
            state[key] = change["value"]
        else:
            state.pop(key, None)


def pull_all(client: Any, url: str, cookie: str | None = None, *, limit: int = 500, **extra: Any) -> dict:
    """Follow the cookies until has_more is false; returns the pages and the final state
    (from a reset, or applied on top of `extra['state']`)."""
    state = dict(extra.pop("state", {}))
    pages = []
    while True:
        response = client.post(url, {"cookie": cookie, "limit": limit, **extra}, format="json")
        assert response.status_code == 200, response.content
        page = response.json()
        pages.append(page)
        if page["reset"]:
            state = {}
        apply_changes(state, page["changes"])
        cookie = page["cookie"]
        if not page["has_more"]:
            return {"pages": pages, "state": state, "cookie": cookie}


def create_mutation(mutation_id: int, tenant: Any, kind: str = "expense", **overrides: Any) -> dict[str, Any]:
    payload = tenant.entry_payload() if tenant is not None else {}
    args = {"id": str(uuid.uuid4()), **payload, **overrides}
    return {"id": mutation_id, "name": f"{kind}.create", "args": args}
