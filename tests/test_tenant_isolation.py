"""No org's data reaches a non-member, on any route.

The cases are generated from the URL conf: every route with an `org_id` is called with
every method its view implements, so a new route cannot escape this test.
"""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from finance.models import Expense, Revenue
from tenancy.models import Membership, Property

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "patch", "put", "delete")


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def org_routes() -> list[tuple[str, str]]:
    routes = []
    for route, callback in _walk(get_resolver().url_patterns):
        view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        if "<uuid:org_id>" not in route or view_class is None:
            continue
        for method in METHODS:
            if hasattr(view_class, method):
                routes.append((route, method))
    return routes


ROUTES = org_routes()


def test_the_generated_cases_cover_every_org_route() -> None:
    covered = {route for route, _ in ROUTES}
    assert {
        "v1/orgs/<uuid:org_id>",
        "v1/orgs/<uuid:org_id>/members",
        "v1/orgs/<uuid:org_id>/properties",
        "v1/orgs/<uuid:org_id>/properties/<uuid:property_id>",
        "v1/orgs/<uuid:org_id>/expenses",
        "v1/orgs/<uuid:org_id>/expenses/<uuid:entry_id>",
        "v1/orgs/<uuid:org_id>/revenues",
        "v1/orgs/<uuid:org_id>/revenues/<uuid:entry_id>",
        "v1/orgs/<uuid:org_id>/finance/summary",
    } <= covered
    assert ("v1/orgs/<uuid:org_id>/expenses/<uuid:entry_id>", "delete") in ROUTES


def _fill(route: str, ids: dict[str, uuid.UUID]) -> str:
    path = "/" + route
    for name, value in ids.items():
        path = path.replace(f"<uuid:{name}>", str(value))
    assert "<" not in path, f"no id for a parameter of {route}"
    return path


def _counts() -> tuple[int, int, int, int]:
    return (
        Expense.objects.count(),
        Revenue.objects.count(),
        Property.objects.count(),
        Membership.objects.count(),
    )


@pytest.mark.parametrize(("route", "method"), ROUTES, ids=[f"{m.upper()} {r}" for r, m in ROUTES])
@pytest.mark.parametrize("caller", ["owner", "viewer"])
def test_a_member_of_another_org_gets_404_and_changes_nothing(tenant, other_tenant, route, method, caller):
    expense = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").json()
    revenue = tenant.manager.post(tenant.url("/revenues"), tenant.entry_payload(), format="json").json()
    ids = {"org_id": tenant.org.id, "property_id": tenant.property.id, "user_id": tenant.users["viewer"].id}
    ids["entry_id"] = uuid.UUID(expense["id"] if "/expenses/" in route else revenue["id"])
    body = tenant.entry_payload() | {
        "name": "x",
        "username": other_tenant.users["viewer"].username,
        "role": "owner",
    }
    before = _counts()

    response = getattr(other_tenant.clients[caller], method)(_fill(route, ids), body, format="json")

    assert response.status_code == 404, response.content
    assert response.json() == {"detail": "Not found."}
    assert _counts() == before
    assert str(tenant.org.id) not in response.content.decode()


def test_lists_summary_and_details_never_show_another_orgs_rows(tenant, other_tenant):
    for t in (tenant, other_tenant):
        for kind in ("expenses", "revenues"):
            assert t.manager.post(t.url(f"/{kind}"), t.entry_payload(), format="json").status_code == 201
    foreign_ids = {str(tenant.org.id), str(tenant.property.id)}
    foreign_ids |= {str(i) for i in Expense.objects.filter(org=tenant.org).values_list("id", flat=True)}
    foreign_ids |= {str(i) for i in Revenue.objects.filter(org=tenant.org).values_list("id", flat=True)}

    client = other_tenant.owner
    pages = [
        client.get("/v1/orgs"),
        client.get(other_tenant.url()),
        client.get(other_tenant.url("/expenses")),
        client.get(other_tenant.url("/revenues")),
        client.get(other_tenant.url("/properties")),
        client.get(other_tenant.url("/members")),
        client.get(other_tenant.url("/finance/summary")),
        # Filters naming the other org's property find nothing rather than its rows.
        client.get(other_tenant.url(f"/expenses?property_id={tenant.property.id}")),
        client.get(other_tenant.url(f"/finance/summary?property_id={tenant.property.id}")),
    ]
    for response in pages[:7]:
        assert response.status_code == 200, response.content
        text = response.content.decode()
        assert not any(foreign in text for foreign in foreign_ids), text
    assert pages[7].status_code == pages[8].status_code == 200
    assert pages[7].json()["results"] == []
    assert pages[8].json()["totals"] == pages[8].json()["properties"] == []


def test_an_unknown_org_is_404_like_a_foreign_one(tenant):
    response = tenant.owner.get(f"/v1/orgs/{uuid.uuid4()}/expenses")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


# The create's transaction outermost, as in a server: the refusal comes from the entry's
# INSERT and rolls the whole transaction back (inside a test's own transaction, that one).
@pytest.mark.django_db(transaction=True)
def test_writing_into_another_orgs_property_is_refused(tenant, other_tenant):
    payload = other_tenant.entry_payload(property_id=str(tenant.property.id))
    response = other_tenant.owner.post(other_tenant.url("/expenses"), payload, format="json")
    assert response.status_code == 400
    assert "property_id" in response.json()
    assert Expense.objects.count() == 0


def test_no_token_is_401_before_any_org_check(tenant, client_for):
    anonymous = client_for(None)
    for path in ("/v1/orgs", tenant.url(), tenant.url("/expenses"), tenant.url("/finance/summary")):
        response = anonymous.get(path)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
    bad = client_for(None)
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert bad.get(tenant.url("/expenses")).status_code == 401
