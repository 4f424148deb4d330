"""Finishing delivered outbox rows in batches per process (changelog/finishing.py): rows
delivered close together go in one statement, and a process that dies before finishing
its rows repeats no effect (the worker delivers them again; handlers are idempotent)."""

import asyncio
import threading
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from changelog.models import OutboxEntry
from finance.models import Expense
from finance.services import entry_create
from tests import conftest
from tests.live_server import outbox_worker, running_server
from tests.realtime_client import assert_silent, next_change, open_socket, token_of
from tests.replica_support import wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rows_delivered_close_together_are_finished_in_few_statements(settings: Any, tenant: Any) -> None:
    settings.CHANGELOG_FINISH_DELAY_SECONDS = 0.25
    settings.CHANGELOG_QUIET_SECONDS = 0  # every row is handed to the worker: none is deleted early
    batches_before = _metric("changelog_finish_batches_total")
    writes_per_thread, threads = 5, 4
    errors: list[BaseException] = []

    def writer() -> None:
        from django.db import connection

        try:
            for _ in range(writes_per_thread):
                entry_create(
                    model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
                    amount=Decimal("4.00"), currency="EUR", category="batch", occurred_on="2026-11-02",
                )  # fmt: skip
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=writer) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not errors
    writes = writes_per_thread * threads
    rows = OutboxEntry.objects.filter(org_id=tenant.org.id)
    wait_until(lambda: rows.filter(inline_done=True).count() == writes, timeout=5)
    batches = _metric("changelog_finish_batches_total") - batches_before
    assert 1 <= batches <= writes / 2, batches  # many rows per statement, not one each


@pytest.mark.live
def test_a_process_killed_before_finishing_its_rows_repeats_no_effect(
    realtime_servers: Any, tenant: Any
) -> None:
    """gunicorn answers (handlers ran: the event is out), then dies when its finisher
    wakes (test-only hook), leaving the row undelivered as far as the outbox knows. The
    outbox worker delivers it again: sockets still get the event exactly once."""
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])
    database_url = conftest.test_database_url()
    with running_server(database_url, CHANGELOG_CRASH_BEFORE_FINISH="true") as crashing:

        async def scenario() -> tuple[dict, list[dict]]:
            sockets = [(await open_socket(s.ws_url, org_id, token))[0] for s in realtime_servers]
            response = await asyncio.to_thread(
                lambda: httpx.post(
                    f"{crashing}{tenant.url('/expenses')}",
                    json=tenant.entry_payload(),
                    headers={"Authorization": f"Token {token}"},
                    timeout=10,
                )
            )
            assert response.status_code == 201  # answered before the rows' batch
            events = [await next_change(s, timeout=5) for s in sockets]
            # The process died with the row unfinished: still there, not handed over.
            await asyncio.sleep(0.3)
            rows = await asyncio.to_thread(lambda: list(OutboxEntry.objects.filter(org_id=org_id)))
            assert [(row.inline_done, row.attempts) for row in rows] == [(False, 0)]
            with outbox_worker(database_url):
                await asyncio.to_thread(  # a running worker delivers within 5 s
                    wait_until, lambda: not OutboxEntry.objects.filter(org_id=org_id).exists(), 5
                )
                for s in sockets:
                    await assert_silent(s, within=0.5)  # the worker's delivery was a duplicate
                    await s.close()
            return response.json(), events

        created, events = asyncio.run(scenario())
    assert [(e["data"]["id"], e["version"]) for e in events] == [(created["id"], created["version"])] * len(
        realtime_servers
    )


def test_a_connection_the_server_closed_costs_the_finisher_no_batch(settings: Any, tenant: Any) -> None:
    """The finisher thread keeps its connection; a server restart, a failover or a dropped
    test database (a second cluster's, between test modules) closes it under the thread.
    Its next batch runs on a fresh connection at once: no row waits for the worker's
    grace period (no worker runs here, so an unfinished row would stay)."""
    from django.db import connection

    settings.CHANGELOG_FINISH_DELAY_SECONDS = 0.05

    def write() -> None:
        entry_create(
            model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
            amount=Decimal("4.00"), currency="EUR", category="reconnect", occurred_on="2026-11-02",
        )  # fmt: skip

    write()
    rows = OutboxEntry.objects.filter(org_id=tenant.org.id)
    wait_until(lambda: not rows.filter(inline_done=False).exists(), timeout=5)  # the finisher has connected
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND (query LIKE 'DELETE FROM changelog_outbox%%'"
            " OR query LIKE 'UPDATE changelog_outbox SET inline_done%%')"
        )
        assert cursor.fetchall(), "the finisher's connection was not found"
    write()
    wait_until(
        lambda: not rows.filter(inline_done=False).exists(),
        timeout=0.5 + settings.CHANGELOG_WORKER_GRACE_SECONDS / 2,
    )
