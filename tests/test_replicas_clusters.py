"""Org-range routing with two real clusters on the local stack.

Cluster "main" is the test database on the primary and its two standbys; cluster
"orgb" is a second database on the same servers (created on the primary, streamed to
the standbys like everything else), with its own three aliases. Org ids starting with
0-7 belong to main, 8-b to orgb, c-f to nobody."""

import copy
import uuid
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresWrapper
from rest_framework.test import APIClient

from accounts.models import User
from finance.models import Expense
from replicas.context import request_routing, use_org_cluster
from replicas.topology import OrgNotRouted, build_topology
from tenancy.models import Membership, Organization, Property
from tests.tokens import token_for

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

MAIN_RANGE = ["00000000-0000-0000-0000-000000000000", "7fffffff-ffff-ffff-ffff-ffffffffffff"]
ORGB_RANGE = ["80000000-0000-0000-0000-000000000000", "bfffffff-ffff-ffff-ffff-ffffffffffff"]
ORG_A = uuid.UUID("01900000-0000-7000-8000-00000000000a")
ORG_B = uuid.UUID("91900000-0000-7000-8000-00000000000b")
ORG_NOWHERE = uuid.UUID("f1900000-0000-7000-8000-0000000000ff")
ORGB_ALIASES = {"orgb_primary": "default", "orgb_replica1": "replica1", "orgb_replica2": "replica2"}


def _sql(alias: str, query: str, params: tuple = ()) -> list[tuple]:
    with connections[alias].cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def orgb_database(django_db_setup, django_db_blocker) -> Iterator[str]:
    """Module-scoped so the aliases exist before pytest-django resolves "__all__"."""
    from django.test import override_settings

    from replicas.checker import checker

    database = connections["default"].settings_dict["NAME"] + "_orgb"
    clusters = {
        "main": {"primary": "default", "replicas": ["replica1", "replica2"], "org_ranges": [MAIN_RANGE]},
        "orgb": {"primary": "orgb_primary", "replicas": ["orgb_replica1", "orgb_replica2"], "org_ranges": [ORGB_RANGE]},
    }  # fmt: skip
    with django_db_blocker.unblock():
        with connections["default"].cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{database}"')
        for alias, like in ORGB_ALIASES.items():
            params = copy.deepcopy(connections.settings[like])
            params["NAME"] = database
            connections.settings[alias] = params
        with override_settings(DATABASE_CLUSTERS=clusters):
            call_command("migrate", database="orgb_primary", verbosity=0)
            try:
                yield database
            finally:
                checker.stop()  # it holds connections to the orgb database
                for alias in ORGB_ALIASES:
                    connections[alias].close()
                    pool = PostgresWrapper._connection_pools.pop(alias, None)
                    if pool is not None:
                        pool.close()
                    del connections.settings[alias]
                with connections["default"].cursor() as cursor:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def two_clusters(orgb_database, replicas_live) -> str:
    replicas_live.wait_caught_up()
    return orgb_database


def _tenant_in(org_id: uuid.UUID, username: str) -> tuple[User, Property]:
    """Users are global: with several clusters they are reference tables present in
    every cluster (Citus terms); the test copies the user into the org's cluster."""
    user = User.objects.create_user(username=username, password="pw-123456!")
    with use_org_cluster(org_id) as cluster:
        if cluster.name != "main":
            User.objects.using(cluster.primary).bulk_create([user])
        org = Organization.objects.create(id=org_id, name=f"org {username}")
        Membership.objects.create(org=org, user=user, role="owner")
        prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
        Expense.objects.create(
            org=org, property=prop, amount="10.00", currency="EUR", category="laundry",
            occurred_on="2026-11-01", created_by=user,
        )  # fmt: skip
    return user, prop


