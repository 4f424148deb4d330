"""The token and the membership of an org route are read in one query on the primary
(tenancy.access.OrgTokenAuthentication): the answers stay those of the contract (401,
404, 403, 200) and a removal or demotion holds from the very next request."""

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from tenancy.models import Membership
from tenancy.roles import Role
from tenancy.selectors import token_with_membership
from tests.tokens import token_for

pytestmark = pytest.mark.django_db


def _access_queries(captured: CaptureQueriesContext) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if "knox_authtoken" in q["sql"] or "tenancy_membership" in q["sql"]
    ]


def test_a_member_read_costs_one_query_for_token_and_membership(tenant):
    with CaptureQueriesContext(connections["default"]) as captured:
        response = tenant.viewer.get(tenant.url("/expenses"))
    assert response.status_code == 200
    access = _access_queries(captured)
    assert len(access) == 1, access
    assert "knox_authtoken" in access[0] and "tenancy_membership" in access[0]


def test_the_joined_read_returns_the_membership_with_its_org(tenant):
    owner = tenant.users["owner"]
    found = token_with_membership(token=token_for(owner), org_id=tenant.org.id)
    assert found is not None
    row, membership = found
    assert membership is not None
    assert row.user == owner
    assert membership == Membership.objects.get(org=tenant.org, user=owner)
    assert membership.role == Role.OWNER
    assert membership.org == tenant.org and membership.org.name == tenant.org.name
    assert membership.org.created_at == tenant.org.created_at


def test_a_valid_token_of_a_non_member_gets_404_and_a_bad_token_401(tenant, other_tenant):
    outsider = other_tenant.owner
    assert outsider.get(tenant.url("/expenses")).status_code == 404
    found = token_with_membership(token=token_for(other_tenant.users["owner"]), org_id=tenant.org.id)
    assert found is not None and found[1] is None
    tenant.viewer.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert tenant.viewer.get(tenant.url("/expenses")).status_code == 401
    assert token_with_membership(token="not-a-real-token", org_id=tenant.org.id) is None


def test_removal_and_demotion_hold_from_the_next_request(tenant):
    assert (
        tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code == 201
    )
    Membership.objects.filter(org=tenant.org, user=tenant.users["manager"]).update(role=Role.VIEWER)
    assert (
        tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code == 403
    )
    Membership.objects.filter(org=tenant.org, user=tenant.users["manager"]).delete()
    assert tenant.manager.get(tenant.url("/expenses")).status_code == 404
