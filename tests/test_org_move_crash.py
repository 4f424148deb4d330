"""A mover killed outright (SIGKILL, as a crash or an OOM kill would) at each step of
`org_move`, as a real `manage.py org_move` process (CONTRACT §13): the org stays
readable, and writable (at worst 503 with Retry-After for about the fence bound, or,
killed between marking the source moved and the directory's flip, until the rerun),
and a plain rerun of the same command finishes the move by itself, with every
acknowledged write exactly once on the new cluster."""

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from accounts.models import User
from directory.models import OrgPlacement
from directory.moves import KILL_AT_ENV
from directory.selectors import FENCE_ABANDONED_MARGIN_SECONDS
from tenancy.models import Membership, Organization, Property
from tests import conftest
from tests.cluster_support import NAME, SecondCluster
from tests.live_server import running_server
from tests.replica_support import ROOT
from tests.tokens import token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True, databases="__all__")]

FENCE_SECONDS = 2.0
SETTINGS = {"DIRECTORY_HEARTBEAT_SECONDS": "1", "DIRECTORY_STALE_SECONDS": "0.5",
            "ORG_MOVE_FENCE_SECONDS": str(FENCE_SECONDS)}  # fmt: skip


def _env(cluster: SecondCluster) -> dict[str, str]:
    return cluster.server_env() | {"CLUSTER2_REPLICA_URLS": "", **SETTINGS}


def _org_move(
    cluster: SecondCluster, org: Organization, kill_at: str | None = None, to: str = NAME
) -> subprocess.CompletedProcess:
    env = os.environ | {"DATABASE_URL": conftest.test_database_url(), "REPLICA_URLS": "", **_env(cluster)}
    env.pop(KILL_AT_ENV, None)
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "manage.py", "org_move", str(org.id), "--to", to],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


class Writer:
    def __init__(self, http: httpx.Client, org: Organization, prop: Property) -> None:
        self.http, self.org, self.prop = http, org, prop
        self.acked: dict[str, str] = {}
        self.n = 0

    def write(self) -> httpx.Response:
        """One keyed expense (the same key again after a 503, as a client retries)."""
        key = f"k{self.n}"
        body = {"property_id": str(self.prop.id), "amount": f"{10 + self.n}.00", "currency": "EUR",
                "category": "laundry", "occurred_on": f"2026-10-{1 + self.n % 28:02d}"}  # fmt: skip
        response = self.http.post(
            f"/v1/orgs/{self.org.id}/expenses", json=body, headers={"Idempotency-Key": key}
        )
        if response.status_code == 201:
            self.acked[key] = response.json()["id"]
            self.n += 1
        else:
            assert response.status_code == 503, response.text
            assert int(response.headers["Retry-After"]) >= 1
        return response

    def write_until_acked(self, within: float) -> float:
        """Retry until one write is acknowledged; returns how long 503s lasted."""
        started = time.monotonic()
        while self.write().status_code != 201:
            assert time.monotonic() - started < within, f"still 503 after {within:g}s"
            time.sleep(0.2)
        return time.monotonic() - started


def _sql(cluster: SecondCluster, name: str, query: str, *params: Any) -> list[tuple]:
    if name == NAME:
        return cluster.sql(query, params)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, list(params))
        return cursor.fetchall()


@pytest.mark.parametrize(
    ("step", "rerun_to"),
    [
        ("copy", NAME),
        ("fence", NAME),
        ("committed", NAME),
        ("moved", NAME),
        ("flipped", NAME),
        ("moved", "main"),
    ],
)
def test_a_killed_mover_leaves_the_org_usable_and_a_rerun_finishes(
    second_cluster: SecondCluster, settings, django_db_blocker, step: str, rerun_to: str
) -> None:
    """A rerun towards the same target finishes the move; one towards the cluster the
    directory still names (the last case) undoes it."""
    settings.DIRECTORY_HEARTBEAT_SECONDS, settings.DIRECTORY_STALE_SECONDS = 1, 0.5
    user = User.objects.create_user(username=f"crash-{step}-{rerun_to}", password="pw-123456!")
    org = Organization.objects.create(name=f"Hotel killed at {step}")
    Membership.objects.create(org=org, user=user, role="manager")
    prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
    auth = {"Authorization": f"Token {token_for(user)}"}
    with (
        django_db_blocker.unblock(),
        running_server(conftest.test_database_url(), **_env(second_cluster)) as base,
        httpx.Client(base_url=base, headers=auth, timeout=30) as http,
    ):
        writer = Writer(http, org, prop)
        for _ in range(5):
            writer.write_until_acked(within=1)

        killed = _org_move(second_cluster, org, kill_at=step)
        assert killed.returncode == -9, killed.stdout + killed.stderr
        assert http.get(f"/v1/orgs/{org.id}/expenses").status_code == 200  # readable at once
        if step == "moved":
            # the source refuses writes and the directory still names it: 503 with
            # Retry-After (never a 500, never a write on either copy) until the rerun
            time.sleep(FENCE_SECONDS + FENCE_ABANDONED_MARGIN_SECONDS)
            assert writer.write().status_code == 503
        else:
            # writable again once the dead mover's fence is older than its bound
            writer.write_until_acked(within=FENCE_SECONDS + FENCE_ABANDONED_MARGIN_SECONDS + 3)
            writer.write_until_acked(within=1)

        rerun = _org_move(second_cluster, org, to=rerun_to)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        left = "main" if rerun_to == NAME else NAME
        if rerun_to == "main":
            assert "takes writes again" in rerun.stdout
        elif step == "moved":
            assert "finished an earlier move's flip" in rerun.stdout
        if step == "flipped":
            assert "finishing what an earlier move left" in rerun.stdout
        assert f"deleted the copy on {left}" in rerun.stdout

        for _ in range(3):  # after the rerun, on the new cluster
            writer.write_until_acked(within=FENCE_SECONDS + 3)
        listed = http.get(f"/v1/orgs/{org.id}/expenses", params={"page_size": 100})
        assert listed.status_code == 200
        assert sorted(e["id"] for e in listed.json()["results"]) == sorted(writer.acked.values())

    assert OrgPlacement.objects.get(org_id=org.id).cluster == rerun_to
    assert OrgPlacement.objects.get(org_id=org.id).state == "active"
    ids = sorted(writer.acked.values())
    assert len(set(ids)) == len(ids) >= 8
    on = "SELECT id::text FROM finance_expense WHERE org_id = %s ORDER BY 1"
    assert [r[0] for r in _sql(second_cluster, rerun_to, on, org.id)] == ids  # every acknowledged write, once
    records = "SELECT count(*) FROM idempotency_record WHERE org_id = %s"
    assert _sql(second_cluster, rerun_to, records, org.id) == [(len(ids),)]
    totals = "SELECT sum(total), sum(count) FROM finance_daily_total WHERE org_id = %s"
    rows = "SELECT sum(amount), count(*) FROM finance_expense WHERE org_id = %s"
    assert _sql(second_cluster, rerun_to, totals, org.id) == _sql(second_cluster, rerun_to, rows, org.id)
    # the other copy is gone, and its counter refuses writes
    assert _sql(second_cluster, left, "SELECT count(*) FROM finance_expense WHERE org_id = %s", org.id) == [
        (0,)
    ]
    assert _sql(second_cluster, left, "SELECT epoch FROM org_changes WHERE org_id = %s", org.id) == [
        ("moved",)
    ]
