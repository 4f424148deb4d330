"""A request that commits many changes (a sync push) delivers them as one batch.

The contract is the same as for one change at a time (CONTRACT §5, §6, §10): every
socket gets each event once, in version order, each followed by its sync.poke; the
edge is purged before the response; a process that dies between a commit and the
batch's delivery loses nothing (the outbox worker delivers)."""

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from changelog.dispatch import Change, handlers, register_handler
from changelog.models import OutboxEntry
from finance.models import Expense
from sync.mutations import Mutation
from sync.services import MutationResult, sync_push
from tests import conftest
from tests.changelog_support import finished_outbox_rows
from tests.live_server import free_port, outbox_worker, running_server
from tests.realtime_client import assert_silent, next_change, open_socket, token_of
from tests.replica_support import wait_until
from tests.sync_support import create_mutation
from tests.varnish_server import running_varnish

pytestmark = [pytest.mark.django_db(transaction=True)]


def applied_version(result: MutationResult) -> int:
    assert result.version is not None, result
    return result.version


@pytest.fixture
def recorded_batches() -> Iterator[list[list[Change]]]:
    """A test-only inline handler with a batch form that records what it was given (the
    logic under test is the delivery's grouping; the other handlers are the real ones)."""
    saved = handlers()
    calls: list[list[Change]] = []
    register_handler("test_recorder", lambda change: calls.append([change]), order=95, batch=calls.append)
    yield calls
    from changelog import dispatch

    dispatch._handlers = saved


def test_a_push_delivers_its_changes_in_one_batch_in_version_order(settings, tenant, recorded_batches):
    settings.SYNC_PUSH_TRANSACTION_MAX_MS = 0  # one transaction per mutation: still one delivery
    user = tenant.users["manager"]
    mutations = [Mutation(**create_mutation(n, tenant)) for n in range(1, 8)]
    outcome = sync_push(org=tenant.org, user=user, client_id=uuid.uuid4(), mutations=mutations)
    assert [result.status for result in outcome.results] == ["applied"] * 7
    versions = [applied_version(result) for result in outcome.results]
    assert len(recorded_batches) == 1
    assert [change.version for change in recorded_batches[0]] == versions == sorted(versions)
    assert versions == list(range(versions[0], versions[0] + 7))  # each mutation its own version
    # Delivered on the request thread: only the deferred handlers (push) are left to the
    # worker (the rows handed over in the process's next batch).
    assert [row.inline_done for row in finished_outbox_rows(tenant.org.id)] == [True] * 7


def test_a_rejected_mutation_in_a_batch_records_no_change(tenant, recorded_batches):
    user = tenant.users["manager"]
    mutations = [
        Mutation(**create_mutation(1, tenant)),
        Mutation(**create_mutation(2, tenant, amount="-3.00")),  # rejected: undone, id advances
        Mutation(**create_mutation(3, tenant)),
    ]
    outcome = sync_push(org=tenant.org, user=user, client_id=uuid.uuid4(), mutations=mutations)
    assert [result.status for result in outcome.results] == ["applied", "rejected", "applied"]
    assert outcome.last_mutation_id == 3
    delivered = [change for batch in recorded_batches for change in batch]
    first, third = applied_version(outcome.results[0]), applied_version(outcome.results[2])
    assert [change.version for change in delivered] == [first, third]
    assert third == first + 1  # no version for the rejection


