"""Quiet orgs (docs/changelog.md "Quiet orgs"): once no deferred handler (the push
fan-out) has work for an org, the outbox worker marks it quiet and the org's changes are
finished on the request thread, never reaching the worker; whatever could give the
fan-out work (a device registered, a member added, preferences set) ends the quiet
period in its own transaction, so no push is lost to a race. Real Postgres, Redis, push
service on loopback and worker processes; interleavings are forced by transactions the
test holds open on their own connections."""

import datetime
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from changelog.models import OrgChangeCounter, OutboxEntry, Tombstone
from changelog.worker import drain_once, quiet_mark
from finance.models import Expense, FinanceEntry
from finance.services import entry_create
from push.fanout import push_orgs_with_work
from push.models import Delivery
from push.services import device_register
from tenancy.models import Membership
from tenancy.roles import Role
from tenancy.services import membership_add
from tests import conftest
from tests.changelog_support import finished_outbox_rows
from tests.live_server import outbox_worker
from tests.replica_support import wait_until
from tests.test_push_delivery import PushStack, alerts_on, book_expense, register, stack  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True)]


def quiet_until(org_id: Any) -> datetime.datetime | None:
    counter = OrgChangeCounter.objects.filter(org_id=org_id).first()
    return None if counter is None else counter.quiet_until


def outbox_rows(org_id: Any) -> list[OutboxEntry]:
    return finished_outbox_rows(org_id)


def expense(tenant: Any, amount: str = "12.50") -> dict[str, Any]:
    response = tenant.manager.post(
        tenant.url("/expenses"), tenant.entry_payload(amount=amount), format="json"
    )
    assert response.status_code == 201, response.content
    finished_outbox_rows(tenant.org.id)  # deleted, or handed to the worker (due at once)
    return response.json()


def made_quiet(tenant: Any) -> datetime.datetime:
    """One change handed to the worker; the worker delivers it and, finding no work
    for the push fan-out, marks the org quiet."""
    expense(tenant)
    assert [row.inline_done for row in outbox_rows(tenant.org.id)] == [True]  # handed over
    result = drain_once()
    assert (result.delivered, result.quieted) == (1, 1)
    until = quiet_until(tenant.org.id)
    assert until is not None and until > timezone.now()
    return until


