"""The org change log (CONTRACT §2 `version`, §5 order and exactly-once, §6 purge after
a crash): versions taken in each write's transaction, in commit order, gap-free; the
outbox behind them; delivery that survives a killed process and a Redis that refuses
writes. Real Postgres, Redis, gunicorn, uvicorn, Varnish and worker processes."""

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, cast

import httpx
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from changelog.dispatch import Change, handlers, register_handler
from changelog.models import OrgChangeCounter, OutboxEntry, Tombstone
from changelog.services import org_version_take
from changelog.worker import drain_once
from core.redis_clients import sync_redis
from finance.models import Expense, Revenue
from finance.services import entry_create
from tenancy.models import Property
from tests import conftest
from tests.live_server import free_port, outbox_worker, running_server
from tests.realtime_client import assert_silent, next_change, open_socket, token_of
from tests.replica_support import wait_until
from tests.varnish_server import running_varnish

pytestmark = [pytest.mark.django_db(transaction=True)]


def _rest(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=20)


def _counter(org_id: Any) -> int:
    """The org's version (fixtures make orgs without a counter row: version 0)."""
    counter = OrgChangeCounter.objects.filter(org_id=org_id).first()
    return 0 if counter is None else counter.version


def _stamped_versions(org_id: Any) -> list[int]:
    """Every version the org's rows and tombstones carry, sorted."""
    versions = [
        *Expense.objects.filter(org_id=org_id).values_list("version", flat=True),
        *Revenue.objects.filter(org_id=org_id).values_list("version", flat=True),
        *Property.objects.filter(org_id=org_id, version__gt=0).values_list("version", flat=True),
        *Tombstone.objects.filter(org_id=org_id).values_list("version", flat=True),
    ]
    return sorted(versions)


def test_each_write_takes_the_next_version_stamps_it_and_leaves_a_tombstone_on_delete(tenant):
    start = _counter(tenant.org.id)
    created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").json()
    assert created["version"] == start + 1
    patched = tenant.manager.patch(
        tenant.url(f"/expenses/{created['id']}"), {"amount": "3.00"}, format="json"
    )
    assert patched.json()["version"] == start + 2
    assert tenant.manager.delete(tenant.url(f"/expenses/{created['id']}")).status_code == 204
    tombstone = Tombstone.objects.get(org_id=tenant.org.id, entity_id=created["id"])
    assert (tombstone.entity, tombstone.version) == ("expense", start + 3)
    prop = tenant.owner.post(
        tenant.url("/properties"), {"name": "Annex", "currency": "EUR", "timezone": "UTC"}, format="json"
    ).json()
    assert prop["version"] == start + 4
    assert _counter(tenant.org.id) == start + 4
    # The inline handlers ran on the request thread; what is left is only for the
    # deferred ones (push fan-out), which run in the outbox worker: handed to it in the
    # process's next batch (changelog.finishing), well within the worker's grace period.
    left = OutboxEntry.objects.filter(org_id=tenant.org.id)
    assert [h.name for h in handlers(inline=False)] == ["push_fanout"]
    wait_until(
        lambda: all(row.inline_done for row in left.all()),
        timeout=5,  # a loaded machine may delay the finisher thread
    )
    assert left.count() == 4


def test_a_rollback_takes_no_version_and_leaves_no_outbox_row_and_no_event(tenant):
    start = _counter(tenant.org.id)
    published_before = sync_redis().get(f"rt:version:{{{tenant.org.id}}}")
    with pytest.raises(RuntimeError), transaction.atomic():
        entry_create(
            model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
            amount=Decimal("5.00"), currency="EUR", category="rolled-back", occurred_on="2026-11-02",
        )  # fmt: skip
        assert OutboxEntry.objects.filter(org_id=tenant.org.id).count() == 1  # inside: it exists
        raise RuntimeError("roll back")
    assert _counter(tenant.org.id) == start
    assert not OutboxEntry.objects.filter(org_id=tenant.org.id).exists()
    assert not Expense.objects.filter(org=tenant.org, category="rolled-back").exists()
    assert sync_redis().get(f"rt:version:{{{tenant.org.id}}}") == published_before