@pytest.mark.live
def test_a_pushed_batch_reaches_every_socket_once_in_order_and_the_edge_before_the_response(
    realtime_servers, tenant
):
    varnish_port = free_port()
    cdn = {"CDN_PROVIDER": "varnish", "CDN_VARNISH_URLS": f"http://127.0.0.1:{varnish_port}"}
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["manager"])
    headers = {"Authorization": f"Token {token}"}
    with (
        running_server(conftest.test_database_url(), SYNC_PUSH_TRANSACTION_MAX_MS="5", **cdn) as origin,
        running_varnish(rest_port=int(origin.rsplit(":", 1)[1]), port=varnish_port) as varnish,
    ):
        edge = httpx.Client(base_url=varnish.base_url, headers=headers, timeout=20)
        list_url = tenant.url("/expenses?page_size=100")
        assert edge.get(list_url).json()["results"] == []
        assert edge.get(list_url).headers.get("X-Cache", "").upper().startswith("HIT")
        mutations = [create_mutation(n, tenant, amount=f"{n}.00") for n in range(1, 31)]

        async def scenario() -> tuple[list[list[dict]], httpx.Response, list[str]]:
            sockets = [(await open_socket(s.ws_url, org_id, token))[0] for s in realtime_servers]
            response = await asyncio.to_thread(
                lambda: httpx.post(
                    f"{origin}{tenant.url('/sync/push')}",
                    json={"client_id": str(uuid.uuid4()), "mutations": mutations},
                    headers=headers,
                    timeout=30,
                )
            )
            # Right after the response, through the edge: every pushed entry is there.
            listed = [e["id"] for e in edge.get(list_url).json()["results"]]
            events = [[await next_change(s, timeout=10) for _ in mutations] for s in sockets]
            for s in sockets:
                await assert_silent(s, within=0.5)  # once each
                await s.close()
            return events, response, listed

        events, response, listed = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    versions = [r["version"] for r in results]
    assert [r["status"] for r in results] == ["applied"] * len(mutations)
    assert versions == list(range(versions[0], versions[0] + len(mutations)))
    assert sorted(listed) == sorted(m["args"]["id"] for m in mutations)
    for received in events:
        assert [e["version"] for e in received] == versions
        assert [e["data"]["id"] for e in received] == [m["args"]["id"] for m in mutations]


@pytest.mark.live
def test_a_push_killed_after_its_first_commit_loses_no_event_and_the_retry_applies_the_rest_once(
    realtime_servers, tenant
):
    """The server SIGKILLs itself right after the push's first commit, before the batch
    is delivered (test-only hook): the worker delivers what committed within 5 s; the
    client's retry gets already_applied for those and applies the rest, each once."""
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["manager"])
    headers = {"Authorization": f"Token {token}"}
    database_url = conftest.test_database_url()
    client_id = str(uuid.uuid4())
    mutations = [create_mutation(n, tenant, amount=f"{n}.00") for n in range(1, 11)]
    body = {"client_id": client_id, "mutations": mutations}
    with (
        running_server(database_url) as healthy,
        running_server(database_url, CHANGELOG_CRASH_AFTER_COMMIT="true") as crashing,
        outbox_worker(database_url),
    ):

        async def scenario() -> tuple[list[list[dict]], float, int, httpx.Response]:
            sockets = [(await open_socket(s.ws_url, org_id, token))[0] for s in realtime_servers]
            with pytest.raises(httpx.TransportError):  # died before answering
                await asyncio.to_thread(
                    lambda: httpx.post(f"{crashing}{tenant.url('/sync/push')}", json=body, headers=headers)
                )
            killed_at = time.monotonic()
            committed = await asyncio.to_thread(lambda: Expense.objects.filter(org=tenant.org).count())
            first = [[await next_change(s, timeout=5) for _ in range(committed)] for s in sockets]
            elapsed = time.monotonic() - killed_at
            retry = await asyncio.to_thread(
                lambda: httpx.post(
                    f"{healthy}{tenant.url('/sync/push')}", json=body, headers=headers, timeout=30
                )
            )
            rest = [
                [await next_change(s, timeout=10) for _ in range(len(mutations) - committed)] for s in sockets
            ]
            for s in sockets:
                await assert_silent(s, within=0.5)
                await s.close()
            return [a + b for a, b in zip(first, rest, strict=True)], elapsed, committed, retry

        events, elapsed, committed, retry = asyncio.run(scenario())
        # The worker finishes what the crash left (push fan-out included): nothing stays.
        wait_until(lambda: not OutboxEntry.objects.filter(org_id=tenant.org.id).exists(), timeout=10)
    assert 1 <= committed <= len(mutations)
    assert elapsed < 5
    assert retry.status_code == 200, retry.text
    statuses = [r["status"] for r in retry.json()["results"]]
    assert statuses == ["already_applied"] * committed + ["applied"] * (len(mutations) - committed)
    rows = {str(e.id): e.version for e in Expense.objects.filter(org=tenant.org)}
    assert sorted(rows) == sorted(m["args"]["id"] for m in mutations)  # each once
    for received in events:
        assert [e["data"]["id"] for e in received] == [m["args"]["id"] for m in mutations]
        assert [e["version"] for e in received] == sorted(rows.values())
