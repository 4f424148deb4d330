"""Fixtures shared by the whole suite. Tests run against the real local stack
(bin/stack): Postgres primary with streaming replicas, and Redis."""

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from tenancy.models import Membership, Organization, Property
from tenancy.roles import Role
from tests.tokens import token_for

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Real hashing costs ~0.3 s per user; tests create hundreds. Not a security test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _static_files_without_collectstatic(settings: Any) -> None:
    """The manifest storage needs `collectstatic` (make run does it); tests skip that."""
    settings.STORAGES = settings.STORAGES | {
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    }


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> None:
    """Login failures and rate-limit counters live in the shared Redis and outlive a
    test (all tests log in from 127.0.0.1): each test starts with none."""
    from tests.throttles import clear_throttle_counters

    clear_throttle_counters()


@pytest.fixture(autouse=True)
def _metric_labels_stay_declared() -> Any:
    """Fail any test after which a metric of this process holds a label value outside
    its declared set (monitoring/metrics.py DECLARED_LABELS): code must not invent one."""
    yield
    from monitoring.metrics import undeclared_label_values

    undeclared = undeclared_label_values()
    assert not undeclared, f"metrics emitted undeclared label values: {undeclared}"


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    def make(username: str | None = None, *, is_staff: bool = False, password: str = "pw-123456!") -> User:
        name = username or f"user{next(_counter)}"
        return User.objects.create_user(username=name, password=password, is_staff=is_staff)

    return make


@pytest.fixture
def client_for() -> Callable[[User | None], APIClient]:
    """An API client authenticated with the user's token (or anonymous for None)."""

    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make


class Tenant:
    """An org with an owner, a manager, a viewer, one property and API clients for each."""

    def __init__(self, make_user: Callable[..., User], client_for: Callable[[User | None], APIClient]):
        self.org = Organization.objects.create(name=f"Hotel {next(_counter)}")
        self.users: dict[str, User] = {}
        self.clients: dict[str, APIClient] = {}
        for role in Role:
            user = make_user()
            Membership.objects.create(org=self.org, user=user, role=role)
            self.users[role.value] = user
            self.clients[role.value] = client_for(user)
        self.property = Property.objects.create(
            org=self.org, name="Main building", currency="EUR", timezone="Europe/Paris"
        )

    @property
    def owner(self) -> APIClient:
        return self.clients["owner"]

    @property
    def manager(self) -> APIClient:
        return self.clients["manager"]

    @property
    def viewer(self) -> APIClient:
        return self.clients["viewer"]

    def url(self, suffix: str = "") -> str:
        return f"/v1/orgs/{self.org.id}{suffix}"

    def entry_payload(self, **overrides: Any) -> dict[str, Any]:
        payload = {
            "property_id": str(self.property.id),
            "amount": "12.50",
            "currency": "EUR",
            "category": "laundry",
            "occurred_on": "2026-11-01",
            "description": "Towels",
        }
        payload.update(overrides)
        return payload


@pytest.fixture
def make_tenant(db: None, make_user: Callable[..., User], client_for: Callable) -> Callable[[], Tenant]:
    return lambda: Tenant(make_user, client_for)


@pytest.fixture
def tenant(make_tenant: Callable[[], Tenant]) -> Tenant:
    return make_tenant()


@pytest.fixture
def other_tenant(make_tenant: Callable[[], Tenant]) -> Tenant:
    return make_tenant()


def test_database_url() -> str:
    """The URL of the test database pytest-django created, for server subprocesses."""
    from django.db import connection

    params = connection.settings_dict
    return f"postgres://{params['USER']}@{params['HOST']}:{params['PORT']}/{params['NAME']}"


@pytest.fixture(scope="session")
def live_wsgi(django_db_setup: None, django_db_blocker: Any) -> Any:
    from tests.live_server import running_server

    with django_db_blocker.unblock(), running_server(test_database_url()) as url:
        yield url