def test_an_idempotent_replay_takes_no_version(tenant):
    headers = {"HTTP_IDEMPOTENCY_KEY": "changelog-replay-1"}
    payload = tenant.entry_payload()
    first = tenant.manager.post(tenant.url("/expenses"), payload, format="json", **headers)
    after_first = _counter(tenant.org.id)
    replay = tenant.manager.post(tenant.url("/expenses"), payload, format="json", **headers)
    assert replay.status_code == first.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert _counter(tenant.org.id) == after_first
    # only the first write's row, waiting for the deferred handler (push fan-out)
    assert OutboxEntry.objects.filter(org_id=tenant.org.id).count() == 1


def test_org_version_take_outside_a_transaction_is_refused(tenant):
    with pytest.raises(RuntimeError, match="inside the write's transaction"):
        org_version_take(org_id=tenant.org.id)


def test_a_late_committer_is_never_skipped_by_a_reader_of_the_log(tenant):
    """Transaction A takes its version and is held open; B's write must wait for it,
    so no reader ever sees B's version committed while A's is still missing."""
    org = tenant.org
    start = _counter(org.id)
    a_has_version = threading.Event()
    release_a = threading.Event()
    b_done = threading.Event()
    seen: list[list[int]] = []

    def transaction_a() -> None:
        try:
            with transaction.atomic():
                version = org_version_take(org_id=org.id)
                Expense.objects.create(
                    org=org, property=tenant.property, amount=Decimal("1.00"), currency="EUR", category="late",
                    occurred_on="2026-11-01", created_by=tenant.users["owner"], version=version,
                )  # fmt: skip
                a_has_version.set()
                release_a.wait(10)
        finally:
            connection.close()

    def transaction_b() -> None:
        try:
            entry_create(
                model=Expense, org=org, created_by=tenant.users["owner"], property_id=tenant.property.id,
                amount=Decimal("2.00"), currency="EUR", category="early", occurred_on="2026-11-01",
            )  # fmt: skip
            b_done.set()
        finally:
            connection.close()

    thread_a = threading.Thread(target=transaction_a)
    thread_a.start()
    assert a_has_version.wait(10)
    thread_b = threading.Thread(target=transaction_b)
    thread_b.start()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a reader polling the log while A is open
        seen.append([v for v in _stamped_versions(org.id) if v > start])
        time.sleep(0.05)
    assert not b_done.is_set(), "B committed while A held the org's version"
    release_a.set()
    thread_a.join(10)
    thread_b.join(10)
    seen.append([v for v in _stamped_versions(org.id) if v > start])
    for snapshot in seen:  # every snapshot is a gap-free prefix
        assert snapshot == list(range(start + 1, start + 1 + len(snapshot)))
    assert seen[-1] == [start + 1, start + 2]
    assert Expense.objects.get(org=org, category="late").version == start + 1
    assert Expense.objects.get(org=org, category="early").version == start + 2


@pytest.mark.live
def test_concurrent_writers_get_unique_gap_free_versions_and_sockets_see_version_order(
    realtime_servers, live_wsgi, tenant
):
    """6 threads, 200 writes on one org mixing expenses, revenues and properties."""
    org_id = str(tenant.org.id)
    start = _counter(tenant.org.id)
    token = token_of(tenant.users["owner"])

    def writer(n: int) -> list[int]:
        versions = []
        with _rest(live_wsgi, token) as rest:
            for i in range(n):
                kind = ("expenses", "revenues", "properties")[i % 3]
                if kind == "properties":
                    body = {"name": f"P{i}", "currency": "EUR", "timezone": "UTC"}
                else:
                    body = tenant.entry_payload(amount=f"{i + 1}.00")
                response = rest.post(tenant.url(f"/{kind}"), json=body)
                assert response.status_code == 201, response.text
                versions.append(response.json()["version"])
        return versions

    async def scenario() -> tuple[list[int], list[dict]]:
        socket, _ = await open_socket(realtime_servers[0].ws_url, org_id, token)
        counts = [34, 34, 33, 33, 33, 33]
        with ThreadPoolExecutor(6) as pool:
            results = await asyncio.gather(*(asyncio.wrap_future(pool.submit(writer, n)) for n in counts))
        events = [await next_change(socket, timeout=20) for _ in range(200)]
        await assert_silent(socket, within=0.5)
        await socket.close()
        return [v for r in results for v in r], events

    versions, events = asyncio.run(scenario())
    assert sorted(versions) == list(range(start + 1, start + 201))  # unique and gap-free
    assert [event["version"] for event in events] == list(range(start + 1, start + 201))
    assert [event["data"]["version"] for event in events] == [event["version"] for event in events]
    assert _stamped_versions(tenant.org.id)[-200:] == list(range(start + 1, start + 201))


