"""CONTRACT §5 resume: `?last_event_id=` replays what was missed, in order, then live
events, with no gap and no duplicate at the seam; an id older than the stream keeps
gets `resync_required` (refetch by REST)."""

import asyncio
import threading
from typing import Any

import httpx
import pytest

from core.redis_clients import sync_redis
from realtime import keys
from realtime.event_ids import event_id_key
from realtime.publishing import event_publish
from tests.realtime_client import assert_silent, next_change, open_socket, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _poster(base: str, tenant, token: str):
    client = httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=10)

    def post(**overrides) -> dict:
        response = client.post(tenant.url("/expenses"), json=tenant.entry_payload(**overrides))
        assert response.status_code == 201
        return response.json()

    return post


def test_a_reconnecting_client_gets_the_5_missed_events_in_order_then_live_ones(
    realtime_servers, live_wsgi, tenant
):
    token = token_of(tenant.users["owner"])
    post = _poster(live_wsgi, tenant, token)
    first, second = realtime_servers

    async def scenario():
        socket, _ = await open_socket(first.ws_url, tenant.org.id, token)
        seen = await asyncio.to_thread(post, category="seen")
        last_event_id = (await next_change(socket))["event_id"]
        await socket.close()
        missed = [await asyncio.to_thread(post, category=f"missed-{n}") for n in range(5)]
        socket, ready = await open_socket(second.ws_url, tenant.org.id, token, last_event_id=last_event_id)
        live = await asyncio.to_thread(post, category="live")
        live_event = await next_change(socket)
        await assert_silent(socket, within=0.3)
        await socket.close()
        return seen, missed, ready, live, live_event

    seen, missed, ready, live, live_event = asyncio.run(scenario())
    replayed = ready["before_ready"]
    assert [event["data"] for event in replayed] == missed  # exactly the 5, in order
    assert all(event["type"] == "expense.created" for event in replayed)
    assert seen not in [event["data"] for event in replayed]
    assert ready["last_event_id"] == replayed[-1]["event_id"]
    assert live_event["data"] == live


def test_no_gap_and_no_duplicate_at_the_seam_while_writes_continue(realtime_servers, live_wsgi, tenant):
    """Writes keep coming while the client reconnects: each arrives exactly once."""
    token = token_of(tenant.users["owner"])
    post = _poster(live_wsgi, tenant, token)
    written: list[str] = []
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set() and len(written) < 60:
            written.append(post(category=f"w{len(written)}")["id"])
            stop.wait(0.02)  # spread the writes over the reconnects

    async def scenario():
        socket, ready = await open_socket(realtime_servers[0].ws_url, tenant.org.id, token)
        await socket.close()
        writer = threading.Thread(target=keep_writing)
        writer.start()
        received: list[dict[str, Any]] = []
        try:
            for attempt in range(4):  # reconnect repeatedly while the writes go on
                await asyncio.sleep(0.15)
                last = received[-1]["event_id"] if received else ready["last_event_id"]
                ws = realtime_servers[attempt % 2].ws_url
                socket, resumed = await open_socket(ws, tenant.org.id, token, last_event_id=last)
                received += resumed["before_ready"]
                for _ in range(3):  # a few live ones, if the writer is still going
                    try:
                        received.append(await next_change(socket, timeout=1.0))
                    except TimeoutError:
                        break
                await socket.close()
        finally:
            stop.set()
            await asyncio.to_thread(writer.join)
        last = received[-1]["event_id"]
        socket, resumed = await open_socket(
            realtime_servers[1].ws_url, tenant.org.id, token, last_event_id=last
        )
        received += resumed["before_ready"]
        await socket.close()
        return received

    received = asyncio.run(scenario())
    ids = [event["data"]["id"] for event in received]
    assert len(written) > 12
    assert ids == written  # every write once, in commit order: no gap, no duplicate
    keys_ = [tuple(map(int, event["event_id"].split("-"))) for event in received]
    assert keys_ == sorted(set(keys_))


