"""Quiet orgs with two real database clusters: an org on cluster c2 is never marked quiet
(its members' devices live on the directory database, where a device registration
could not end c2's quiet period in its own transaction), so every change of it still
reaches the outbox worker; adding a member to it works on c2's primary."""

from decimal import Decimal

import pytest

from accounts.models import User
from changelog.models import OrgChangeCounter
from changelog.worker import drain_once
from finance.models import Expense
from finance.services import entry_create
from replicas.context import use_cluster, use_org_cluster
from replicas.topology import topology
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tenancy.services import membership_add
from tests.changelog_support import finished_outbox_rows
from tests.cluster_support import NAME, PRIMARY, second_cluster  # noqa: F401 (fixture)

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True, databases="__all__")]


def test_an_org_on_another_cluster_is_never_quiet(second_cluster) -> None:  # noqa: F811 (the fixture)
    owner = User.objects.create_user(username="c2-owner", password="pw-123456!")
    newcomer = User.objects.create_user(username="c2-newcomer", password="pw-123456!")
    with use_cluster(topology().named(NAME)):
        org = Organization.objects.create(name="Hotel on c2")
        Membership.objects.create(org=org, user=owner, role=Role.OWNER)
        prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")

    def write() -> None:
        with use_org_cluster(org.id):
            entry_create(
                model=Expense, org=org, created_by=owner, property_id=prop.id, amount=Decimal("9.00"),
                currency="EUR", category="c2", occurred_on="2026-11-02",
            )  # fmt: skip

    for _ in range(2):
        write()
        rows = finished_outbox_rows(org.id, using=PRIMARY)
        assert [row.inline_done for row in rows] == [True]  # handed to the worker, on c2
        result = drain_once(database=PRIMARY)
        assert (result.delivered, result.quieted) == (1, 0)
        assert OrgChangeCounter.objects.using(PRIMARY).get(org_id=org.id).quiet_until is None
    assert not OrgChangeCounter.objects.filter(org_id=org.id).exists()  # nothing of it on main

    membership_add(org=org, user=newcomer, role=Role.VIEWER)
    assert Membership.objects.using(PRIMARY).filter(org_id=org.id, user=newcomer).exists()
    assert not Membership.objects.filter(org_id=org.id).exists()
