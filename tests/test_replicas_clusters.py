"""Org routing with two real database clusters (tests/cluster_support.py).

Cluster "main" is the test database on the stack's primary and its two standbys;
cluster "c2" is a second Postgres primary with its own streaming standby (other
servers, other ports). Users, tokens and the org directory are global, on main; each
org's rows, idempotency records and change log live on the cluster the directory
names for it."""

import time
import uuid
from typing import Any

import pytest
import redis
from django.db import connections
from rest_framework.test import APIClient

from accounts.models import User
from core.ids import uuid7
from directory.cache import CHANNEL, directory_cache
from directory.models import OrgPlacement
from finance.models import Expense
from replicas.context import request_routing, use_cluster, use_org_cluster
from replicas.topology import ClusterNotConfigured, OrgNotRouted, build_topology, topology
from tenancy.models import Membership, Organization, Property
from tests.cluster_support import NAME, PRIMARY, REPLICA, cluster_of, fetch_all
from tests.replica_support import wait_until
from tests.tokens import token_for

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def two_clusters(second_cluster, replicas_live):
    replicas_live.wait_caught_up()
    directory_cache.clear()
    return second_cluster


def _tenant(cluster_name: str, username: str) -> tuple[User, Organization, Property]:
    """A global user (on the directory database only) who owns an org made on
    `cluster_name`: the org is placed there by being saved there."""
    user = User.objects.create_user(username=username, password="pw-123456!")
    with use_cluster(topology().named(cluster_name)):
        org = Organization.objects.create(name=f"org {username}")
        Membership.objects.create(org=org, user=user, role="owner")
        prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
        Expense.objects.create(
            org=org, property=prop, amount="10.00", currency="EUR", category="laundry",
            occurred_on="2026-11-01", created_by=user,
        )  # fmt: skip
    return user, org, prop