# --- delivery that survives failures --------------------------------------------------


@pytest.fixture
def failing_handler() -> Iterator[list[Change]]:
    """A deferred handler that fails while `calls` holds fewer than 2 changes (our own
    logic under test: backoff and dead letters; the other handlers are real)."""
    calls: list[Change] = []
    saved = handlers()

    def flaky(change: Change) -> None:
        calls.append(change)
        if len(calls) < 3:
            raise ConnectionError("push service unreachable")

    register_handler("test_flaky", flaky, inline=False, order=90)
    yield calls
    import changelog.dispatch

    changelog.dispatch._handlers = saved


def test_the_worker_retries_a_failing_handler_with_backoff_then_delivers(settings, tenant, failing_handler):
    settings.CHANGELOG_RETRY_MAX_SECONDS = 0.2
    created = tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json")
    assert created.status_code == 201  # deferred handlers never touch the response
    # the request thread ran the inline ones (the row is handed to the worker in the
    # process's next batch, changelog.finishing)
    wait_until(lambda: OutboxEntry.objects.get(org_id=tenant.org.id).inline_done, timeout=5)
    delivered = 0
    deadline = time.monotonic() + 10
    while delivered == 0 and time.monotonic() < deadline:
        delivered = drain_once().delivered
        time.sleep(0.05)
    assert delivered == 1
    assert len(failing_handler) == 3  # two failures, then success
    assert [c.version for c in failing_handler] == [created.json()["version"]] * 3
    assert not OutboxEntry.objects.filter(org_id=tenant.org.id).exists()


def test_a_change_that_keeps_failing_is_dead_lettered_and_reported(settings, tenant, failing_handler, capsys):
    settings.CHANGELOG_MAX_ATTEMPTS = 2
    settings.CHANGELOG_RETRY_MAX_SECONDS = 0.01
    assert (
        tenant.manager.post(tenant.url("/expenses"), tenant.entry_payload(), format="json").status_code == 201
    )

    def dead() -> bool:
        drain_once()
        return OutboxEntry.objects.filter(org_id=tenant.org.id, state="dead").exists()

    wait_until(dead, timeout=10)
    row = OutboxEntry.objects.get(org_id=tenant.org.id)
    assert row.attempts == 2 and "push service unreachable" in row.last_error
    with pytest.raises(SystemExit) as exit_status:
        call_command("outbox_status")
    assert exit_status.value.code == 1
    assert "dead 1" in capsys.readouterr().out
    call_command("outbox_status", "--requeue-dead")  # pending again, nothing dead: exit 0
    wait_until(lambda: drain_once().delivered == 1, timeout=10)
    call_command("outbox_status")  # exits 0: nothing dead, nothing old


def test_redis_down_at_commit_the_write_succeeds_and_the_worker_publishes_later(settings, tenant):
    """Redis is a real closed port at commit: the write succeeds, its change waits in the
    outbox with the realtime failure; with Redis back, the worker publishes it."""
    good_url, good_nodes = settings.REDIS_URL, settings.REDIS_CLUSTER_NODES
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # clients and breakers are per URL
    settings.REDIS_CLUSTER_NODES = []  # this one node, not the cluster
    try:
        entry = entry_create(
            model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
            amount=Decimal("7.00"), currency="EUR", category="redis-down", occurred_on="2026-11-02",
        )  # fmt: skip
    finally:
        settings.REDIS_URL, settings.REDIS_CLUSTER_NODES = good_url, good_nodes
    row = OutboxEntry.objects.get(org_id=tenant.org.id)
    assert row.version == entry.version and "realtime_event" in row.last_error and row.attempts == 1
    OutboxEntry.objects.filter(id=row.id).update(available_at=row.created_at)  # skip the backoff
    assert drain_once().delivered == 1
    # decode_responses: ids and fields are str (redis-py's types cannot say so)
    stream = cast(list[tuple[str, dict[str, str]]], sync_redis().xrange(f"rt:events:{{{tenant.org.id}}}"))
    published = [json.loads(fields["b"]) for _, fields in stream]
    assert [(e["version"], e["data"]["id"]) for e in published] == [(entry.version, str(entry.id))]


