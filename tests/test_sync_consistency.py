"""What makes a pull trustworthy (CONTRACT §10, §4): a change whose transaction took its
version and commits late is never skipped; a lagging replica never answers with a state
older than the cookie; a pushed change has the effects of a REST write, plus the poke."""

import asyncio
import threading
import uuid
from decimal import Decimal

import httpx
import pytest
from django.db import connection, transaction

from changelog.services import org_version_take
from finance.models import Expense
from finance.services import entry_create
from replicas.lsn import int_to_lsn
from tests.realtime_client import next_change, open_socket, token_of
from tests.replica_support import REPLICAS, replay_paused, row, wait_caught_up, wait_until
from tests.sync_support import apply_changes, create_mutation, pull_all, server_state

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__")]


def _pull(client, tenant, cookie, **headers):
    response = client.post(tenant.url("/sync/pull"), {"cookie": cookie}, format="json", **headers)
    assert response.status_code == 200, response.content
    return response


def test_a_pull_while_a_writer_holds_its_version_returns_no_later_version_and_later_gets_both(
    tenant, settings
):
    """A takes version C+1 and stays open; B (a REST write) must wait for A's lock, so no
    pull can ever see C+2 committed while C+1 is still to come."""
    settings.USE_READ_REPLICAS = False
    cookie = pull_all(tenant.viewer, tenant.url("/sync/pull"))["cookie"]
    a_holds_its_version = threading.Event()
    release_a = threading.Event()
    b_result: dict = {}

    def transaction_a() -> None:
        try:
            with transaction.atomic():
                version = org_version_take(org_id=tenant.org.id)
                Expense.objects.create(
                    org=tenant.org, property=tenant.property, amount=Decimal("1.00"), currency="EUR",
                    category="late", occurred_on="2026-11-01", created_by=tenant.users["owner"], version=version,
                )  # fmt: skip
                a_holds_its_version.set()
                release_a.wait(30)
        finally:
            connection.close()

    def transaction_b() -> None:
        try:
            b_result["response"] = tenant.manager.post(
                tenant.url("/expenses"), tenant.entry_payload(category="early"), format="json"
            )
        finally:
            connection.close()

    a = threading.Thread(target=transaction_a)
    a.start()
    assert a_holds_its_version.wait(15)
    b = threading.Thread(target=transaction_b)
    b.start()
    try:
        wait_until(
            lambda: (
                row(
                    "default",
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'",
                )[0]
                >= 1
            ),
            timeout=60,
        )  # B is queued on A's lock
        for _ in range(3):
            page = _pull(tenant.viewer, tenant, cookie).json()
            assert page["changes"] == [] and page["cookie"] == cookie  # neither A's nor B's version
    finally:
        release_a.set()
        a.join(30)
        b.join(30)
    assert b_result["response"].status_code == 201
    page = _pull(tenant.viewer, tenant, cookie).json()
    assert [c["value"]["category"] for c in page["changes"]] == ["late", "early"]
    versions = [c["value"]["version"] for c in page["changes"]]
    assert versions[1] == versions[0] + 1 and page["cookie"].endswith(f".{versions[1]}")


def test_a_lagging_replica_serves_an_old_cookie_but_never_a_state_older_than_the_cookie(
    tenant, replicas_live, settings
):
    settings.REPLICA_CATCH_UP_WAIT_MS = 0
    for n in range(3):  # written outside any request: no client position is kept for them
        entry_create(
            model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
            amount=Decimal(n + 1), currency="EUR", category=f"before-{n}", occurred_on="2026-11-01",
        )  # fmt: skip
    wait_caught_up(timeout=60)
    url = tenant.url("/sync/pull")
    old = pull_all(tenant.viewer, url)
    with replay_paused(REPLICAS[0]), replay_paused(REPLICAS[1]):
        for n in range(2):
            entry_create(
                model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
                amount=Decimal(n + 1), currency="EUR", category=f"during-{n}", occurred_on="2026-11-01",
            )  # fmt: skip
        # The replicas lag: a pull from the old cookie may be served by one, and is then
        # exactly the old state (its cookie is not older than the one sent).
        from_replica = _pull(tenant.viewer, tenant, old["cookie"])
        assert "replica" in from_replica["X-DB-Read-From"]  # else this test proves nothing
        assert from_replica.json()["cookie"] == old["cookie"] and from_replica.json()["changes"] == []
        # A client that has seen the newer state (here: a pull told to read the primary's
        # current position) holds a cookie the replicas have not reached.
        position = int(row("default", "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0])
        fresh = _pull(tenant.viewer, tenant, old["cookie"], HTTP_X_DB_POSITION=int_to_lsn(position))
        assert "replica" not in fresh["X-DB-Read-From"]
        assert [c["value"]["category"] for c in fresh.json()["changes"]] == ["during-0", "during-1"]
        new_cookie = fresh.json()["cookie"]
        # With that cookie a lagging replica may be asked but may not answer (its answer
        # would carry its own, older version): the primary does, never going back.
        for _ in range(3):
            again = _pull(tenant.viewer, tenant, new_cookie)
            assert again.json()["reset"] is False
            assert again.json()["changes"] == [] and again.json()["cookie"] == new_cookie
    state = dict(old["state"])
    apply_changes(state, fresh.json()["changes"])
    assert pull_all(tenant.viewer, url, new_cookie, state=state)["state"] == server_state(tenant.org.id)


def test_a_pushed_change_reaches_the_sockets_with_its_poke_like_a_rest_write(
    realtime_servers, live_wsgi, tenant
):
    org_id = str(tenant.org.id)
    manager = token_of(tenant.users["manager"])
    viewer = token_of(tenant.users["viewer"])
    rest = httpx.Client(base_url=live_wsgi, headers={"Authorization": f"Token {manager}"}, timeout=20)

    async def scenario():
        socket, _ = await open_socket(realtime_servers[0].ws_url, org_id, viewer)
        push = await asyncio.to_thread(
            rest.post,
            tenant.url("/sync/push"),
            json={"client_id": str(uuid.uuid4()), "mutations": [create_mutation(1, tenant)]},
        )
        rest_write = await asyncio.to_thread(rest.post, tenant.url("/expenses"), json=tenant.entry_payload())
        events = [await next_change(socket), await next_change(socket)]
        await socket.close()
        return push.json(), rest_write.json(), events

    push, rest_write, events = asyncio.run(scenario())
    pushed = Expense.objects.get(org=tenant.org, version=push["results"][0]["version"])
    assert [e["type"] for e in events] == ["expense.created", "expense.created"]
    assert [e["data"]["id"] for e in events] == [str(pushed.id), rest_write["id"]]
    assert events[0]["version"] == push["results"][0]["version"]