def test_each_orgs_rows_live_on_its_cluster_and_identity_on_the_directory(two_clusters):
    alice, org_a, _ = _tenant("main", "alice")
    bob, org_b, _ = _tenant(NAME, "bob")
    # the directory (on main) places each org where it was made
    assert dict(OrgPlacement.objects.values_list("org_id", "cluster")) == {org_a.id: "main", org_b.id: NAME}
    assert fetch_all(PRIMARY, "SELECT to_regclass('org_directory')") == [(None,)]  # only on the directory db
    # tenant rows only on their own cluster
    assert fetch_all("default", "SELECT id FROM tenancy_organization") == [(org_a.id,)]
    assert fetch_all(PRIMARY, "SELECT id FROM tenancy_organization") == [(org_b.id,)]
    assert fetch_all(PRIMARY, "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org_b.id,)) == [(1,)]
    assert fetch_all("default", "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org_b.id,)) == [
        (0,)
    ]
    # users only on the directory database: c2's copy of the table stays empty
    assert fetch_all(PRIMARY, "SELECT count(*) FROM accounts_user") == [(0,)]
    assert fetch_all(
        "default", "SELECT count(*) FROM accounts_user WHERE id IN (%s, %s)", (alice.id, bob.id)
    ) == [(2,)]
    # the two clusters are different servers
    assert fetch_all(PRIMARY, "SELECT inet_server_port()") != fetch_all(
        "default", "SELECT inet_server_port()"
    )


def test_reads_of_an_org_are_served_by_its_own_clusters_replica(two_clusters):
    _, org_b, _ = _tenant(NAME, "carol")

    def read() -> tuple[list[str], int]:
        with request_routing() as state, use_org_cluster(org_b.id):
            count = Expense.objects.filter(org_id=org_b.id).count()
        return state.served, count

    served, _ = wait_until(lambda: (r := read())[1] == 1 and r[0] == [REPLICA] and r)
    assert served == [REPLICA]
    replica_port = fetch_all(REPLICA, "SELECT inet_server_port(), pg_is_in_recovery(), current_database()")
    assert replica_port == [(connections.settings[REPLICA]["PORT"], True, two_clusters.database)]


def test_the_api_serves_and_writes_an_org_on_its_cluster(two_clusters):
    user, org_b, prop_b = _tenant(NAME, "dave")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    body = {"property_id": str(prop_b.id), "amount": "5.00", "currency": "EUR", "category": "food",
            "occurred_on": "2026-11-02"}  # fmt: skip
    plain = client.post(f"/v1/orgs/{org_b.id}/expenses", body, format="json")
    assert plain.status_code == 201, plain.json()
    assert plain["X-DB-Position"].startswith(f"{NAME}:")
    keyed = client.post(f"/v1/orgs/{org_b.id}/expenses", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = client.post(f"/v1/orgs/{org_b.id}/expenses", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert keyed.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.content == keyed.content
    ids = [plain.json()["id"], keyed.json()["id"]]
    # rows, the key's record and the change log on c2, none of it on main
    assert fetch_all(PRIMARY, "SELECT count(*) FROM finance_expense WHERE id = ANY(%s::uuid[])", (ids,)) == [
        (2,)
    ]
    assert fetch_all(
        "default", "SELECT count(*) FROM finance_expense WHERE id = ANY(%s::uuid[])", (ids,)
    ) == [(0,)]
    assert fetch_all(PRIMARY, "SELECT count(*) FROM idempotency_record WHERE org_id = %s", (org_b.id,)) == [
        (1,)
    ]
    assert fetch_all("default", "SELECT count(*) FROM idempotency_record") == [(0,)]
    assert fetch_all(PRIMARY, "SELECT version FROM org_changes WHERE org_id = %s", (org_b.id,)) == [(2,)]
    # a refused keyed write (another org's property) rolls back on c2: 4xx, nothing kept
    bad = client.post(
        f"/v1/orgs/{org_b.id}/expenses", body | {"property_id": str(uuid7())}, format="json",
        HTTP_IDEMPOTENCY_KEY="k-2",
    )  # fmt: skip
    assert bad.status_code == 400
    assert fetch_all(PRIMARY, "SELECT count(*) FROM idempotency_record WHERE org_id = %s", (org_b.id,)) == [
        (1,)
    ]
    listed = client.get(f"/v1/orgs/{org_b.id}/expenses")
    assert listed.status_code == 200
    assert set(ids) <= {e["id"] for e in listed.json()["results"]}
    assert set(listed["X-DB-Read-From"].split(",")) <= {PRIMARY, REPLICA}
    orgs = client.get("/v1/orgs")
    assert [o["id"] for o in orgs.json()["results"]] == [str(org_b.id)]


def test_the_org_list_merges_the_clusters_in_order(two_clusters):
    user, org_b, _ = _tenant(NAME, "erin")
    orgs = []
    for cluster in ("main", NAME, "main"):
        with use_cluster(topology().named(cluster)):
            org = Organization.objects.create(name=f"more {cluster}")
            Membership.objects.create(org=org, user=user, role="viewer")
            orgs.append(org.id)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    seen, url = [], "/v1/orgs?page_size=1"
    while url:
        page = client.get(url).json()
        seen += [o["id"] for o in page["results"]]
        url = page["next"]
    assert seen == sorted(map(str, [org_b.id, *orgs]), reverse=True)


def test_an_org_the_directory_cannot_place_is_refused(two_clusters):
    user, org_b, _ = _tenant(NAME, "frank")
    with pytest.raises(OrgNotRouted), use_org_cluster(uuid.uuid4()):
        pass
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    # unknown to the directory: 404, like an org one is not a member of
    assert client.get(f"/v1/orgs/{uuid7()}/expenses").status_code == 404
    assert (
        client.post(f"/v1/orgs/{uuid7()}/expenses", {}, format="json", HTTP_IDEMPOTENCY_KEY="x").status_code
        == 404
    )
    # placed on a cluster this server has no database for: 503, never another cluster
    OrgPlacement.objects.filter(org_id=org_b.id).update(cluster="gone", generation=2)
    directory_cache.clear()
    with pytest.raises(ClusterNotConfigured), use_org_cluster(org_b.id):
        pass
    for response in (
        client.get(f"/v1/orgs/{org_b.id}/expenses"),
        client.post(f"/v1/orgs/{org_b.id}/expenses", {}, format="json", HTTP_IDEMPOTENCY_KEY="y"),
    ):
        assert response.status_code == 503, response.content


def test_a_directory_change_reaches_the_cache_through_redis(two_clusters, settings):
    """Another process's change: the row is updated and the org id published on the
    channel (no local forget): this process's listener drops its entry."""
    settings.DIRECTORY_STALE_SECONDS = 60  # only the channel can make it see the change
    _, org_b, _ = _tenant(NAME, "grace")
    assert cluster_of(org_b.id) == NAME
    wait_until(lambda: directory_cache.listener.healthy_since() is not None)
    directory_cache.clear()
    assert cluster_of(org_b.id) == NAME  # cached after the subscription began
    OrgPlacement.objects.filter(org_id=org_b.id).update(cluster="main", generation=2)
    assert cluster_of(org_b.id) == NAME  # still cached
    redis.Redis.from_url(settings.REDIS_URL).publish(CHANNEL, str(org_b.id))
    wait_until(lambda: cluster_of(org_b.id) == "main", timeout=5)


def test_without_redis_a_cached_placement_lives_only_the_stale_bound(two_clusters, settings):
    from tests.live_server import free_port

    _, org_b, _ = _tenant(NAME, "heidi")
    settings.DIRECTORY_STALE_SECONDS = 0.5
    settings.DIRECTORY_HEARTBEAT_SECONDS = 0.6
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    directory_cache.listener.stop()
    try:
        directory_cache.clear()
        assert cluster_of(org_b.id) == NAME
        assert directory_cache.listener.healthy_since() is None
        changed = time.monotonic()
        OrgPlacement.objects.filter(org_id=org_b.id).update(cluster="main", generation=2)
        wait_until(lambda: cluster_of(org_b.id) == "main", timeout=5, interval=0.01)
        assert time.monotonic() - changed <= 0.5 + 1.0  # the stale bound, plus slack for a loaded machine
    finally:
        directory_cache.listener.stop()  # it restarts on the next lookup, with the real Redis


def test_the_clusters_endpoint_shows_each_cluster_its_health_and_orgs(two_clusters, make_user, client_for):
    _tenant("main", "ivan")
    for n in range(3):
        _tenant(NAME, f"judy{n}")
    staff = client_for(make_user(is_staff=True))
    response = staff.get("/v1/system/database/clusters")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert (body["directory_cluster"], body["default_cluster"], body["directory_readable"]) == (
        "main",
        "main",
        True,
    )
    by_name = {c["name"]: c for c in body["clusters"]}
    assert set(by_name) == {"main", NAME}
    assert (by_name["main"]["orgs"], by_name[NAME]["orgs"]) == (1, 3)
    assert by_name[NAME]["orgs_by_state"] == {"active": 3, "moving": 0, "fenced": 0}
    assert by_name[NAME]["primary"] == {"alias": PRIMARY, "healthy": True, "last_error": None}
    assert [r["alias"] for r in by_name[NAME]["replicas"]] == [REPLICA]
    assert by_name[NAME]["status"] in ("healthy", "degraded")
    assert by_name["main"]["directory"] and not by_name[NAME]["directory"]
    OrgPlacement.objects.filter(cluster=NAME).update(cluster="gone")
    assert staff.get("/v1/system/database/clusters").json()["orgs_on_unknown_clusters"] == {"gone": 3}


def test_writes_of_a_fenced_org_wait_then_get_503_with_retry_after(two_clusters, settings):
    settings.ORG_MOVE_FENCE_SECONDS = 0.3
    user, org_b, prop_b = _tenant(NAME, "kim")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    body = {"property_id": str(prop_b.id), "amount": "5.00", "currency": "EUR", "category": "food",
            "occurred_on": "2026-11-02"}  # fmt: skip
    OrgPlacement.objects.filter(org_id=org_b.id).update(state="fenced", generation=2)
    directory_cache.clear()
    # environ entries for **extra: typed Any as the stub's (a dict[str, str] might fill `follow`)
    cases: tuple[dict[str, Any], ...] = ({}, {"HTTP_IDEMPOTENCY_KEY": "fenced"})
    for headers in cases:
        started = time.monotonic()
        response = client.post(f"/v1/orgs/{org_b.id}/expenses", body, format="json", **headers)
        assert response.status_code == 503, response.content
        assert int(response["Retry-After"]) >= 1
        assert 0.3 <= time.monotonic() - started < 2  # waited out the fence once, not twice
    assert client.get(f"/v1/orgs/{org_b.id}/expenses").status_code == 200  # reads go on
    assert fetch_all(PRIMARY, "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org_b.id,)) == [(1,)]
    OrgPlacement.objects.filter(org_id=org_b.id).update(state="active", generation=3)
    directory_cache.clear()
    assert (
        client.post(
            f"/v1/orgs/{org_b.id}/expenses", body, format="json", HTTP_IDEMPOTENCY_KEY="fenced"
        ).status_code
        == 201
    )


def test_a_write_routed_to_the_cluster_an_org_left_is_refused(two_clusters):
    """A stale placement sends the write to the old copy: its counter says `moved`."""
    user, org_b, prop_b = _tenant(NAME, "leo")
    fetch_all(
        PRIMARY,
        "INSERT INTO org_changes (org_id, version, epoch, pruned_through) VALUES (%s, 7, 'moved', 0)"
        " ON CONFLICT (org_id) DO UPDATE SET epoch = 'moved'",
        (org_b.id,),
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    body = {"property_id": str(prop_b.id), "amount": "5.00", "currency": "EUR", "category": "food",
            "occurred_on": "2026-11-02"}  # fmt: skip
    # environ entries for **extra: typed Any as the stub's (a dict[str, str] might fill `follow`)
    cases: tuple[dict[str, Any], ...] = ({}, {"HTTP_IDEMPOTENCY_KEY": "stale"})
    for headers in cases:
        response = client.post(f"/v1/orgs/{org_b.id}/expenses", body, format="json", **headers)
        assert response.status_code == 503, response.content
        assert int(response["Retry-After"]) >= 1
    assert fetch_all(PRIMARY, "SELECT count(*) FROM finance_expense WHERE org_id = %s", (org_b.id,)) == [(1,)]
    assert fetch_all(PRIMARY, "SELECT count(*) FROM idempotency_record WHERE org_id = %s", (org_b.id,)) == [
        (0,)
    ]
    assert fetch_all(PRIMARY, "SELECT version FROM org_changes WHERE org_id = %s", (org_b.id,)) == [(7,)]


def test_topology_validation():
    topo = build_topology({"main": {"primary": "default", "replicas": ["r1"]}, "c2": {"primary": "b"}})
    assert topo.home.name == topo.default.name == "main"
    assert topo.named("c2").primary == "b"
    r1_cluster = topo.cluster_of_alias("r1")
    assert r1_cluster is not None and r1_cluster.name == "main"
    with pytest.raises(ClusterNotConfigured):
        topo.named("c3")
    assert (
        build_topology({"main": {"primary": "a"}, "c2": {"primary": "b"}}, default="c2").default.name == "c2"
    )
    with pytest.raises(ValueError, match="DEFAULT_CLUSTER"):
        build_topology({"main": {"primary": "a"}}, default="c2")
    with pytest.raises(ValueError, match="two clusters"):
        build_topology({"main": {"primary": "a"}, "c2": {"primary": "a"}})