def test_an_id_older_than_the_stream_keeps_gets_resync_required(realtime_servers, tenant, settings):
    """Events are published straight to Redis here (no database) to overflow a short stream."""
    settings.REALTIME_STREAM_MAXLEN = 10
    token = token_of(tenant.users["owner"])
    org_id = str(tenant.org.id)
    ids = [event_publish(org_id=org_id, event_type="expense.created", data={"n": n}) for n in range(300)]
    assert sync_redis().xlen(keys.org_stream_key(org_id)) < 300  # the oldest were trimmed

    async def scenario():
        socket, ready = await open_socket(realtime_servers[0].ws_url, org_id, token, last_event_id=ids[0])
        newest = await asyncio.to_thread(
            event_publish, org_id=org_id, event_type="expense.created", data={"n": "live"}
        )
        live = await next_change(socket)
        await socket.close()
        return ready, newest, live

    ready, newest, live = asyncio.run(scenario())
    assert [message["type"] for message in ready["before_ready"]] == ["resync_required"]
    assert "refetch by REST" in ready["before_ready"][0]["detail"]
    assert ready["last_event_id"] == ids[-1]  # the live feed continues after the newest
    assert (live["event_id"], live["data"]) == (newest, {"n": "live"})


def test_a_recent_id_whose_events_are_kept_needs_no_resync(realtime_servers, tenant, settings):
    settings.REALTIME_STREAM_MAXLEN = 10
    org_id = str(tenant.org.id)
    ids = [event_publish(org_id=org_id, event_type="revenue.created", data={"n": n}) for n in range(300)]
    token = token_of(tenant.users["owner"])

    async def scenario():
        socket, ready = await open_socket(realtime_servers[1].ws_url, org_id, token, last_event_id=ids[-4])
        await socket.close()
        return ready

    ready = asyncio.run(scenario())
    assert [event["data"]["n"] for event in ready["before_ready"]] == [297, 298, 299]


def _ready_after(ws: str, org_id: str, token: str, last_event_id: str) -> dict:
    async def scenario():
        socket, ready = await open_socket(ws, org_id, token, last_event_id=last_event_id)
        await socket.close()
        return ready

    return asyncio.run(scenario())


def test_an_id_older_than_an_expired_stream_gets_resync_required(realtime_servers, tenant):
    org_id = str(tenant.org.id)
    seconds, _ = sync_redis().time()
    two_days_ago = f"{(seconds - 2 * 86400) * 1000}-0"  # older than REALTIME_STREAM_TTL_SECONDS
    ready = _ready_after(realtime_servers[0].ws_url, org_id, token_of(tenant.users["owner"]), two_days_ago)
    assert [message["type"] for message in ready["before_ready"]] == ["resync_required"]
    assert event_id_key(ready["last_event_id"]) > event_id_key(two_days_ago)


def test_a_quiet_org_with_no_stream_needs_no_resync(realtime_servers, tenant):
    """No event since the client's id: the stream expired (or never existed), nothing missed."""
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])

    async def scenario():
        socket, ready = await open_socket(realtime_servers[0].ws_url, org_id, token)
        await socket.close()
        socket, resumed = await open_socket(
            realtime_servers[1].ws_url, org_id, token, last_event_id=ready["last_event_id"]
        )
        event_id = await asyncio.to_thread(
            event_publish, org_id=org_id, event_type="expense.created", data={}
        )
        live = await next_change(socket)
        await socket.close()
        return ready, resumed, event_id, live

    ready, resumed, event_id, live = asyncio.run(scenario())
    assert resumed["before_ready"] == [] and resumed["last_event_id"] == ready["last_event_id"]
    assert live["event_id"] == event_id  # the first event of a new stream is not skipped


def test_resuming_from_an_empty_streams_position_replays_everything_since(realtime_servers, tenant):
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])

    async def scenario():
        socket, ready = await open_socket(realtime_servers[0].ws_url, org_id, token)
        await socket.close()
        return ready["last_event_id"]

    position = asyncio.run(scenario())
    ids = [event_publish(org_id=org_id, event_type="expense.created", data={"n": n}) for n in range(3)]
    ready = _ready_after(realtime_servers[1].ws_url, org_id, token, position)
    assert [event["event_id"] for event in ready["before_ready"]] == ids
