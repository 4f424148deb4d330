"""The outbox worker fans out a whole claim at once (docs/push.md "Fan-out cost"): the
changes of many orgs and devices, with the same statements whatever their number; a
worker killed in the middle of a claim leaves nothing twice; a change that fails holds
up only its own org's later changes. Real Postgres, Redis and worker processes."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from changelog import dispatch
from changelog.dispatch import Change, register_handler
from changelog.models import OrgChangeCounter, OutboxEntry
from changelog.worker import drain_once
from push import fanout
from push.models import Delivery, Device
from push.services import device_register
from realtime.connection_limits import ConnectionSlot, slot_acquire, slot_release
from tenancy.models import Membership
from tenancy.roles import Role
from tests import conftest
from tests.changelog_support import finished_outbox_rows
from tests.live_server import outbox_worker
from tests.replica_support import wait_until
from tests.test_push_delivery import alerts_on
from tests.test_push_quiet_orgs import Held, device_of, lock_waiters, quiet_until

pytestmark = [pytest.mark.django_db(transaction=True)]


def expense(tenant: Any, amount: str, currency: str = "EUR") -> dict[str, Any]:
    """A REST write; with no worker running, its outbox row waits for one (handed over,
    due at once, in the process's next batch: waited for here)."""
    response = tenant.owner.post(
        tenant.url("/expenses"), tenant.entry_payload(amount=amount, currency=currency), format="json"
    )
    assert response.status_code == 201, response.content
    finished_outbox_rows(tenant.org.id)
    return response.json()


def queued(org_ids: list[Any]) -> set[tuple[str, str, str]]:
    """(event key, device, user) of every delivery of the orgs."""
    rows = Delivery.objects.filter(org_id__in=org_ids).values_list("event_key", "device_id", "user_id")
    found = [(key, str(device), str(user)) for key, device, user in rows]
    assert len(found) == len(set(found))
    return set(found)


def apns_of(user: Any) -> Any:
    device, _ = device_register(user=user, kind="apns", address=uuid.uuid4().hex * 2)
    return device


def test_a_claim_across_orgs_and_devices_queues_exactly_the_expected_deliveries(make_tenant: Any) -> None:
    a, b, c, d = (make_tenant() for _ in range(4))
    ana = a.users["viewer"]  # a member of a and b, with the alert on in both
    Membership.objects.create(org=b.org, user=ana, role=Role.VIEWER)
    b.clients["ana"] = a.clients["viewer"]  # her own API client
    alerts_on(a, "manager", {"EUR": "100.00"})
    alerts_on(a, "viewer", {"EUR": "1000.00"})
    alerts_on(b, "ana", {"EUR": "100.00"})
    alerts_on(b, "manager", {"USD": "1.00"})  # another currency: never alerted by EUR
    off = {"large_expense": {"enabled": False, "thresholds": {}}, "sync": False}
    assert c.manager.put(c.url("/notification-preferences"), off, format="json").status_code == 200
    web1 = device_register(user=a.users["manager"], kind="webpush", address="https://127.0.0.1/push/a-m-1")[0]
    web2 = device_register(user=a.users["manager"], kind="webpush", address="https://127.0.0.1/push/a-m-2")[0]
    fcm_manager = device_of(a.users["manager"], kind="fcm")
    fcm_ana = device_of(ana, kind="fcm")
    apns_owner = apns_of(a.users["owner"])  # sync on by default, but a socket open for a
    web_b = device_of(b.users["manager"])  # webpush: no sync pokes, alert in USD only
    device_of(c.users["manager"], kind="fcm")  # sync off, alert off
    slot = ConnectionSlot(
        connection_id=str(uuid.uuid4()), user_id=str(a.users["owner"].id), org_id=str(a.org.id)
    )
    asyncio.run(slot_acquire(slot=slot))
    try:
        small, large = expense(a, "150.00"), expense(a, "5000.00")
        in_b, in_c, in_d = expense(b, "500.00"), expense(c, "9999.00"), expense(d, "9999.00")
        orgs = [a.org.id, b.org.id, c.org.id, d.org.id]
        assert OutboxEntry.objects.filter(org_id__in=orgs, inline_done=True).count() == 5
        result = drain_once()
    finally:
        asyncio.run(slot_release(slot=slot))
    assert (result.delivered, result.failed, result.dead) == (5, 0, 0)
    assert not OutboxEntry.objects.filter(org_id__in=orgs).exists()
    manager = str(a.users["manager"].id)
    alerts = {
        (f"expense.large:{small['id']}", str(device.id), manager) for device in (web1, web2, fcm_manager)
    } | {(f"expense.large:{large['id']}", str(device.id), manager) for device in (web1, web2, fcm_manager)}
    alerts |= {
        (f"expense.large:{large['id']}", str(fcm_ana.id), str(ana.id)),  # in a: 5000 >= 1000
        (f"expense.large:{in_b['id']}", str(fcm_ana.id), str(ana.id)),  # in b: 500 >= 100
    }
    # One poke per org and app device, with the org's latest version; none to the owner
    # (socket open), none to browsers, none in c (sync off).
    pokes = {
        (f"sync.poke:{a.org.id}:{large['version']}", str(fcm_manager.id), manager),
        (f"sync.poke:{a.org.id}:{large['version']}", str(fcm_ana.id), str(ana.id)),
        (f"sync.poke:{b.org.id}:{in_b['version']}", str(fcm_ana.id), str(ana.id)),
    }
    assert queued(orgs) == alerts | pokes
    assert not Delivery.objects.filter(device_id__in=[apns_owner.id, web_b.id]).exists()
    assert in_c and in_d  # nobody to tell
    poke = Delivery.objects.get(org_id=a.org.id, device_id=fcm_manager.id, notification_type="sync.poke")
    assert poke.payload == {"type": "sync.poke", "org_id": str(a.org.id), "version": large["version"]}
    assert poke.sync_version == large["version"]
    alert = Delivery.objects.get(event_key=f"expense.large:{in_b['id']}")
    assert (alert.org_id, alert.payload["amount"], alert.payload["currency"]) == (b.org.id, "500.00", "EUR")
    assert alert.payload["expense_id"] == in_b["id"]
    # Quiet marking sees the same claim: c and d have no work, a and b do.
    assert result.quieted == 2
    assert quiet_until(c.org.id) is not None and quiet_until(d.org.id) is not None
    assert quiet_until(a.org.id) is None and quiet_until(b.org.id) is None


def claim_of(make_tenant: Any, orgs: int, expenses_per_org: int) -> list[Any]:
    """`orgs` orgs whose manager has the alert on, two browsers and an app; the
    expenses' outbox rows wait for the worker."""
    tenants = []
    for _ in range(orgs):
        tenant = make_tenant()
        alerts_on(tenant, "manager", {"EUR": "100.00"})
        for kind in ("webpush", "webpush", "fcm"):
            device_register(
                user=tenant.users["manager"], kind=kind, address=f"https://127.0.0.1/{uuid.uuid4()}"
            )
        tenants.append(tenant)
    for n in range(expenses_per_org):
        for tenant in tenants:
            expense(tenant, f"{200 + n}.00")
    return tenants


def test_a_claim_costs_the_same_statements_whatever_its_size(make_tenant: Any, monkeypatch: Any) -> None:
    redis_asks: list[dict[str, list[str]]] = []
    ask = fanout.open_sockets_of

    def counted(by_org: dict[str, list[str]]) -> set[tuple[str, str]]:
        redis_asks.append(by_org)
        return ask(by_org)

    monkeypatch.setattr(fanout, "open_sockets_of", counted)
    statements = []
    for orgs, per_org in ((2, 1), (6, 4)):
        tenants = claim_of(make_tenant, orgs, per_org)
        with CaptureQueriesContext(connection) as captured:
            result = drain_once()
        assert result.delivered == orgs * per_org
        org_ids = [t.org.id for t in tenants]
        # 3 alerts per expense, one poke per org
        assert Delivery.objects.filter(org_id__in=org_ids).count() == orgs * per_org * 3 + orgs
        sql = [q["sql"] for q in captured.captured_queries]
        assert sum(s.lstrip().startswith("INSERT INTO push_delivery") for s in sql) == 1
        assert sum("pg_notify" in s for s in sql) == 1
        statements.append(len(sql))
    assert statements[0] == statements[1], statements  # 2 changes or 24: the same statements
    assert statements[0] <= 20, statements
    assert len(redis_asks) == 2  # one round trip per claim for the open sockets
    assert len(redis_asks[1]) == 6


def test_a_worker_killed_mid_claim_and_restarted_queues_each_delivery_once(make_tenant: Any) -> None:
    """The worker's INSERT of the claim's deliveries is held up by a row the test is
    inserting (as an earlier run would have); the worker is SIGKILLed there, with the
    claim half done, the row then committed, and a new worker started."""
    tenants = claim_of(make_tenant, 3, 2)
    org_ids = [t.org.id for t in tenants]
    rows = list(OutboxEntry.objects.filter(org_id__in=org_ids).order_by("id"))
    assert len(rows) == 6
    last = tenants[-1]
    last_expense = rows[-1].data
    device = Device.objects.filter(user=last.users["manager"]).order_by("id")[0]
    held = Held(
        lambda: Delivery.objects.create(
            org=last.org, user=last.users["manager"], device=device,
            event_key=f"expense.large:{last_expense['id']}", notification_type="expense.large",
            payload={"type": "expense.large", "earlier": "run"}, next_attempt_at=timezone.now(),
            committed_at=timezone.now(),
        )
    ).started()  # fmt: skip
    assert held.ready.wait(30)
    database_url = conftest.test_database_url()
    with outbox_worker(database_url) as first:
        wait_until(lambda: lock_waiters() >= 1, 30)  # the worker's INSERT waits for the test's row
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            assert [row[0].lstrip()[:25] for row in cursor.fetchall()] == ["INSERT INTO push_delivery"]
        first.kill()
        first.wait()
    earlier = held.finish()
    assert OutboxEntry.objects.filter(org_id__in=org_ids).count() == 6  # nothing of the claim committed
    with outbox_worker(database_url):
        wait_until(lambda: not OutboxEntry.objects.filter(org_id__in=org_ids).exists(), 30)
    assert Delivery.objects.filter(org_id__in=org_ids).count() == 6 * 3 + 3
    assert len(queued(org_ids)) == 6 * 3 + 3  # each (event, device) once
    kept = Delivery.objects.get(event_key=f"expense.large:{last_expense['id']}", device=device)
    assert (kept.id, kept.payload) == (earlier.id, {"type": "expense.large", "earlier": "run"})


def alerted(tenant: Any) -> set[str]:
    """The expenses alerted in the org (3 devices each)."""
    keys = [key for key, _, _ in queued([tenant.org.id]) if key.startswith("expense.large:")]
    assert len(keys) == 3 * len(set(keys))
    return {key.removeprefix("expense.large:") for key in keys}


def poked(tenant: Any) -> list[int | None]:
    """The versions of the org's sync pokes (one app device)."""
    pokes = Delivery.objects.filter(org_id=tenant.org.id, notification_type="sync.poke")
    return [poke.sync_version for poke in pokes]


@pytest.fixture
def refusing() -> Iterator[set[str]]:
    """A test-only deferred handler, after the fan-out, that fails for the changes of
    the entities named in the set."""
    saved = dispatch.handlers()
    refused: set[str] = set()

    def handler(change: Change) -> None:
        if change.entity_id in refused:
            raise ConnectionError("refused by the test")

    register_handler("test_refusing", handler, inline=False, order=60)
    yield refused
    dispatch._handlers = saved


def test_a_failing_change_holds_up_only_its_own_orgs_later_changes(
    make_tenant: Any, refusing: set[str], settings: Any
) -> None:
    settings.CHANGELOG_RETRY_MAX_SECONDS = 0.2
    a, b = claim_of(make_tenant, 2, 0)
    first_a, first_b, second_a, second_b = (
        expense(a, "101.00"), expense(b, "102.00"), expense(a, "103.00"), expense(b, "104.00")
    )  # fmt: skip
    refusing.add(first_b["id"])
    result = drain_once()
    assert (result.delivered, result.failed, result.dead) == (2, 2, 0)
    # a's changes are done, fanned out once; b's first failed (nothing of it kept), its
    # second waits for it without having been tried
    assert alerted(a) == {first_a["id"], second_a["id"]}
    assert poked(a) == [second_a["version"]]
    assert not Delivery.objects.filter(org_id=b.org.id).exists()
    left = {row.entity_id: row for row in OutboxEntry.objects.filter(org_id=b.org.id)}
    assert left[uuid.UUID(first_b["id"])].attempts == 1
    assert "refused by the test" in left[uuid.UUID(first_b["id"])].last_error
    assert left[uuid.UUID(second_b["id"])].attempts == 0
    assert all(row.available_at > timezone.now() for row in left.values())
    assert OrgChangeCounter.objects.get(org_id=b.org.id).quiet_until is None

    refusing.clear()
    deadline = time.monotonic() + 10
    while OutboxEntry.objects.filter(org_id=b.org.id).exists() and time.monotonic() < deadline:
        drain_once()
        time.sleep(0.05)
    assert not OutboxEntry.objects.filter(org_id=b.org.id).exists()
    assert alerted(b) == {first_b["id"], second_b["id"]}
    assert poked(b) == [second_b["version"]]
    assert len(queued([a.org.id])) == 2 * 3 + 1  # not fanned out again
