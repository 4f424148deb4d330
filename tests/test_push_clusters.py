"""Push notifications of an org on a second database cluster, and across its move
(CONTRACT §11, §13): preferences and deliveries live on the org's cluster, devices on
the directory database; real gunicorn, outbox worker and push worker processes, two
real clusters, and a Web Push service on loopback."""

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db import connection

from accounts.models import User
from changelog.worker import drain_once
from directory.models import OrgPlacement
from finance.models import Expense
from finance.services import entry_create
from push.services import device_register, preference_set
from replicas.context import use_cluster, use_org_cluster
from replicas.topology import topology
from tenancy.models import Membership, Organization, Property
from tests import conftest
from tests.changelog_support import finished_outbox_rows
from tests.cluster_support import NAME, PRIMARY, SecondCluster
from tests.live_server import outbox_worker, running_server
from tests.push_servers import Http1PushServer
from tests.push_support import Browser, push_worker
from tests.replica_support import wait_until
from tests.tokens import token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True, databases="__all__")]

CACHE = {"DIRECTORY_HEARTBEAT_SECONDS": "1", "DIRECTORY_STALE_SECONDS": "0.5"}


@pytest.fixture
def org_on_c2(second_cluster, settings) -> tuple[User, Organization, Property]:
    settings.DIRECTORY_HEARTBEAT_SECONDS = 1
    settings.DIRECTORY_STALE_SECONDS = 0.5
    user = User.objects.create_user(username="ana", password="pw-123456!")
    with use_cluster(topology().named(NAME)):
        org = Organization.objects.create(name="Hotel on c2")
        Membership.objects.create(org=org, user=user, role="manager")
        prop = Property.objects.create(org=org, name="Main", currency="EUR", timezone="Europe/Paris")
    return user, org, prop


def _on_main(query: str, *params: Any) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, list(params))
        return cursor.fetchall()


