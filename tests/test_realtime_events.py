"""CONTRACT §5 events, end to end: REST writes on gunicorn, sockets on two uvicorn
processes, real Redis. Every committed change reaches every member socket of the org,
in commit order and in the contract's shape; nothing reaches another org; a rollback
publishes nothing; Redis down at commit never fails the write (tests/test_changelog_delivery.py)."""

import asyncio
import re
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
from django.db import connection, transaction

from core.redis_clients import sync_redis
from finance.models import Expense
from finance.services import entry_create
from tests.realtime_client import assert_silent, next_change, open_socket, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

EVENT_ID = re.compile(r"^\d+-\d+$")


def _rest(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=10)


def _assert_shape(event: dict, *, event_type: str, org_id: str, data: dict) -> None:
    assert set(event) == {"type", "event_id", "org_id", "version", "ts", "data"}
    assert event["version"] == data["version"]  # the change's number, stamped on the resource
    assert event["type"] == event_type
    assert EVENT_ID.match(event["event_id"])
    assert event["org_id"] == org_id
    assert datetime.fromisoformat(event["ts"]).utcoffset() is not None
    assert event["data"] == data  # the resource exactly as the REST API renders it


def test_every_committed_change_reaches_every_member_socket_in_commit_order(
    realtime_servers, live_wsgi, tenant, other_tenant
):
    first, second = realtime_servers
    org_id = str(tenant.org.id)
    owner, viewer = token_of(tenant.users["owner"]), token_of(tenant.users["viewer"])
    manager, outsider = token_of(tenant.users["manager"]), token_of(other_tenant.users["owner"])
    rest = _rest(live_wsgi, manager)

    def write_changes() -> list[tuple[str, dict]]:
        created = rest.post(tenant.url("/expenses"), json=tenant.entry_payload()).json()
        updated = rest.patch(tenant.url(f"/expenses/{created['id']}"), json={"amount": "99.10"}).json()
        revenue = rest.post(tenant.url("/revenues"), json=tenant.entry_payload(amount="300.00")).json()
        assert rest.delete(tenant.url(f"/expenses/{created['id']}")).status_code == 204
        return [
            ("expense.created", created),
            ("expense.updated", updated),
            ("revenue.created", revenue),
            # A deletion is the entry's last change: its data carries the deletion's version.
            ("expense.deleted", {**updated, "version": revenue["version"] + 1}),
        ]

    async def scenario():
        sockets = [
            (await open_socket(first.ws_url, org_id, owner))[0],
            (await open_socket(second.ws_url, org_id, owner, via="query"))[0],
            (await open_socket(second.ws_url, org_id, viewer))[0],
        ]
        foreign, _ = await open_socket(first.ws_url, other_tenant.org.id, outsider)
        expected = await asyncio.to_thread(write_changes)
        received = [[await next_change(socket) for _ in expected] for socket in sockets]
        await assert_silent(foreign)
        for socket in sockets:
            await assert_silent(socket, within=0.2)  # nothing more, nothing twice
            await socket.close()
        await foreign.close()
        return expected, received

    expected, received = asyncio.run(scenario())
    for events in received:
        for event, (event_type, data) in zip(events, expected, strict=True):
            _assert_shape(event, event_type=event_type, org_id=org_id, data=data)
        ids = [tuple(map(int, event["event_id"].split("-"))) for event in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert received[0] == received[1] == received[2]  # the same events for every socket


def test_a_rolled_back_transaction_publishes_nothing(realtime_servers, live_wsgi, tenant):
    org_id = str(tenant.org.id)
    stream = f"rt:events:{{{org_id}}}"
    token = token_of(tenant.users["owner"])

    async def scenario():
        socket, _ = await open_socket(realtime_servers[0].ws_url, org_id, token)

        def rolled_back_write() -> None:
            try:
                with pytest.raises(RuntimeError), transaction.atomic():
                    entry_create(
                        model=Expense, org=tenant.org, created_by=tenant.users["owner"], property_id=tenant.property.id,
                        amount=Decimal("5.00"), currency="EUR", category="x", occurred_on="2026-11-02",
                    )  # fmt: skip
                    raise RuntimeError("roll back")
            finally:
                connection.close()  # this thread's own connection

        await asyncio.to_thread(rolled_back_write)
        await assert_silent(socket, within=0.5)
        marker = await asyncio.to_thread(
            lambda: (
                _rest(live_wsgi, token)
                .post(tenant.url("/expenses"), json=tenant.entry_payload(category="marker"))
                .json()
            )
        )
        event = await next_change(socket)
        await socket.close()
        return marker, event

    marker, event = asyncio.run(scenario())
    assert event["data"]["id"] == marker["id"]  # the first event is the committed write's
    assert sync_redis().xlen(stream) == 1
    assert not Expense.objects.filter(org=tenant.org, category="x").exists()


def test_an_idempotent_replay_publishes_no_second_event(realtime_servers, live_wsgi, tenant):
    """A retried POST with the same Idempotency-Key replays the stored response: the
    service never runs again, so the org's sockets get exactly one event."""
    first, _ = realtime_servers
    org_id = str(tenant.org.id)
    rest = _rest(live_wsgi, token_of(tenant.users["manager"]))
    headers = {"Idempotency-Key": "replay-publishes-nothing-1"}
    viewer = token_of(tenant.users["viewer"])

    async def scenario():
        socket, _ = await open_socket(first.ws_url, org_id, viewer)

        def post_twice() -> list[httpx.Response]:
            payload = tenant.entry_payload()
            return [rest.post(tenant.url("/expenses"), json=payload, headers=headers) for _ in range(2)]

        responses = await asyncio.to_thread(post_twice)
        event = await next_change(socket)
        await assert_silent(socket, within=1.0)
        await socket.close()
        return responses, event

    (original, replay), event = asyncio.run(scenario())
    assert original.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == original.content
    assert event["type"] == "expense.created" and event["data"] == original.json()
    assert Expense.objects.filter(org=tenant.org).count() == 1
