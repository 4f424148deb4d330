"""A client that never reads is disconnected once its queue is full (4408), counted,
and the server's memory stays flat however much is published to it.

Events are published straight to Redis here (the publisher the services use, without
the database) so that tens of megabytes can be pushed in seconds."""

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from realtime.publishing import event_publish
from tests import conftest
from tests.live_server import server_process
from tests.realtime_client import RawSocketClient, org_url, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

QUEUE = 64
EVENT_BYTES = 8 * 1024
EVENTS = 4000  # ~32 MiB published to a client that reads none of it
METRICS_TOKEN = conftest.REALTIME_TEST_ENV["METRICS_TOKEN"]


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _metrics(base: str) -> dict:
    response = httpx.get(base + "/v2/realtime/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    return response.json()


@pytest.fixture
def server(django_db_blocker):
    env = conftest.REALTIME_TEST_ENV | {"REALTIME_SOCKET_QUEUE_SIZE": str(QUEUE)}
    with django_db_blocker.unblock(), server_process(conftest.test_database_url(), "asgi", **env) as live:
        yield live


def test_a_client_that_never_reads_is_closed_and_memory_stays_flat(server, tenant):
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])
    before = _metrics(server.url)

    client = RawSocketClient(server.ws_url, f"/v2/realtime/orgs/{org_id}/?token={token}")
    try:
        _, ready = client.next_frame()
        assert b'"ready"' in ready
        rss_start = _rss_bytes(server.process.pid)
        padding = "x" * EVENT_BYTES
        for n in range(EVENTS):
            event_publish(org_id=org_id, event_type="expense.created", data={"n": n, "pad": padding})
        time.sleep(1.0)
        rss_end = _rss_bytes(server.process.pid)
        code, reason, received = client.read_until_close()  # now read: what was buffered, then the close
    finally:
        client.close()
    pushed = EVENTS * EVENT_BYTES
    assert code == 4408 and "Slow consumer" in reason
    assert received < EVENTS / 2  # most events were never queued for it
    assert rss_end - rss_start < 8 * 1024 * 1024, (rss_start, rss_end, pushed)
    after = _metrics(server.url)
    assert after["slow_consumer_disconnects"] == before["slow_consumer_disconnects"] + 1
    deadline = time.monotonic() + 5
    while _metrics(server.url)["connections"] > before["connections"]:  # its slot is free again
        assert time.monotonic() < deadline
        time.sleep(0.1)


async def _receive(client, count: int) -> list[str]:
    return [await asyncio.wait_for(client.recv(), 10) for _ in range(count)]


def test_a_reading_client_keeps_up_with_the_same_burst(server, tenant):
    """The control: the same burst to a client that reads is delivered whole."""
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])
    count = 300

    async def scenario():
        async with connect(org_url(server.ws_url, org_id, token=token), max_size=None) as client:
            assert '"ready"' in await client.recv()
            reader = asyncio.create_task(_receive(client, 2 * count))  # each event, then its sync.poke
            for n in range(count):
                await asyncio.to_thread(
                    event_publish,
                    org_id=org_id,
                    event_type="expense.created",
                    data={"n": n, "pad": "x" * 1024},
                )
            return await reader

    frames = [json.loads(frame) for frame in asyncio.run(scenario())]
    assert [frame["data"]["n"] for frame in frames[0::2]] == list(range(count))
    assert [frame["type"] for frame in frames[1::2]] == ["sync.poke"] * count