def _expense(http: httpx.Client, org: Organization, prop: Property, amount: str) -> str:
    body = {"property_id": str(prop.id), "amount": amount, "currency": "EUR", "category": "repairs",
            "occurred_on": "2026-11-02"}  # fmt: skip
    response = http.post(f"/v1/orgs/{org.id}/expenses", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _alerted(webpush: Http1PushServer, browser: Browser, expense_id: str) -> bool:
    return any(browser.decrypt(r.body).get("expense_id") == expense_id for r in webpush.received())


def test_preferences_of_an_org_on_c2_alert_a_device_and_move_with_the_org(
    second_cluster: SecondCluster, org_on_c2, django_db_blocker, tmp_path: Path
) -> None:
    user, org, prop = org_on_c2
    env = second_cluster.server_env() | {"CLUSTER2_REPLICA_URLS": "", **CACHE}
    auth = {"Authorization": f"Token {token_for(user)}"}
    with (
        django_db_blocker.unblock(),
        Http1PushServer(201) as webpush,
        running_server(conftest.test_database_url(), **env) as base,
        outbox_worker(conftest.test_database_url(), **env),
        push_worker(conftest.test_database_url(), tmp_path / "metrics", **env),
        httpx.Client(base_url=base, headers=auth, timeout=30) as http,
    ):
        browser = Browser(f"{webpush.url}/push/ana")
        device = http.post("/v1/devices", json={"kind": "webpush", "subscription": browser.subscription})
        assert device.status_code == 201, device.text
        preferences = {"large_expense": {"enabled": True, "thresholds": {"EUR": "500.00"}}, "sync": True}
        saved = http.put(f"/v1/orgs/{org.id}/notification-preferences", json=preferences)
        assert saved.status_code == 200, saved.text
        assert http.get(f"/v1/orgs/{org.id}/notification-preferences").json() == saved.json()

        # where the rows are: the device with the users, the preference with the org
        assert _on_main("SELECT count(*) FROM push_device WHERE user_id = %s", user.id) == [(1,)]
        assert second_cluster.sql("SELECT count(*) FROM push_device") == [(0,)]
        pref_on_c2 = "SELECT count(*) FROM push_notification_preference WHERE org_id = %s"
        assert second_cluster.sql(pref_on_c2, (org.id,)) == [(1,)]
        assert _on_main(pref_on_c2, org.id) == [(0,)]

        small = _expense(http, org, prop, "499.99")
        large = _expense(http, org, prop, "500.00")
        wait_until(lambda: _alerted(webpush, browser, large), timeout=30)
        assert not _alerted(webpush, browser, small)
        sent_on_c2 = "SELECT event_key, status FROM push_delivery WHERE org_id = %s"
        sent = [(f"expense.large:{large}", "sent")]
        wait_until(
            lambda: second_cluster.sql(sent_on_c2, (org.id,)) == sent, timeout=10
        )  # recorded after the send
        assert _on_main(sent_on_c2, org.id) == []

        out = io.StringIO()
        call_command("org_move", str(org.id), "--to", "main", stdout=out)
        assert "flipped to main" in out.getvalue()
        assert OrgPlacement.objects.get(org_id=org.id).cluster == "main"
        # the preferences and the delivery history moved with the org; the old copy is gone
        assert _on_main(pref_on_c2, org.id) == [(1,)]
        assert _on_main(sent_on_c2, org.id) == [(f"expense.large:{large}", "sent")]
        assert second_cluster.sql(pref_on_c2, (org.id,)) == [(0,)]
        assert second_cluster.sql(sent_on_c2, (org.id,)) == []
        assert http.get(f"/v1/orgs/{org.id}/notification-preferences").json() == saved.json()

        after = _expense(http, org, prop, "900.00")
        wait_until(lambda: _alerted(webpush, browser, after), timeout=30)
        both = [(f"expense.large:{large}", "sent"), (f"expense.large:{after}", "sent")]
        wait_until(lambda: _on_main(sent_on_c2 + " ORDER BY created_at", org.id) == both, timeout=10)
    # one request per alert: nothing was sent twice across the move
    assert sorted(browser.decrypt(r.body)["expense_id"] for r in webpush.received()) == sorted([large, after])


def test_a_claim_on_c2_is_fanned_out_there_with_the_devices_of_the_directory(
    second_cluster: SecondCluster, org_on_c2
) -> None:
    """The outbox worker's claim on c2 (changes of two orgs there): members and
    preferences read on c2, devices on main, every delivery written on c2, once."""
    user, org, prop = org_on_c2
    with use_cluster(topology().named(NAME)):
        annex = Organization.objects.create(name="Annex on c2")
        Membership.objects.create(org=annex, user=user, role="manager")
        annex_prop = Property.objects.create(org=annex, name="Annex", currency="EUR", timezone="UTC")
    for each in (org, annex):
        with use_org_cluster(each.id):
            preference_set(org=each, user=user, large_expense_enabled=True,
                           thresholds={"EUR": Decimal("100.00")}, sync=False)  # fmt: skip
    devices = [
        device_register(user=user, kind="webpush", address=f"https://127.0.0.1/push/c2-{n}")[0]
        for n in range(2)
    ]
    expenses = []
    for each, where in ((org, prop), (annex, annex_prop), (org, prop)):
        with use_org_cluster(each.id):
            expenses.append(
                entry_create(
                    model=Expense,
                    org=each,
                    created_by=user,
                    property_id=where.id,
                    amount=Decimal("150.00"),
                    currency="EUR",
                    category="c2",
                    occurred_on="2026-11-02",
                )
            )
    for each in (org, annex):  # handed to the worker in the process's next batch
        finished_outbox_rows(each.id, using=PRIMARY)
    assert drain_once(database="default").claimed == 0  # nothing of theirs on main
    result = drain_once(database=PRIMARY)
    assert (result.delivered, result.failed) == (3, 0)
    found = second_cluster.sql(
        "SELECT event_key, device_id FROM push_delivery WHERE org_id = ANY(%s)", ([org.id, annex.id],)
    )
    assert sorted(found) == sorted((f"expense.large:{e.id}", d.id) for e in expenses for d in devices)
    assert _on_main("SELECT count(*) FROM push_delivery") == [(0,)]


def test_the_worker_records_sends_finished_on_two_clusters_in_one_pass(
    second_cluster: SecondCluster, org_on_c2
) -> None:
    """Logic under test: the push worker's bookkeeping when sends of both clusters finish
    between two of its passes (after an org moved, its sends go to the new cluster while
    others' still go to main). Finished futures stand in for the sends (no push service):
    each cluster's rows are recorded `sent`, nothing stays in flight. Seen in the load
    test's drill: the pass recorded main's, then looked them up again for c2's (KeyError)
    and the worker died."""
    from concurrent.futures import Future

    from push.delivery import deliveries_claim
    from push.senders.outgoing import Outcome, SendResult
    from push.worker import PushWorker

    user, org_c2, prop_c2 = org_on_c2
    org_main = Organization.objects.create(name="Hotel on main")
    Membership.objects.create(org=org_main, user=user, role="manager")
    prop_main = Property.objects.create(org=org_main, name="Main", currency="EUR", timezone="UTC")
    device_register(user=user, kind="webpush", address="https://127.0.0.1/push/two-clusters")
    for org, prop, database in ((org_main, prop_main, "default"), (org_c2, prop_c2, PRIMARY)):
        with use_org_cluster(org.id):
            preference_set(org=org, user=user, large_expense_enabled=True,
                           thresholds={"EUR": Decimal("100.00")}, sync=False)  # fmt: skip
            entry_create(model=Expense, org=org, created_by=user, property_id=prop.id, amount=Decimal("150.00"),
                         currency="EUR", category="two-clusters", occurred_on="2026-11-02")  # fmt: skip
        finished_outbox_rows(org.id, using=database)
        assert drain_once(database=database).delivered == 1
    worker = PushWorker()
    for database in ("default", PRIMARY):
        claimed = deliveries_claim(limit=10, database=database)
        assert len(claimed) == 1
        sent: Future = Future()
        sent.set_result(SendResult(Outcome.SENT, status_code=201))
        worker.in_flight[sent] = claimed[0]
    worker._record_finished()
    assert worker.in_flight == {}
    status = "SELECT status FROM push_delivery WHERE org_id = %s"
    assert _on_main(status, org_main.id) == [("sent",)]
    assert second_cluster.sql(status, (org_c2.id,)) == [("sent",)]