def test_each_orgs_reads_and_writes_go_to_its_own_cluster(two_clusters):
    _tenant_in(ORG_A, "alice")
    _tenant_in(ORG_B, "bob")
    # rows: each org only in its own cluster's database
    assert _sql("default", "SELECT id FROM tenancy_organization") == [(ORG_A,)]
    assert _sql("orgb_primary", "SELECT id FROM tenancy_organization") == [(ORG_B,)]
    assert _sql("orgb_primary", "SELECT count(*) FROM finance_expense WHERE org_id = %s", (ORG_B,)) == [(1,)]
    assert _sql("default", "SELECT count(*) FROM finance_expense WHERE org_id = %s", (ORG_B,)) == [(0,)]

    from tests.replica_support import wait_until

    def read(org_id: uuid.UUID) -> tuple[list[str], int, str]:
        with request_routing() as state, use_org_cluster(org_id):
            count = Expense.objects.filter(org_id=org_id).count()
            alias = state.served[0]
            database = _sql(alias, "SELECT current_database()")[0][0]
        return state.served, count, database

    # reads: from the org's own cluster's replicas, once they have replayed the rows
    served, _, database = wait_until(
        lambda: (r := read(ORG_B)) and r[1] == 1 and r[0][0] != "orgb_primary" and r
    )
    assert served[0] in ("orgb_replica1", "orgb_replica2") and database == two_clusters
    served, _, database = wait_until(lambda: (r := read(ORG_A)) and r[1] == 1 and r[0][0] != "default" and r)
    assert served[0] in ("replica1", "replica2") and database != two_clusters


def test_the_api_serves_each_org_from_its_cluster(two_clusters):
    _, prop_b = _tenant_in(ORG_B, "carol")
    user = User.objects.get(username="carol")
    from tests.replica_support import wait_caught_up

    wait_caught_up()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    created = client.post(
        f"/v1/orgs/{ORG_B}/expenses",
        {"property_id": str(prop_b.id), "amount": "5.00", "currency": "EUR", "category": "food",
         "occurred_on": "2026-11-02"},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.json()
    assert created["X-DB-Position"].startswith("orgb:")
    assert _sql(
        "orgb_primary", "SELECT count(*) FROM finance_expense WHERE id = %s", (created.json()["id"],)
    ) == [(1,)]
    assert _sql("default", "SELECT count(*) FROM finance_expense WHERE id = %s", (created.json()["id"],)) == [
        (0,)
    ]
    listed = client.get(f"/v1/orgs/{ORG_B}/expenses")
    assert listed.status_code == 200
    assert created.json()["id"] in [e["id"] for e in listed.json()["results"]]
    assert set(listed["X-DB-Read-From"].split(",")) <= {
        "replica1",
        "replica2",
        "orgb_replica1",
        "orgb_replica2",
        "orgb_primary",
    }
    assert listed["X-DB-Read-From"].split(",")[-1].startswith("orgb_")
    # an org outside every range: 404 to the client, never a silent default cluster
    assert client.get(f"/v1/orgs/{ORG_NOWHERE}/expenses").status_code == 404


def test_an_org_outside_every_range_is_an_error(two_clusters):
    with pytest.raises(OrgNotRouted), use_org_cluster(ORG_NOWHERE):
        pass


def test_topology_lookup_and_validation():
    topo = build_topology(
        {
            "main": {"primary": "default", "replicas": [], "org_ranges": [MAIN_RANGE]},
            "b": {"primary": "b", "org_ranges": [ORGB_RANGE, ["c0000000-0000-0000-0000-000000000000", "c0ffffff-ffff-ffff-ffff-ffffffffffff"]]},
        }
    )  # fmt: skip
    assert topo.cluster_for_org(ORG_A).name == "main"
    assert topo.cluster_for_org(ORG_B).name == "b"
    assert topo.cluster_for_org("c0000000-0000-0000-0000-000000000001").name == "b"
    assert topo.cluster_for_org(MAIN_RANGE[1]).name == "main"  # ends are inclusive
    for outside in ("c1000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"):
        with pytest.raises(OrgNotRouted):
            topo.cluster_for_org(outside)
    with pytest.raises(ValueError, match="overlap"):
        build_topology(
            {
                "main": {
                    "primary": "a",
                    "org_ranges": [MAIN_RANGE, ["70000000-0000-0000-0000-000000000000", ORGB_RANGE[0]]],
                }
            }
        )
    with pytest.raises(ValueError, match="main"):
        build_topology({"other": {"primary": "a", "org_ranges": [MAIN_RANGE]}})
