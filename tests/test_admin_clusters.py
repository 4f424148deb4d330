"""Django admin with two real database clusters (tests/cluster_support.py): each
org-scoped page reads and writes the cluster its org is placed on, and a write that
reaches a copy an org's move left behind answers 503 with Retry-After, never a 500
(core/admin_clusters.py)."""

import time
from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import User
from directory.cache import Placement, directory_cache
from directory.models import OrgPlacement
from finance.models import Expense
from replicas.context import use_cluster
from replicas.topology import topology
from tenancy.models import Membership, Organization, Property
from tests.cluster_support import NAME, PRIMARY, cluster_of, fetch_all
from tests.replica_support import wait_until

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def two_clusters(second_cluster):
    directory_cache.clear()
    yield second_cluster
    directory_cache.clear()


@pytest.fixture
def staff() -> Client:
    user = User.objects.create_user(username="operator", password="pw-123456!", is_staff=True)
    user.is_superuser = True
    user.save()
    browser = Client()
    browser.force_login(user)
    return browser


def _org_on(cluster: str, owner: User, *, org_id=None, ids: tuple = (None, None), amount: str = "10.00"):
    """An org with a property and an expense made on `cluster` (placed there when the
    directory has no placement for the id yet); `org_id`/`ids` repeat a copy's ids."""
    with use_cluster(topology().named(cluster)):
        org = Organization.objects.create(**({"id": org_id} if org_id else {}), name="Hotel")
        Membership.objects.create(org=org, user=owner, role="owner")
        prop = Property.objects.create(
            **({"id": ids[0]} if ids[0] else {}),
            org=org,
            name="Main",
            currency="EUR",
            timezone="Europe/Paris",
        )
        expense = Expense.objects.create(
            **({"id": ids[1]} if ids[1] else {}), org=org, property=prop, amount=amount, currency="EUR",
            category="laundry", occurred_on="2026-11-01", created_by=owner,
        )  # fmt: skip
    return org, prop, expense


def _change_form(expense: Expense, **changes: str) -> dict[str, str]:
    form = {
        "property": str(expense.property_id),
        "amount": str(expense.amount),
        "currency": expense.currency,
        "category": expense.category,
        "occurred_on": str(expense.occurred_on),
        "description": expense.description,
    }
    return form | changes


def _amount_on(alias: str, expense_id) -> list[tuple]:
    return fetch_all(alias, "SELECT amount FROM finance_expense WHERE id = %s", (expense_id,))


