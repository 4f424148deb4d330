"""`manage.py org_move` under a steady load of keyed writes and reads on the org
(CONTRACT §13), against real server processes and two real database clusters.

The servers run without read replicas: this test is about the move (the source's
copy against the target's), not about replica staleness, which tests/test_replicas_*
cover."""

import asyncio
import io
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import User
from directory.models import OrgPlacement
from tenancy.models import Membership, Organization, Property
from tests import conftest
from tests.cluster_support import NAME, SecondCluster
from tests.live_server import running_server, server_process
from tests.realtime_client import open_socket
from tests.replica_support import wait_until
from tests.tokens import token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True, databases="__all__")]

WRITERS, READERS = 4, 2
CACHE = {"DIRECTORY_HEARTBEAT_SECONDS": "1", "DIRECTORY_STALE_SECONDS": "0.5"}


@pytest.fixture
def org_on_main(second_cluster, settings):
    settings.DIRECTORY_HEARTBEAT_SECONDS = 1
    settings.DIRECTORY_STALE_SECONDS = 0.5
    user = User.objects.create_user(username="mover", password="pw-123456!")
    org = Organization.objects.create(name="Hotel to move")
    Membership.objects.create(org=org, user=user, role="manager")
    prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
    return user, org, prop


def _body(prop: Property, n: int) -> dict:
    return {"property_id": str(prop.id), "amount": f"{1 + n % 50}.25", "currency": "EUR",
            "category": "laundry", "occurred_on": f"2026-11-{1 + n % 28:02d}"}  # fmt: skip


def _server(cluster: SecondCluster):
    env = cluster.server_env() | {
        "CLUSTER2_REPLICA_URLS": "",
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "8",
        **CACHE,
    }
    return running_server(conftest.test_database_url(), **env)


class Socket:
    """One websocket of the org, opened before the move, keeping the versions of the
    change events it receives (in a thread of its own)."""

    def __init__(self, ws_base: str, org: Organization, token: str) -> None:
        self.versions: list[int] = []
        self.error: str | None = None
        self.ready, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self._run(ws_base, org, token)), daemon=True
        )
        self.thread.start()
        assert self.ready.wait(20), self.error

    async def _run(self, ws_base: str, org: Organization, token: str) -> None:
        try:
            socket, _ = await open_socket(ws_base, org.id, token)
        except Exception as exc:
            self.error = repr(exc)
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self.stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(socket.recv(), 0.5))
                except TimeoutError:
                    continue
                if message.get("type") == "expense.created":
                    self.versions.append(message["version"])
        except Exception as exc:
            self.error = repr(exc)
        finally:
            await socket.close()


