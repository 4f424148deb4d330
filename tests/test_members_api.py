"""PATCH and DELETE /v1/orgs/{org}/members/{user_id} (CONTRACT §1): owners only, the
last owner protected (409) also under concurrent requests; the effect is immediate."""

import threading

import pytest
from django.db import connections

from tenancy.models import Membership
from tenancy.roles import Role


def member_url(tenant, user) -> str:
    return tenant.url(f"/members/{user.pk}")


@pytest.mark.django_db
def test_an_owner_changes_a_role_and_the_member_sees_it_at_once(tenant):
    manager = tenant.users["manager"]
    response = tenant.owner.patch(member_url(tenant, manager), {"role": "viewer"}, format="json")
    assert response.status_code == 200
    assert response.json() | {"created_at": None} == {
        "user_id": str(manager.pk),
        "username": manager.username,
        "role": "viewer",
        "created_at": None,
    }
    assert Membership.objects.get(org=tenant.org, user=manager).role == Role.VIEWER
    denied = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert denied.status_code == 403  # a demoted manager may no longer write
    assert tenant.manager.get(tenant.url("/expenses")).status_code == 200  # still a member


@pytest.mark.django_db
def test_an_owner_removes_a_member_who_then_gets_404(tenant):
    viewer = tenant.users["viewer"]
    assert tenant.owner.delete(member_url(tenant, viewer)).status_code == 204
    assert not Membership.objects.filter(org=tenant.org, user=viewer).exists()
    assert tenant.viewer.get(tenant.url()).status_code == 404
    assert tenant.viewer.get(tenant.url("/expenses")).status_code == 404
    assert tenant.owner.delete(member_url(tenant, viewer)).status_code == 404  # already gone


@pytest.mark.django_db
@pytest.mark.parametrize("caller", ["manager", "viewer"])
def test_only_owners_manage_members(tenant, caller):
    target = tenant.users["viewer" if caller == "manager" else "manager"]
    client = tenant.clients[caller]
    assert client.patch(member_url(tenant, target), {"role": "owner"}, format="json").status_code == 403
    assert client.delete(member_url(tenant, target)).status_code == 403
    assert Membership.objects.get(org=tenant.org, user=target).role == (
        "viewer" if caller == "manager" else "manager"
    )


@pytest.mark.django_db
def test_the_last_owner_can_be_neither_demoted_nor_removed(tenant):
    owner = tenant.users["owner"]
    demote = tenant.owner.patch(member_url(tenant, owner), {"role": "manager"}, format="json")
    assert demote.status_code == 409
    assert "owner" in demote.json()["detail"]
    assert tenant.owner.delete(member_url(tenant, owner)).status_code == 409
    assert Membership.objects.get(org=tenant.org, user=owner).role == Role.OWNER

    # With a second owner, the first may step down.
    tenant.owner.patch(member_url(tenant, tenant.users["manager"]), {"role": "owner"}, format="json")
    assert tenant.owner.patch(member_url(tenant, owner), {"role": "viewer"}, format="json").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [{"role": "admin"}, {}, {"role": None}, {"role": "viewer", "username": "x"}, ["viewer"], {"role": 3}],
    ids=["unknown-role", "empty", "null", "unknown-field", "list", "number"],
)
def test_a_bad_role_change_is_400_and_changes_nothing(tenant, body):
    response = tenant.owner.patch(member_url(tenant, tenant.users["viewer"]), body, format="json")
    assert response.status_code == 400
    assert Membership.objects.get(org=tenant.org, user=tenant.users["viewer"]).role == Role.VIEWER


@pytest.mark.django_db
def test_a_user_who_is_not_a_member_is_404(tenant, other_tenant):
    stranger = other_tenant.users["viewer"]
    assert (
        tenant.owner.patch(member_url(tenant, stranger), {"role": "viewer"}, format="json").status_code == 404
    )
    assert tenant.owner.delete(member_url(tenant, stranger)).status_code == 404
    assert tenant.owner.delete(tenant.url("/members/not-a-uuid")).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(make_tenant):
    """The owners' rows are locked before the count: one request wins, the other gets
    409, whichever order the database runs them in."""
    for _ in range(5):
        tenant = make_tenant()
        first, second = tenant.users["owner"], tenant.users["manager"]
        Membership.objects.filter(org=tenant.org, user=second).update(role=Role.OWNER)
        barrier = threading.Barrier(2)
        results: dict[str, int] = {}

        def demote(caller: str, target, results=results, barrier=barrier, tenant=tenant) -> None:
            try:
                barrier.wait()
                response = tenant.clients[caller].patch(
                    member_url(tenant, target), {"role": "viewer"}, format="json"
                )
                results[caller] = response.status_code
            finally:
                connections.close_all()

        threads = [
            threading.Thread(target=demote, args=("owner", second)),
            threading.Thread(target=demote, args=("manager", first)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        assert sorted(results.values()) in ([200, 403], [200, 409]), results
        assert Membership.objects.filter(org=tenant.org, role=Role.OWNER).count() == 1