def test_pages_of_an_org_on_another_cluster_read_and_write_that_cluster(two_clusters, staff):
    owner = User.objects.create_user(username="owner-b", password="pw-123456!")
    org, prop, expense = _org_on(NAME, owner)
    _org_on("main", owner)  # another org, on the directory cluster
    # GET pages read the org's cluster's standby (docs/replicas.md): let it replay first
    wait_until(lambda: two_clusters.sql("SELECT count(*) FROM finance_expense", replica=True) == [(1,)])

    page = staff.get(f"/admin/finance/expense/{expense.id}/change/")
    assert page.status_code == 200 and b"10.00" in page.content
    assert staff.get(f"/admin/tenancy/organization/{org.id}/change/").status_code == 200
    assert staff.get(f"/admin/tenancy/property/{prop.id}/change/").status_code == 200

    # lists: one cluster at a time, chosen by the cluster filter or the org's filter
    by_org = staff.get(f"/admin/finance/expense/?org_id={org.id}")
    assert by_org.context["cl"].result_count == 1
    assert by_org.context["subtitle"] == f"database cluster {NAME}"
    by_cluster = staff.get(f"/admin/finance/expense/?cluster={NAME}")
    assert [e.id for e in by_cluster.context["cl"].result_list] == [expense.id]
    assert expense.id not in [e.id for e in staff.get("/admin/finance/expense/").context["cl"].result_list]
    assert staff.get(f"/admin/tenancy/organization/?q={org.id}").context["cl"].result_count == 1
    members = staff.get(f"/admin/tenancy/membership/?cluster={NAME}&q=owner-b")  # a username (directory)
    assert [m.org_id for m in members.context["cl"].result_list] == [org.id]
    assert b"owner-b" in members.content

    # a change through admin: on c2, through the services (a version, the totals)
    changed = staff.post(
        f"/admin/finance/expense/{expense.id}/change/", _change_form(expense, amount="12.50")
    )
    assert changed.status_code == 302, changed.content[-2000:]
    assert _amount_on(PRIMARY, expense.id) == [(Decimal("12.50"),)]
    assert fetch_all(PRIMARY, "SELECT version FROM finance_expense WHERE id = %s", (expense.id,))[0][0] >= 1
    assert fetch_all(PRIMARY, "SELECT sum(total) FROM finance_daily_total WHERE org_id = %s", (org.id,)) == [
        (Decimal("2.50"),)  # -10.00 +12.50 on the totals row (the fixture's rows were written around them)
    ]
    assert fetch_all("default", "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org.id,)) == [(0,)]

    # an add: the org named in the form decides the cluster
    added = staff.post(
        "/admin/finance/expense/add/",
        {"org": str(org.id), "created_by": str(owner.id), **_change_form(expense, amount="7.00")},
    )
    assert added.status_code == 302, added.content[-2000:]
    assert fetch_all(PRIMARY, "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org.id,)) == [(2,)]

    # a rename of the org (no version: guarded by the org's lock) and a delete, on c2
    renamed = staff.post(
        f"/admin/tenancy/organization/{org.id}/change/",
        {"name": "Renamed", "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"},
    )
    assert renamed.status_code == 302, renamed.content[-2000:]
    assert fetch_all(PRIMARY, "SELECT name FROM tenancy_organization WHERE id = %s", (org.id,)) == [
        ("Renamed",)
    ]
    deleted = staff.post(f"/admin/finance/expense/{expense.id}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert _amount_on(PRIMARY, expense.id) == []


def test_a_write_to_the_copy_a_move_left_answers_503_with_retry_after(two_clusters, staff, settings):
    """The state after `org_move --keep-source` from main to c2: the org's copy stays on
    main with its counter marked `moved`; the directory names c2."""
    owner = User.objects.create_user(username="owner-m", password="pw-123456!")
    org, prop, expense = _org_on("main", owner, amount="10.00")
    _org_on(NAME, owner, org_id=org.id, ids=(prop.id, expense.id), amount="11.00")
    fetch_all("default", "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 9, 'moved', 0)"
         " ON CONFLICT (org_id) DO UPDATE SET epoch = 'moved'", (org.id,))  # fmt: skip
    OrgPlacement.objects.filter(org_id=org.id).update(cluster=NAME, generation=5)
    directory_cache.clear()
    # GET pages read the org's cluster's standby (docs/replicas.md): let it replay first
    wait_until(
        lambda: (
            two_clusters.sql("SELECT amount FROM finance_expense WHERE id = %s", (expense.id,), replica=True)
            == [(Decimal("11.00"),)]
        )
    )

    # pages find the live copy (c2's), not the one left behind
    page = staff.get(f"/admin/finance/expense/{expense.id}/change/")
    assert page.status_code == 200 and b"11.00" in page.content and b"10.00" not in page.content
    moved_ok = staff.post(
        f"/admin/finance/expense/{expense.id}/change/", _change_form(expense, amount="13.00")
    )
    assert moved_ok.status_code == 302
    assert _amount_on(PRIMARY, expense.id) == [(Decimal("13.00"),)]

    # a process whose directory cache still says main: every kind of write is refused
    settings.DIRECTORY_STALE_SECONDS = 60
    writes = [
        (f"/admin/finance/expense/{expense.id}/change/", _change_form(expense, amount="99.00")),
        (f"/admin/finance/expense/{expense.id}/delete/", {"post": "yes"}),
        (f"/admin/tenancy/property/{prop.id}/change/", {"name": "X", "currency": "EUR", "timezone": "UTC"}),
        (
            f"/admin/tenancy/organization/{org.id}/change/",
            {"name": "Stale", "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"},
        ),
        (
            "/admin/finance/expense/add/",
            {"org": str(org.id), "created_by": str(owner.id), **_change_form(expense)},
        ),
    ]
    for path, form in writes:
        directory_cache.put(Placement(org.id, "main", "active", 4), read_at=time.monotonic())
        response = staff.post(path, form)
        assert response.status_code == 503, (path, response.status_code, response.content[-1500:])
        assert int(response["Retry-After"]) >= 1
        assert b"nothing was saved" in response.content
        assert cluster_of(org.id) == NAME  # the stale entry was dropped
    # the bulk "delete selected" action of a list narrowed to the org
    directory_cache.put(Placement(org.id, "main", "active", 4), read_at=time.monotonic())
    bulk = staff.post(
        f"/admin/finance/expense/?org_id={org.id}",
        {"action": "delete_selected", "_selected_action": [str(expense.id)], "post": "yes"},
    )
    assert bulk.status_code == 503 and int(bulk["Retry-After"]) >= 1
    assert b"that row and the rest were not" in bulk.content
    assert _amount_on("default", expense.id) == [(Decimal("10.00"),)]
    assert fetch_all("default", "SELECT name FROM tenancy_organization WHERE id = %s", (org.id,)) == [
        ("Hotel",)
    ]
    assert fetch_all("default", "SELECT name FROM tenancy_property WHERE id = %s", (prop.id,)) == [("Main",)]
    assert fetch_all("default", "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org.id,)) == [(1,)]
    assert fetch_all("default", "SELECT version, epoch FROM org_changes WHERE org_id = %s", (org.id,)) == [
        (9, "moved")
    ]
    # the retry goes to c2
    retried = staff.post(
        f"/admin/finance/expense/{expense.id}/change/", _change_form(expense, amount="99.00")
    )
    assert retried.status_code == 302
    assert _amount_on(PRIMARY, expense.id) == [(Decimal("99.00"),)]


def test_a_membership_change_of_a_moved_org_is_refused_too(two_clusters, staff, settings):
    """Memberships take no version: the org's lock is what refuses them on a left copy."""
    owner = User.objects.create_user(username="owner-x", password="pw-123456!")
    member = User.objects.create_user(username="member-x", password="pw-123456!")
    org, _, _ = _org_on(NAME, owner)
    with use_cluster(topology().named(NAME)):
        membership = Membership.objects.create(org=org, user=member, role="viewer")
    fetch_all(PRIMARY, "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 3, 'moved', 0)"
         " ON CONFLICT (org_id) DO UPDATE SET epoch = 'moved'", (org.id,))  # fmt: skip
    response = staff.post(
        f"/admin/tenancy/membership/{membership.id}/change/",
        {"user": str(member.id), "org": str(org.id), "role": "manager"},
    )
    assert response.status_code == 503 and int(response["Retry-After"]) >= 1
    assert fetch_all(PRIMARY, "SELECT role FROM tenancy_membership WHERE id = %s", (membership.id,)) == [
        ("viewer",)
    ]