@pytest.mark.live
def test_redis_refusing_writes_during_a_change_then_a_resuming_socket_gets_it(
    realtime_servers, live_wsgi, tenant
):
    """ACL takes writes and scripts away from Redis for 3 s during a REST write: the
    write succeeds; once Redis accepts writes, a socket resuming with last_event_id gets
    the event within 5 s (the outbox worker republishes it)."""
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])
    redis = sync_redis()
    with outbox_worker(conftest.test_database_url()):

        async def scenario() -> tuple[dict, float, dict]:
            socket, ready = await open_socket(realtime_servers[0].ws_url, org_id, token)
            await socket.close()
            redis.execute_command("ACL", "SETUSER", "default", "-@write", "-@scripting")
            try:
                response = await asyncio.to_thread(
                    lambda: _rest(live_wsgi, token).post(tenant.url("/expenses"), json=tenant.entry_payload())
                )
                assert response.status_code == 201
                await asyncio.sleep(3)
            finally:
                redis.execute_command("ACL", "SETUSER", "default", "+@all")
            restored = time.monotonic()
            while True:
                resumed, _ = await open_socket(
                    realtime_servers[0].ws_url, org_id, token, last_event_id=ready["last_event_id"]
                )
                replayed = _  # replayed events arrive before `ready`
                if replayed["before_ready"]:
                    break
                await resumed.close()
                assert time.monotonic() - restored < 5, "the event was not published within 5 s"
                await asyncio.sleep(0.2)
            await resumed.close()
            return response.json(), time.monotonic() - restored, replayed

        created, elapsed, replayed = asyncio.run(scenario())
    events = [m for m in replayed["before_ready"] if m.get("type") == "expense.created"]
    assert [e["data"] for e in events] == [created]  # once, with the committed resource
    assert elapsed < 5


@pytest.mark.live
def test_a_process_killed_right_after_commit_loses_neither_purge_nor_event(realtime_servers, tenant):
    """gunicorn SIGKILLs itself between commit and handlers (test-only hook): within 5 s
    the worker purges the edge (no stale list served) and every socket gets the event once."""
    varnish_port = free_port()
    cdn = {"CDN_PROVIDER": "varnish", "CDN_VARNISH_URLS": f"http://127.0.0.1:{varnish_port}"}
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])
    headers = {"Authorization": f"Token {token}"}
    database_url = conftest.test_database_url()
    with (
        running_server(database_url, **cdn) as origin,
        running_server(database_url, CHANGELOG_CRASH_AFTER_COMMIT="true", **cdn) as crashing,
        running_varnish(rest_port=int(origin.rsplit(":", 1)[1]), port=varnish_port) as varnish,
        outbox_worker(database_url, **cdn),
    ):
        edge = httpx.Client(base_url=varnish.base_url, headers=headers, timeout=10)
        list_url = tenant.url("/expenses")
        assert edge.get(list_url).json()["results"] == []
        assert edge.get(list_url).headers.get("X-Cache", "").upper().startswith("HIT")

        async def scenario() -> tuple[list[dict], float]:
            sockets = [(await open_socket(s.ws_url, org_id, token))[0] for s in realtime_servers]
            with pytest.raises(httpx.TransportError):  # the server died before answering
                await asyncio.to_thread(
                    lambda: httpx.post(f"{crashing}{list_url}", json=tenant.entry_payload(), headers=headers)
                )
            killed_at = time.monotonic()
            events = [await next_change(s, timeout=5) for s in sockets]
            for s in sockets:
                await assert_silent(s, within=0.5)  # once
                await s.close()
            return events, killed_at

        events, killed_at = asyncio.run(scenario())
        row = Expense.objects.get(org=tenant.org)  # committed before the crash
        assert [e["data"]["id"] for e in events] == [str(row.id)] * len(realtime_servers)
        assert all(e["version"] == row.version for e in events)

        def edge_fresh() -> bool:
            return [e["id"] for e in edge.get(list_url).json()["results"]] == [str(row.id)]

        wait_until(edge_fresh, timeout=max(0.1, 5 - (time.monotonic() - killed_at)))
        assert not OutboxEntry.objects.filter(org_id=tenant.org.id).exists()