class Load:
    """Writers post keyed expenses (a new key each, the same key again after a 503);
    readers list the org's expenses. Everything unexpected is kept in `errors`."""

    def __init__(self, base: str, org: Organization, prop: Property, token: str) -> None:
        self.url = f"{base}/v1/orgs/{org.id}/expenses"
        self.prop, self.auth = prop, {"Authorization": f"Token {token}"}
        self.stop = threading.Event()
        self.acked: dict[str, str] = {}  # key -> expense id
        self.acked_first = ("", "")  # (occurred_on, id) of the acknowledged write a list shows first
        self.errors: list[str] = []
        self.fenced = 0  # 503 answers with Retry-After
        self.reads = 0
        self.lock = threading.Lock()

    def write(self, worker: int) -> None:
        with httpx.Client(timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                key, n = f"w{worker}-{n}", n + 1
                deadline = time.monotonic() + 20
                while True:
                    response = http.post(
                        self.url, json=_body(self.prop, n), headers={**self.auth, "Idempotency-Key": key}
                    )
                    if response.status_code == 201:
                        created = response.json()
                        with self.lock:
                            self.acked[key] = created["id"]
                            self.acked_first = max(self.acked_first, (created["occurred_on"], created["id"]))
                        break
                    if response.status_code == 503 and int(response.headers.get("Retry-After", "0")) >= 1:
                        with self.lock:
                            self.fenced += 1
                        if time.monotonic() > deadline:
                            self.errors.append(f"{key}: still 503 after 20 s")
                            return
                        time.sleep(0.05)  # sooner than Retry-After: the test wants to see the switch end
                        continue
                    self.errors.append(f"{key}: {response.status_code} {response.text[:200]}")
                    return

    def read(self) -> None:
        """Read-your-writes across the move (CONTRACT §4, the readers share the writers'
        token): a list never lacks a write acknowledged before it was asked for. (Not
        monotonic reads between two reads: a write in flight, committed but not yet
        acknowledged, may show on one replica and not yet on another.)"""
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                with self.lock:
                    floor = self.acked_first  # the list's order: occurred_on, then id (UUIDv7)
                response = http.get(self.url, params={"page_size": 1}, headers=self.auth)
                if response.status_code != 200:
                    self.errors.append(f"read: {response.status_code} {response.text[:200]}")
                    return
                results = response.json()["results"]
                newest = (results[0]["occurred_on"], results[0]["id"]) if results else ("", "")
                if newest < floor:
                    self.errors.append(
                        f"a read missed an acknowledged write: first row {newest}, expected {floor}"
                    )
                self.reads += 1


def test_org_move_under_steady_keyed_writes_and_reads(second_cluster, org_on_main, django_db_blocker):
    user, org, prop = org_on_main
    token = token_for(user)
    out = io.StringIO()
    realtime_env = second_cluster.server_env() | {"CLUSTER2_REPLICA_URLS": "", **CACHE}
    with (
        django_db_blocker.unblock(),
        _server(second_cluster) as base,
        server_process(conftest.test_database_url(), "asgi", **realtime_env) as realtime,
    ):
        load = Load(base, org, prop, token)
        socket = Socket(realtime.ws_url, org, token)
        with connection.cursor() as cursor:  # the org's version when the socket subscribed
            cursor.execute("SELECT coalesce(max(version), 0) FROM org_changes WHERE org_id = %s", [org.id])
            subscribed_at = cursor.fetchone()[0]
        cookie = httpx.post(
            f"{base}/v1/orgs/{org.id}/sync/pull", json={"cookie": None}, headers=load.auth, timeout=30
        ).json()["cookie"]
        with ThreadPoolExecutor(WRITERS + READERS) as pool:
            futures = [pool.submit(load.write, w) for w in range(WRITERS)]
            futures += [pool.submit(load.read) for _ in range(READERS)]
            wait_until(lambda: len(load.acked) >= 40, timeout=30)
            before = len(load.acked)
            with connection.cursor() as cursor:
                cursor.execute("SELECT version FROM org_changes WHERE org_id = %s", [org.id])
                at_move_start = cursor.fetchone()[0]
            call_command("org_move", str(org.id), "--to", NAME, stdout=out)
            after_move = len(load.acked)
            wait_until(lambda: len(load.acked) >= after_move + 40, timeout=30)
            load.stop.set()
            for future in futures:
                future.result()
        final_version = second_cluster.sql("SELECT version FROM org_changes WHERE org_id = %s", (org.id,))[0][
            0
        ]
        wait_until(lambda: socket.versions and socket.versions[-1] == final_version, timeout=15)
        socket.stop.set()
        socket.thread.join(10)
        pulled = httpx.post(
            f"{base}/v1/orgs/{org.id}/sync/pull", json={"cookie": cookie}, headers=load.auth, timeout=30
        ).json()
    log = out.getvalue()
    print(log, f"acked {len(load.acked)} (before {before}), 503s {load.fenced}, reads {load.reads}")
    assert load.errors == []
    assert "copied finance_expense" in log and "verified at version" in log and "flipped to c2" in log
    fence_line = re.search(r"fence (\d+\.\d+)s, version", log)
    assert fence_line is not None, log
    fence = float(fence_line.group(1))
    assert fence <= 5
    # every acknowledged write, once, on the new cluster; nothing else there; the old copy gone
    ids = list(load.acked.values())
    assert len(set(ids)) == len(ids)
    on_c2 = second_cluster.sql("SELECT id::text FROM finance_expense WHERE org_id = %s", (org.id,))
    assert sorted(r[0] for r in on_c2) == sorted(ids)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM finance_expense WHERE org_id = %s", [org.id])
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT epoch FROM org_changes WHERE org_id = %s", [org.id])
        assert cursor.fetchone()[0] == "moved"
    assert OrgPlacement.objects.get(org_id=org.id).cluster == NAME
    assert OrgPlacement.objects.get(org_id=org.id).state == "active"
    # the per-day totals on c2 equal its rows
    assert second_cluster.sql(
        "SELECT sum(total), sum(count) FROM finance_daily_total WHERE org_id = %s AND kind = 'expense'",
        (org.id,),
    ) == second_cluster.sql("SELECT sum(amount), count(*) FROM finance_expense WHERE org_id = %s", (org.id,))
    # the socket opened before the move got every change, in order, once, across it:
    # the writes before the move, those queued through the fence, and those on c2 after
    flip_line = re.search(r"flipped to c2 at version (\d+)", log)
    assert flip_line is not None, log
    flipped_at = int(flip_line.group(1))
    assert socket.error is None
    assert subscribed_at < at_move_start < flipped_at < final_version
    assert socket.versions == list(range(subscribed_at + 1, final_version + 1))
    # a sync cookie from before the move: reset, with the whole current state
    assert pulled["reset"] is True
    assert len([c for c in pulled["changes"] if c["entity"] == "expense"]) == len(ids) or pulled["has_more"]


def test_a_move_to_an_unknown_cluster_or_of_an_unknown_org_changes_nothing(second_cluster, org_on_main):
    _, org, _ = org_on_main
    with pytest.raises(CommandError, match="not configured"):
        call_command("org_move", str(org.id), "--to", "nowhere", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not in the org directory"):
        call_command("org_move", str(uuid.uuid4()), "--to", NAME, stdout=io.StringIO())
    with pytest.raises(CommandError, match="already on"):
        call_command("org_move", str(org.id), "--to", "main", stdout=io.StringIO())
    assert OrgPlacement.objects.get(org_id=org.id).cluster == "main"
    assert second_cluster.sql("SELECT count(*) FROM tenancy_organization") == [(0,)]
