"""The /v1/system/database/ endpoints, `manage.py replica_healthcheck` and `migrate`,
against the real primary and standbys."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from replicas.router import ReplicaRouter
from tenancy.models import Organization
from tests.live_server import ROOT, free_port

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

BASE = "/v1/system/database"
PATHS = [
    ("get", f"{BASE}/replicas/lag"),
    ("get", f"{BASE}/replicas/health"),
    ("post", f"{BASE}/replicas/health-check"),
    ("get", f"{BASE}/replicas/stats"),
    ("get", f"{BASE}/connection-pool/stats"),
    ("get", f"{BASE}/clusters"),
]
REPLICA_KEYS = {"alias", "healthy", "in_rotation", "last_checked_at", "last_error"}


@pytest.fixture
def staff(make_user, client_for, replicas_live):
    client = client_for(make_user(is_staff=True))
    replicas_live.wait_caught_up()
    return client


@pytest.mark.parametrize(("method", "path"), PATHS)
def test_database_routes_are_for_staff_or_the_metrics_token(  # noqa: PLR0917
    method, path, make_user, client_for, settings, replicas_live
):
    user, staff = client_for(make_user()), client_for(make_user(is_staff=True))
    replicas_live.wait_caught_up()  # made outside any request: no position to wait for
    assert getattr(client_for(None), method)(path).status_code == 401
    assert getattr(user, method)(path).status_code == 403
    assert getattr(staff, method)(path).status_code == 200
    settings.METRICS_TOKEN = "db-metrics-token"
    bearer = client_for(None)
    bearer.credentials(HTTP_AUTHORIZATION="Bearer db-metrics-token")
    response = getattr(bearer, method)(path)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_lag_and_health_when_all_is_well(replicas_live, staff):
    lag = staff.get(f"{BASE}/replicas/lag").json()
    assert lag["thresholds"] == {"warning_seconds": 5.0, "critical_seconds": 10.0}
    assert [r["alias"] for r in lag["replicas"]] == ["replica1", "replica2"]
    for row in lag["replicas"]:
        assert row["status"] == "ok"
        assert 0 <= row["lag_seconds"] < 5 and row["lag_bytes"] >= 0
    health = staff.get(f"{BASE}/replicas/health").json()
    assert health["status"] == "healthy"
    assert health["primary"]["alias"] == "default" and health["primary"]["healthy"] is True
    for row in health["replicas"]:
        assert set(row) >= REPLICA_KEYS
        assert row["healthy"] is True and row["in_rotation"] is True and row["last_error"] is None


def test_health_check_runs_a_check_now(replicas_live, staff, settings):
    settings.REPLICA_HEALTH_CHECK_INTERVAL = 60000  # the background thread will not do it
    before = staff.get(f"{BASE}/replicas/health").json()["replicas"][0]["last_checked_at"]
    time.sleep(0.05)
    after = staff.post(f"{BASE}/replicas/health-check").json()
    assert after["replicas"][0]["last_checked_at"] > before
    assert after["status"] == "healthy"


def test_lag_shows_warning_and_health_is_degraded_for_a_paused_replica(replicas_live, staff, settings):
    settings.REPLICA_LAG_WARNING_SECONDS = 0.3
    settings.REPLICA_LAG_CRITICAL_SECONDS = 30
    Organization.objects.create(name="before the pause")
    replicas_live.wait_caught_up()
    with replicas_live.replay_paused("replica1"):
        for _ in range(8):
            Organization.objects.create(name="while paused")
            time.sleep(0.1)
        lag = {
            r["alias"]: r
            for r in staff.post(f"{BASE}/replicas/health-check")
            and staff.get(f"{BASE}/replicas/lag").json()["replicas"]
        }
        health = staff.get(f"{BASE}/replicas/health").json()
    assert lag["replica1"]["status"] == "warning" and lag["replica1"]["lag_bytes"] > 0
    assert lag["replica2"]["status"] == "ok"
    assert health["status"] == "degraded"


def test_stats_count_reads_per_alias_writes_and_fallbacks(replicas_live, tenant, staff):
    replicas_live.wait_caught_up()
    for _ in range(20):
        assert tenant.viewer.get(tenant.url("/expenses")).status_code == 200
    created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert created.status_code == 201
    patched = tenant.manager.patch(  # reads the entry first: on the primary, in a write request
        tenant.url(f"/expenses/{created.json()['id']}"), {"amount": "2.00"}, format="json"
    )
    assert patched.status_code == 200
    stats = staff.get(f"{BASE}/replicas/stats").json()
    assert stats["scope"] == "process"
    assert stats["reads"].get("replica1", 0) + stats["reads"].get("replica2", 0) >= 20
    assert stats["writes"]["default"] >= 1
    assert stats["fallbacks_to_primary"]["write_request"] >= 1  # the PATCH's own lookup
    assert stats["fallbacks_to_primary_total"] == sum(stats["fallbacks_to_primary"].values())


def test_connection_pool_stats(replicas_live, tenant, staff):
    replicas_live.wait_caught_up()
    tenant.viewer.get(tenant.url("/expenses"))
    pools = staff.get(f"{BASE}/connection-pool/stats").json()["pools"]
    assert set(pools) == {"default", "replica1", "replica2"}
    for alias, row in pools.items():
        assert set(row) >= {"size", "in_use", "idle", "waiting", "max_size"}, alias
        assert row["size"] == row["in_use"] + row["idle"]
    assert pools["default"]["open"] is True and pools["default"]["max_size"] == 100
    assert pools["replica1"]["min_size"] == 2  # replicas keep a smaller warm pool


# --- manage.py replica_healthcheck ------------------------------------------------------
def _healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess:
    from tests.conftest import test_database_url
    from tests.replica_support import replica_urls

    environment = os.environ | {"DATABASE_URL": test_database_url(), "REPLICA_URLS": replica_urls(), **env}
    return subprocess.run(
        [sys.executable, "manage.py", "replica_healthcheck", *args],
        check=False, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_command_exit_0_when_all_healthy(replicas_live):
    result = _healthcheck()
    assert result.returncode == 0, result.stderr
    assert "status: healthy" in result.stdout
    assert result.stdout.count("in rotation") == 2
    as_json = json.loads(_healthcheck("--json").stdout)
    assert as_json["status"] == "healthy" and len(as_json["replicas"]) == 2


def test_command_exit_1_when_a_replica_lags_past_the_warning(replicas_live):
    Organization.objects.create(name="before the pause")
    replicas_live.wait_caught_up()
    with replicas_live.replay_paused("replica1"):
        for _ in range(8):
            Organization.objects.create(name="while paused")
            time.sleep(0.1)
        result = _healthcheck(REPLICA_LAG_WARNING_SECONDS="0.3", REPLICA_LAG_CRITICAL_SECONDS="30")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "status: degraded" in result.stdout
    assert "replica1" in result.stdout and "warning" in result.stdout


def test_command_exit_2_when_the_primary_is_unreachable(replicas_live):
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    result = _healthcheck("--json", DATABASE_URL=dead)
    assert result.returncode == 2, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "unhealthy" and body["primary"]["healthy"] is False


def test_command_exit_2_when_no_replica_is_usable(replicas_live):
    dead = ",".join(f"postgres://postgres@127.0.0.1:{free_port()}/nothing" for _ in range(2))
    result = _healthcheck(REPLICA_URLS=dead)
    assert result.returncode == 2
    assert result.stdout.count("OUT of rotation") == 2


def test_command_watch_repeats_and_exits_with_the_last_status(replicas_live):
    result = _healthcheck("--json", "--watch", "0.1", "--count", "3")
    assert result.returncode == 0
    rounds = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rounds) == 3 and all(r["status"] == "healthy" for r in rounds)


# --- migrations ---------------------------------------------------------------------------
class ConnectionCounter:
    """A TCP listener standing in for a replica: counts every connection attempt."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_migrate_never_connects_to_a_replica(replicas_live):
    from tests.conftest import test_database_url

    counters = [ConnectionCounter(), ConnectionCounter()]
    try:
        urls = ",".join(f"postgres://postgres@127.0.0.1:{c.port}/x" for c in counters)
        env = os.environ | {"DATABASE_URL": test_database_url(), "REPLICA_URLS": urls}
        run = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        refused = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "--database", "replica1"],
            check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "read replica" in refused.stderr
    finally:
        for counter in counters:
            counter.close()
    assert [c.accepted for c in counters] == [0, 0]
    router = ReplicaRouter()
    assert router.allow_migrate("default", "finance") is True
    assert router.allow_migrate("replica1", "finance") is False