@pytest.fixture(scope="session")
def live_asgi(django_db_setup: None, django_db_blocker: Any) -> Any:
    from tests.live_server import running_server

    with django_db_blocker.unblock(), running_server(test_database_url(), kind="asgi") as url:
        yield url


# --- Read replicas --------------------------------------------------------------------
from tests.cluster_support import second_cluster  # noqa: E402, F401 (a second real database cluster)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Any:
    """Replica aliases are TEST MIRRORs, so Django neither creates nor flushes a test
    database on a read-only standby; but a mirror silently connects to the primary.
    Physical replication already copies the test database made on the primary, so
    point each replica alias at that name on its own real server."""
    from replicas.checker import checker
    from tests.replica_support import close_all_pools, point_replicas_at_test_database

    point_replicas_at_test_database()
    yield
    # their connections would keep the test database from being dropped
    checker.stop()
    close_all_pools()
    # So would a session whose server a test SIGKILLed a moment ago (its backend exits
    # only once it notices): every server of this run has stopped by now.
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def replicas_live(settings: Any, django_db_blocker: Any) -> Any:
    """Real streaming replicas, running and replaying, with fast checks; this process's
    replica state and counters start fresh. Undoes pauses and stops afterwards."""
    from replicas.checker import checker
    from replicas.replica_set import reset_replica_set
    from replicas.stats import routing_stats
    from tests import replica_support

    settings.REPLICA_HEALTH_CHECK_INTERVAL = 100
    settings.REPLICA_CHECK_TIMEOUT_MS = 1000
    settings.REPLICA_BREAKER_COOLDOWN_SECONDS = 0.5
    settings.REPLICA_ROUTING_HEADER = True
    with django_db_blocker.unblock():
        replica_support.ensure_replicas_running()
        replica_support.wait_caught_up()
    reset_replica_set()
    routing_stats.reset()
    checker.check_now()
    yield replica_support
    with django_db_blocker.unblock():
        replica_support.ensure_replicas_running()


# --- realtime (tests/test_realtime_*.py) ------------------------------------------------
REALTIME_TEST_ENV = {
    "MAX_CONNECTIONS_PER_ORG": "20",  # small, so tests can reach it
    "REALTIME_LEASE_SECONDS": "3",  # short, so expiry is testable in seconds
    "REALTIME_HEARTBEAT_SECONDS": "1",
    "REALTIME_STATS_FLUSH_SECONDS": "0.2",
    "METRICS_TOKEN": "realtime-test-metrics-token",
}


@pytest.fixture(scope="session")
def realtime_servers(django_db_setup: None, django_db_blocker: Any) -> Any:
    """Two uvicorn processes on two ports (as `bin/serve realtime` runs them), one Redis."""
    from tests.live_server import running_servers

    with django_db_blocker.unblock(), running_servers(test_database_url(), 2, **REALTIME_TEST_ENV) as servers:
        yield servers


# --- Redis round trips (tests/redis_wire.py) ---------------------------------------------
@pytest.fixture
def redis_wire(monkeypatch):
    """What goes over Redis sockets, in order: ("send", bytes, thread) for each command
    batch written, ("read", thread) for each reply read (any node, any topology), with
    the ident of the thread that did it (the process's background threads use Redis too:
    the metrics sampler)."""
    import threading

    import redis.connection

    events: list[tuple[str, int] | tuple[str, bytes, int]] = []
    send, read = (
        redis.connection.AbstractConnection.send_packed_command,
        redis.connection.AbstractConnection.read_response,
    )

    def sending(self, command, check_health=True):
        batch = b"".join(bytes(c) for c in command) if isinstance(command, list) else bytes(command)
        events.append(("send", batch, threading.get_ident()))
        return send(self, command, check_health)

    def reading(self, *args, **kwargs):
        events.append(("read", threading.get_ident()))
        return read(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", sending)
    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", reading)
    return events
