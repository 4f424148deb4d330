"""CONTRACT §13 through real server processes (gunicorn, 2 workers x 8 threads) with two
real database clusters: a user (global, on the directory database) of an org placed on
cluster c2 logs in, reads, writes with and without Idempotency-Key, and with Redis
stopped 50 concurrent duplicates still write once, on c2."""

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import httpx
import pytest

from accounts.models import User
from replicas.context import use_cluster
from replicas.topology import topology
from tenancy.models import Membership, Organization, Property
from tests import conftest
from tests.cluster_support import NAME, SecondCluster
from tests.live_server import free_port, running_server
from tests.tokens import token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True, databases="__all__")]

DUPLICATES = 50
PASSWORD = "pw-123456!"


@pytest.fixture
def org_on_c2(second_cluster, settings) -> tuple[User, Organization, Property]:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # what the server checks
    user = User.objects.create_user(username="bea", password=PASSWORD)
    with use_cluster(topology().named(NAME)):
        org = Organization.objects.create(name="Hotel on c2")
        Membership.objects.create(org=org, user=user, role="manager")
        prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
    return user, org, prop


def _server(cluster: SecondCluster, **env: str) -> AbstractContextManager[str]:
    return running_server(
        conftest.test_database_url(), WEB_CONCURRENCY="2", WEB_THREADS="8", **cluster.server_env(), **env
    )


def _body(prop: Property, amount: str = "12.50") -> dict:
    return {"property_id": str(prop.id), "amount": amount, "currency": "EUR", "category": "laundry",
            "occurred_on": "2026-11-01"}  # fmt: skip


def _counts(cluster: SecondCluster, org: Organization) -> tuple[int, int, int, int]:
    """(expenses on c2, records on c2, expenses on main, records on main)."""
    on_c2 = cluster.sql(
        "SELECT (SELECT count(*) FROM finance_expense WHERE org_id = %s),"
        " (SELECT count(*) FROM idempotency_record WHERE org_id = %s)",
        (org.id, org.id),
    )[0]
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM finance_expense WHERE org_id = %s),"
            " (SELECT count(*) FROM idempotency_record)",
            [org.id],
        )
        on_main = cursor.fetchone()
    return (*on_c2, *on_main)


def test_a_user_of_an_org_on_c2_logs_in_reads_and_writes(second_cluster, org_on_c2, django_db_blocker):
    _, org, prop = org_on_c2
    with (
        django_db_blocker.unblock(),
        _server(second_cluster) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        login = http.post("/v1/auth/token", json={"username": "bea", "password": PASSWORD})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Token {login.json()['token']}"}
        orgs = http.get("/v1/orgs", headers=auth)
        assert orgs.status_code == 200 and [o["id"] for o in orgs.json()["results"]] == [str(org.id)]
        assert http.get(f"/v1/orgs/{org.id}", headers=auth).status_code == 200

        plain = http.post(f"/v1/orgs/{org.id}/expenses", json=_body(prop), headers=auth)
        assert plain.status_code == 201, plain.text
        assert plain.headers["X-DB-Position"].startswith(f"{NAME}:")
        keyed = {**auth, "Idempotency-Key": "c2-once"}
        first = http.post(f"/v1/orgs/{org.id}/expenses", json=_body(prop, "20.00"), headers=keyed)
        replay = http.post(f"/v1/orgs/{org.id}/expenses", json=_body(prop, "20.00"), headers=keyed)
        other = http.post(f"/v1/orgs/{org.id}/expenses", json=_body(prop, "21.00"), headers=keyed)
        assert first.status_code == replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
        assert other.status_code == 422
        # a refused write under a key: 400, not 500, and nothing kept
        bad = http.post(
            f"/v1/orgs/{org.id}/expenses",
            json={**_body(prop), "amount": "x"},
            headers={**auth, "Idempotency-Key": "bad"},
        )
        assert bad.status_code == 400

        listed = http.get(f"/v1/orgs/{org.id}/expenses", headers=auth)
        assert listed.status_code == 200
        assert {plain.json()["id"], first.json()["id"]} == {e["id"] for e in listed.json()["results"]}
        summary = http.get(f"/v1/orgs/{org.id}/finance/summary", headers=auth)
        assert summary.status_code == 200, summary.text
    assert _counts(second_cluster, org) == (2, 1, 0, 0)


def test_with_redis_stopped_50_concurrent_duplicates_write_once_on_c2(
    second_cluster, org_on_c2, django_db_blocker
):

    user, org, prop = org_on_c2
    headers = {"Authorization": f"Token {token_for(user)}", "Idempotency-Key": "fifty-on-c2"}
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with django_db_blocker.unblock(), _server(second_cluster, REDIS_URL=dead_redis) as base:
        url = f"{base}/v1/orgs/{org.id}/expenses"
        start = threading.Barrier(DUPLICATES)

        def send(_: int) -> httpx.Response:
            with httpx.Client(timeout=30) as client:
                start.wait()
                return client.post(url, json=_body(prop), headers=headers)

        with ThreadPoolExecutor(DUPLICATES) as pool:
            responses = list(pool.map(send, range(DUPLICATES)))
        statuses = [r.status_code for r in responses]
        # no claims without Redis: duplicates wait on the key's lock on c2, then replay
        assert statuses == [201] * DUPLICATES, {s: statuses.count(s) for s in set(statuses)}
        originals = [r for r in responses if "idempotent-replayed" not in r.headers]
        assert len(originals) == 1
        assert all(r.content == originals[0].content for r in responses)
        reads = httpx.get(url, headers={"Authorization": headers["Authorization"]}, timeout=30)
        assert reads.status_code == 200 and len(reads.json()["results"]) == 1
    assert _counts(second_cluster, org) == (1, 1, 0, 0)