class Held(threading.Thread):
    """Runs `work` in a transaction on this thread's own connection, says so (`ready`),
    and commits only when released."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.ready, self.released = threading.Event(), threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with transaction.atomic():
                self.result = self.work()
                self.ready.set()
                assert self.released.wait(60), "never released"
        except BaseException as error:  # re-raised in finish()
            self.error = error
            self.ready.set()
        finally:
            connection.close()

    def started(self) -> "Held":
        self.start()
        return self

    def finish(self) -> Any:
        self.released.set()
        self.join(60)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def lock_waiters() -> int:
    """Backends of this database waiting for a lock (a row or an advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def device_of(user: Any, kind: str = "webpush") -> Any:
    address = "https://127.0.0.1/push/" if kind == "webpush" else "fcm-token:APA91b"
    device, _ = device_register(user=user, kind=kind, address=f"{address}{user.id}")
    return device


def deliveries_for(device: Any) -> list[Delivery]:
    return list(Delivery.objects.filter(device=device).order_by("created_at"))


# --- the quiet path -----------------------------------------------------------------------
def test_an_org_without_devices_goes_quiet_and_its_changes_never_reach_the_worker(tenant: Any) -> None:
    with outbox_worker(conftest.test_database_url()):
        expense(tenant)  # handed to the real worker, which finds nothing for push to do
        wait_until(lambda: quiet_until(tenant.org.id) is not None, 15)
        wait_until(lambda: not outbox_rows(tenant.org.id), 15)
    # No worker runs now: a row handed to it would stay. Every kind of change is
    # finished by its server process, its row deleted in the process's next batch.
    created = expense(tenant)
    assert not outbox_rows(tenant.org.id)
    patched = tenant.manager.patch(
        tenant.url(f"/expenses/{created['id']}"), {"amount": "3.00"}, format="json"
    )
    assert patched.status_code == 200 and not outbox_rows(tenant.org.id)
    assert tenant.manager.delete(tenant.url(f"/expenses/{created['id']}")).status_code == 204
    assert not outbox_rows(tenant.org.id)
    prop = tenant.owner.post(
        tenant.url("/properties"), {"name": "Annex", "currency": "EUR", "timezone": "UTC"}, format="json"
    )
    assert prop.status_code == 201 and not outbox_rows(tenant.org.id)
    # ... and still versioned in order, the deletion still tombstoned.
    assert [patched.json()["version"], prop.json()["version"]] == [
        created["version"] + 1,
        created["version"] + 3,
    ]
    assert (
        Tombstone.objects.get(org_id=tenant.org.id, entity_id=created["id"]).version == created["version"] + 2
    )
    assert OrgChangeCounter.objects.get(org_id=tenant.org.id).version == created["version"] + 3
    assert drain_once().claimed == 0


def test_the_quiet_period_expires(tenant: Any, settings: Any) -> None:
    settings.CHANGELOG_QUIET_SECONDS = 1.5
    until = made_quiet(tenant)
    assert until - timezone.now() < datetime.timedelta(seconds=1.6)
    expense(tenant)
    assert not outbox_rows(tenant.org.id)  # quiet: done on the request thread
    wait_until(lambda: timezone.now() > until + datetime.timedelta(seconds=0.1), 5)
    expense(tenant)
    assert [row.inline_done for row in outbox_rows(tenant.org.id)] == [True]  # the worker's again
    result = drain_once()
    assert (result.delivered, result.quieted) == (1, 1)  # asked again, marked again
    marked_until = quiet_until(tenant.org.id)
    assert marked_until is not None and marked_until > until


def test_an_org_with_work_is_not_marked_quiet(tenant: Any) -> None:
    device_of(tenant.users["viewer"], kind="fcm")  # sync pokes on by default
    expense(tenant)
    result = drain_once()
    assert (result.delivered, result.quieted) == (1, 0)
    assert quiet_until(tenant.org.id) is None
    assert Delivery.objects.filter(org_id=tenant.org.id, notification_type="sync.poke").count() == 1


def test_a_webpush_device_without_the_alert_gives_no_work(tenant: Any) -> None:
    """Browsers get no sync pokes (they have the socket): only the alert makes work."""
    device_of(tenant.users["manager"])
    made_quiet(tenant)
    alerts_on(tenant, "manager", {"EUR": "100.00"})
    assert quiet_until(tenant.org.id) is None
    expense(tenant, "150.00")
    assert drain_once().quieted == 0
    assert Delivery.objects.filter(org_id=tenant.org.id, notification_type="expense.large").count() == 1


def test_orgs_on_another_cluster_than_the_devices_are_never_quiet(tenant: Any) -> None:
    """A device registration could not end their quiet period in its own transaction."""
    org = str(tenant.org.id)
    assert push_orgs_with_work([org], "default") == set()
    assert push_orgs_with_work([org], "c2_primary") == {org}


# --- what ends it -------------------------------------------------------------------------
def test_adding_a_member_with_a_device_ends_the_quiet_period(tenant: Any, make_user: Any) -> None:
    newcomer = make_user()
    device = device_of(newcomer, kind="fcm")  # a member of no org yet: nothing to end
    made_quiet(tenant)
    response = tenant.owner.post(
        tenant.url("/members"), {"username": newcomer.username, "role": "viewer"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert quiet_until(tenant.org.id) is None
    expense(tenant)
    assert drain_once().quieted == 0
    assert [d.notification_type for d in deliveries_for(device)] == ["sync.poke"]


def test_registering_a_device_ends_the_quiet_period_of_each_of_the_users_orgs(
    tenant: Any, other_tenant: Any, make_tenant: Any
) -> None:
    viewer = tenant.users["viewer"]
    Membership.objects.create(org=other_tenant.org, user=viewer, role=Role.VIEWER)
    unrelated = make_tenant()
    for each in (tenant, other_tenant, unrelated):
        made_quiet(each)
    device_of(viewer, kind="fcm")
    assert quiet_until(tenant.org.id) is None
    assert quiet_until(other_tenant.org.id) is None
    assert quiet_until(unrelated.org.id) is not None  # the user is not a member there


# --- races: device registration against a write or the worker -----------------------------
def test_a_device_registered_while_a_quiet_write_is_open_gets_the_next_push(tenant: Any) -> None:
    """The write took its version while the org was quiet; the registration must wait
    for its commit (the counter row's lock) and then end the quiet period: the write
    committed before the device did (nothing owed), the next one is pushed."""
    manager = tenant.users["manager"]
    alerts_on(tenant, "manager", {"EUR": "100.00"})
    made_quiet(tenant)

    def large_expense() -> FinanceEntry:
        return entry_create(
            model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
            amount=Decimal("500.00"), currency="EUR", category="held", occurred_on="2026-11-02",
        )  # fmt: skip

    write = Held(large_expense).started()
    assert write.ready.wait(30)
    registration = Held(lambda: device_of(manager)).started()
    wait_until(lambda: lock_waiters() >= 1, 10)  # waiting for the write's counter lock
    assert not registration.ready.is_set()
    first = write.finish()
    device = registration.finish()
    assert not outbox_rows(tenant.org.id)  # the quiet write was finished inline
    assert quiet_until(tenant.org.id) is None

    second = entry_create(
        model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
        amount=Decimal("500.00"), currency="EUR", category="after", occurred_on="2026-11-02",
    )  # fmt: skip
    assert len(outbox_rows(tenant.org.id)) == 1  # not quiet: for the worker
    assert drain_once().quieted == 0
    assert [d.event_key for d in deliveries_for(device)] == [f"expense.large:{second.id}"]
    assert first.id != second.id


def test_a_device_registered_while_the_worker_marks_the_org_quiet_ends_it(tenant: Any) -> None:
    """The worker holds the org's counter lock, found no work and set quiet_until; the
    registration's reset waits for that commit and clears it."""
    manager = tenant.users["manager"]
    alerts_on(tenant, "manager", {"EUR": "100.00"})
    expense(tenant)
    assert drain_once().quieted == 1
    OrgChangeCounter.objects.filter(org_id=tenant.org.id).update(quiet_until=None)  # as if not yet marked

    marking = Held(lambda: quiet_mark(database="default", org_ids=[str(tenant.org.id)])).started()
    assert marking.ready.wait(30)
    registration = Held(lambda: device_of(manager)).started()
    wait_until(lambda: lock_waiters() >= 1, 10)
    assert marking.finish() == 1  # it did mark the org, before the device committed
    device = registration.finish()
    assert quiet_until(tenant.org.id) is None

    expense(tenant, "250.00")
    assert drain_once().quieted == 0
    assert [d.notification_type for d in deliveries_for(device)] == ["expense.large"]


def test_the_worker_does_not_mark_an_org_whose_device_registration_is_open(tenant: Any) -> None:
    expense(tenant)
    registration = Held(lambda: device_of(tenant.users["viewer"], kind="fcm")).started()
    assert registration.ready.wait(30)  # its reset holds the org's counter row
    result = drain_once()
    assert (result.delivered, result.quieted) == (1, 0)  # skipped, not waited for
    device = registration.finish()
    expense(tenant)
    assert drain_once().quieted == 0
    assert [d.notification_type for d in deliveries_for(device)] == ["sync.poke"]


def test_a_member_added_while_the_users_device_registers_is_never_left_quiet(
    tenant: Any, make_user: Any
) -> None:
    """Write skew without the member lock: the registration would not see the membership
    being added (so not end that org's quiet period), the membership's transaction could
    not see the device, and a worker marking the org in between would leave it quiet."""
    newcomer = make_user()
    made_quiet(tenant)
    adding = Held(lambda: membership_add(org=tenant.org, user=newcomer, role=Role.VIEWER)).started()
    assert adding.ready.wait(30)
    registration = Held(lambda: device_of(newcomer, kind="fcm")).started()
    wait_until(lambda: lock_waiters() >= 1, 10)  # the member lock
    assert not registration.ready.is_set()
    adding.finish()
    assert registration.ready.wait(30)  # it saw the membership and holds the org's counter row
    assert quiet_mark(database="default", org_ids=[str(tenant.org.id)]) == 0
    device = registration.finish()
    assert quiet_until(tenant.org.id) is None
    expense(tenant)
    assert drain_once().quieted == 0
    assert [d.notification_type for d in deliveries_for(device)] == ["sync.poke"]


# --- end to end ---------------------------------------------------------------------------
def test_a_quiet_org_pushes_the_large_expense_of_a_device_registered_since(
    stack: PushStack,  # noqa: F811 (the fixture imported above)
    tenant: Any,
) -> None:
    alerts_on(tenant, "manager", {"EUR": "100.00"})  # preferences, but no device yet
    book_expense(tenant, "150.00")  # the outbox worker fans out, finds nobody, marks it quiet
    assert quiet_until(tenant.org.id) is not None
    assert not Delivery.objects.filter(org_id=tenant.org.id).exists()
    browser = stack.browser("manager")
    register(tenant, "manager", {"kind": "webpush", "subscription": browser.subscription})
    assert quiet_until(tenant.org.id) is None
    with stack.worker():
        large = book_expense(tenant, "175.00")
        [received] = wait_until(stack.webpush.received, timeout=30)
    assert received.path == "/push/manager"
    assert browser.decrypt(received.body)["expense_id"] == large["id"]
