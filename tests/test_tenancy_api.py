"""Orgs, members and properties (CONTRACT §1); tokens: test_auth_tokens.py."""

import pytest

from tenancy.models import Membership, Organization, Property

pytestmark = pytest.mark.django_db


def test_create_an_org_makes_the_caller_its_owner(make_user, client_for):
    user = make_user()
    client = client_for(user)
    response = client.post("/v1/orgs", {"name": "Hotel Bellevue"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Hotel Bellevue" and body["role"] == "owner"
    assert Membership.objects.get(org_id=body["id"], user=user).role == "owner"
    assert client.get(f"/v1/orgs/{body['id']}").json()["id"] == body["id"]

    assert client.post("/v1/orgs", {}, format="json").status_code == 400
    assert client.post("/v1/orgs", {"name": "x", "plan": "gold"}, format="json").status_code == 400
    assert Organization.objects.count() == 1


def test_org_list_is_paginated_and_only_the_callers(make_user, client_for, tenant):
    user = make_user()
    client = client_for(user)
    created = [client.post("/v1/orgs", {"name": f"Org {i}"}, format="json").json()["id"] for i in range(5)]
    page = client.get("/v1/orgs?page_size=3").json()
    second = client.get(page["next"].removeprefix("http://testserver")).json()
    listed = [org["id"] for org in page["results"] + second["results"]]
    assert sorted(listed) == sorted(created)
    assert second["next"] is None
    assert str(tenant.org.id) not in listed


def test_owner_adds_members_and_roles_take_effect(tenant, make_user, client_for):
    newcomer = make_user("newcomer")
    response = tenant.owner.post(
        tenant.url("/members"), {"username": "newcomer", "role": "viewer"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["role"] == "viewer" and response.json()["user_id"] == str(newcomer.id)
    client = client_for(newcomer)
    assert client.get(tenant.url("/expenses")).status_code == 200
    assert client.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code == 403

    again = tenant.owner.post(
        tenant.url("/members"), {"username": "newcomer", "role": "owner"}, format="json"
    )
    assert again.status_code == 400
    unknown = tenant.owner.post(
        tenant.url("/members"), {"username": "ghost", "role": "viewer"}, format="json"
    )
    assert unknown.status_code == 400 and "username" in unknown.json()
    bad_role = tenant.owner.post(
        tenant.url("/members"), {"username": "newcomer", "role": "admin"}, format="json"
    )
    assert bad_role.status_code == 400 and "role" in bad_role.json()


@pytest.mark.parametrize("role", ["manager", "viewer"])
def test_only_an_owner_adds_members(tenant, make_user, role):
    make_user("hopeful")
    before = Membership.objects.count()
    response = tenant.clients[role].post(
        tenant.url("/members"), {"username": "hopeful", "role": "owner"}, format="json"
    )
    assert response.status_code == 403
    assert Membership.objects.count() == before
    assert tenant.clients[role].get(tenant.url("/members")).status_code == 200


def test_properties_owner_and_manager_write_members_read(tenant):
    body = {"name": "Annex", "currency": "USD", "timezone": "America/New_York"}
    for role in ("owner", "manager"):
        response = tenant.clients[role].post(tenant.url("/properties"), body, format="json")
        assert response.status_code == 201
        assert response.json()["currency"] == "USD"
    assert tenant.viewer.post(tenant.url("/properties"), body, format="json").status_code == 403
    listed = tenant.viewer.get(tenant.url("/properties")).json()["results"]
    assert len(listed) == 3
    detail = tenant.viewer.get(tenant.url(f"/properties/{tenant.property.id}"))
    assert detail.json()["name"] == "Main building"

    # "usd": the schema's enum lists the codes (upper case); a guess would make it inexact
    for bad in (
        {"currency": "EURO"},
        {"currency": "usd"},
        {"timezone": "Mars/Olympus"},
        {"name": ""},
        {"floors": 3},
    ):
        response = tenant.owner.post(tenant.url("/properties"), body | bad, format="json")
        assert response.status_code == 400
        assert next(iter(bad)) in response.json()
    assert Property.objects.filter(org=tenant.org).count() == 3


def test_the_openapi_schema_is_served(client_for):
    response = client_for(None).get("/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert "/v1/orgs/{org_id}/expenses" in schema["paths"]
    assert "/v1/orgs/{org_id}/finance/summary" in schema["paths"]
