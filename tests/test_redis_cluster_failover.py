"""The project on a real Redis Cluster of its own (three masters, three replicas):
sharded Pub/Sub (one subscriber connection per shard per server process), leases that
count only once a replica has them, and a master SIGKILLed while writes, socket
connects and events flow (docs/redis.md "Failover")."""

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from directory.cache import CHANNEL as DIRECTORY_CHANNEL
from finance.models import Expense
from realtime import keys
from tests import conftest
from tests.realtime_client import next_event, open_socket, refusal, token_of
from tests.redis_server import DedicatedCluster, dedicated_cluster
from tests.replica_support import wait_until

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CAP_PER_ORG = 8
ENV = conftest.REALTIME_TEST_ENV | {
    "MAX_CONNECTIONS_PER_ORG": str(CAP_PER_ORG),
    "REALTIME_LEASE_SECONDS": "10",  # leases outlive the failover (about 2-3 s)
    "REALTIME_HEARTBEAT_SECONDS": "1",
}


class ClusterStack:
    def __init__(self, cluster: DedicatedCluster, realtime: list[Any], rest: str) -> None:
        self.cluster = cluster
        self.realtime = realtime
        self.rest = rest


@pytest.fixture(scope="module")
def cluster_stack(django_db_setup: None, django_db_blocker: Any) -> Any:
    from contextlib import ExitStack

    from tests.live_server import running_server, running_servers

    with django_db_blocker.unblock(), dedicated_cluster() as cluster, ExitStack() as stack:
        env = ENV | {"REDIS_CLUSTER_NODES": cluster.seeds}
        database = conftest.test_database_url()
        realtime = stack.enter_context(running_servers(database, 2, **env))
        rest = stack.enter_context(running_server(database, REDIS_CLUSTER_NODES=cluster.seeds))
        yield ClusterStack(cluster, realtime, rest)


@pytest.fixture(autouse=True)
def cluster_outbox_worker(cluster_stack: Any, django_db_blocker: Any) -> Any:
    """The outbox worker, per test: it must be stopped before the test database is
    flushed (its deliveries read several tables in one transaction, which can deadlock
    with the flush's TRUNCATE)."""
    from tests.live_server import outbox_worker

    with (
        django_db_blocker.unblock(),
        outbox_worker(conftest.test_database_url(), REDIS_CLUSTER_NODES=cluster_stack.cluster.seeds),
    ):
        yield


def _tenant_on(cluster: DedicatedCluster, master: int, make_tenant: Any, *, on: bool = True) -> Any:
    """A new org whose shard is (or, on=False, is not) `master`."""
    for _ in range(40):
        tenant = make_tenant()
        if (cluster.master_of(keys.org_channel(str(tenant.org.id))) == master) == on:
            return tenant
    raise AssertionError("no org hashed to the wanted shard in 40 tries")


def _post(base: str, tenant: Any, token: str, key: str, category: str) -> tuple[int, str, str]:
    response = httpx.post(
        f"{base}{tenant.url('/expenses')}",
        json=tenant.entry_payload(category=category),
        headers={"Authorization": f"Token {token}", "Idempotency-Key": key},
        timeout=15,
    )
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    return response.status_code, str(body.get("id", "")), response.headers.get("Idempotent-Replayed", "")


def test_live_events_use_one_sharded_subscription_per_shard_and_process(cluster_stack, make_tenant):
    cluster = cluster_stack.cluster
    masters = sorted({cluster.master_of(f"{{probe-{n}}}") for n in range(64)})
    assert len(masters) == 3
    tenants = [_tenant_on(cluster, master, make_tenant) for master in masters for _ in range(2)]
    first, second = cluster_stack.realtime

    tokens = {t.org.id: token_of(t.users["owner"]) for t in tenants}
    viewer_token = token_of(tenants[0].users["viewer"])

    Subscriptions = dict[int, tuple[set[str], list[str], int]]

    async def scenario() -> tuple[Subscriptions, list[dict[str, Any]]]:
        sockets = [(await open_socket(first.ws_url, t.org.id, tokens[t.org.id]))[0] for t in tenants]
        extra, _ = await open_socket(second.ws_url, tenants[0].org.id, viewer_token)
        try:
            subscriptions: Subscriptions = {}
            for master in masters:
                node = cluster.node(master)
                subscriptions[master] = (
                    set(node.execute_command("PUBSUB", "SHARDCHANNELS")),
                    # the org directory's invalidations are plain Pub/Sub by design (rare,
                    # every process must hear them: docs/clusters.md); live events never are
                    [c for c in node.pubsub_channels() if c != DIRECTORY_CHANNEL],
                    len([c for c in node.client_list(_type="pubsub") if int(c.get("ssub", 0)) > 0]),
                )
            for tenant in tenants:  # and every org's event reaches its socket
                status, _, _ = await asyncio.to_thread(
                    _post,
                    cluster_stack.rest,
                    tenant,
                    tokens[tenant.org.id],
                    f"s-{tenant.org.id}",
                    "s",
                )
                assert status == 201
            received = [await next_event(socket) for socket in sockets]
            assert (await next_event(extra))["org_id"] == str(tenants[0].org.id)
            return subscriptions, received
        finally:
            for socket in [*sockets, extra]:
                await socket.close()

    subscriptions, received = asyncio.run(scenario())
    assert [event["org_id"] for event in received] == [str(t.org.id) for t in tenants]
    access_master = cluster.master_of(keys.ACCESS_CHANNEL)
    for master, (shard_channels, plain_channels, pubsub_clients) in subscriptions.items():
        expected = {
            keys.org_channel(str(t.org.id))
            for t in tenants
            if cluster.master_of(keys.org_channel(str(t.org.id))) == master
        }
        if master == access_master:
            expected.add(keys.ACCESS_CHANNEL)
        assert shard_channels == expected  # each org's channel only on the shard owning it
        assert plain_channels == []  # no cluster-wide PUBLISH/SUBSCRIBE
        # one connection per server process holding a channel of this shard
        processes = (
            2 if master in (access_master, cluster.master_of(keys.org_channel(str(tenants[0].org.id)))) else 1
        )
        assert pubsub_clients == processes


def test_a_lease_no_replica_acknowledged_is_not_granted(cluster_stack, tenant):
    """WAIT 1 on the lease's own connection: with the replica frozen, the socket is
    refused (1013, retry) and the lease given back; with it back, the socket gets in."""
    cluster = cluster_stack.cluster
    master = cluster.master_of(keys.all_connections_key())
    token = token_of(tenant.users["owner"])
    ws = cluster_stack.realtime[0].ws_url
    org_leases = keys.org_connections_key(str(tenant.org.id))
    with cluster.paused(cluster.replica_of(master)):
        code, _ = asyncio.run(refusal(ws, tenant.org.id, token))
        assert code == 1013
        assert cluster.node(master).zcard(org_leases) == 0

    async def accepted() -> bool:
        try:
            socket, _ = await open_socket(ws, tenant.org.id, token)
        except ConnectionClosed:
            return False
        await socket.close()
        return True

    wait_until(lambda: asyncio.run(accepted()), timeout=20, interval=0.2)


def test_a_master_killed_mid_traffic_fails_over_without_lost_or_doubled_writes(cluster_stack, make_tenant):
    cluster = cluster_stack.cluster
    victim = cluster.master_of(keys.all_connections_key())  # the leases' shard
    promoted = cluster.replica_of(victim)
    tenant = _tenant_on(cluster, victim, make_tenant)  # its events and idempotency keys too
    churn = make_tenant()  # sockets that connect and close all along
    token = token_of(tenant.users["owner"])
    first, second = cluster_stack.realtime
    total = 30
    results: list[tuple[int, int, str, str]] = []
    writes_done = threading.Event()

    def write_all() -> None:
        for n in range(total):
            for _attempt in range(2):  # each write sent twice: the second is a replay
                results.append((n, *_post(cluster_stack.rest, tenant, token, f"fo-{n}", f"fo-{n}")))
            if n == 9:
                cluster.kill(victim)
            time.sleep(0.1)
        writes_done.set()

    frames: list[dict] = []
    resumes: list[str | None] = []  # the last_event_id of each (re)connect

    def _is_last(frame: dict) -> bool:
        return frame.get("type") == "expense.created" and frame["data"]["category"] == f"fo-{total - 1}"

    connect_codes: list[int] = []

    async def read_events() -> None:
        last_event_id: str | None = None
        while True:
            params: dict[str, str] = {"last_event_id": last_event_id} if last_event_id else {}
            try:
                socket, ready = await open_socket(first.ws_url, tenant.org.id, token, **params)
            except (ConnectionClosed, OSError, TimeoutError):
                await asyncio.sleep(0.2)  # refused (1013) while the shard fails over: retry
                continue
            resumes.append(last_event_id)
            frames.extend(ready["before_ready"])
            last_event_id = ready["last_event_id"]
            try:
                while not any(_is_last(frame) for frame in frames):
                    frame = await next_event(socket, timeout=60)
                    frames.append(frame)
                    if "event_id" in frame:
                        last_event_id = frame["event_id"]
                await socket.close()
                return
            except ConnectionClosed:
                continue  # 1012: the hub lost its shard; resume from last_event_id

    churn_token = token_of(churn.users["viewer"])

    async def churn_sockets() -> None:
        while not writes_done.is_set():
            try:
                socket, _ = await open_socket(second.ws_url, churn.org.id, churn_token)
                connect_codes.append(0)
                await socket.close()
            except ConnectionClosed as closed:
                connect_codes.append(closed.rcvd.code if closed.rcvd else -1)
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        writer = asyncio.create_task(asyncio.to_thread(write_all))
        try:
            await asyncio.wait_for(asyncio.gather(read_events(), churn_sockets(), writer), 120)
        except TimeoutError:
            seen = [(frame["type"], frame.get("version")) for frame in frames]
            raise AssertionError(
                f"stuck: frames {seen}, writes {len(results)}, connects {connect_codes[-20:]}"
            ) from None

    asyncio.run(scenario())

    # The replica took over, and the cluster is whole again.
    wait_until(cluster.healthy, timeout=20)
    assert cluster.master_of(keys.all_connections_key()) == promoted
    # No write failed, none doubled: 30 created once, each replay answered from the record.
    statuses = [(status, replayed) for _, status, _, replayed in results]
    assert set(statuses) <= {(201, ""), (201, "true"), (200, "true")}, statuses
    assert Expense.objects.filter(org=tenant.org).count() == total
    by_write: dict[int, set[str]] = {}
    for n, _, entry_id, _ in results:
        by_write.setdefault(n, set()).add(entry_id)
    assert all(len(ids) == 1 for ids in by_write.values())
    # Events: the socket was closed when its shard's master died (1012) and resumed from
    # its last event id; in version order; where events may be missing, resync_required.
    assert len(resumes) >= 2 and resumes[1] is not None, resumes
    events = [frame for frame in frames if frame["type"] == "expense.created"]
    assert events[-1]["data"]["category"] == f"fo-{total - 1}"
    previous, resynced = None, False
    for frame in frames:
        if frame["type"] == "resync_required":
            resynced = True
        elif frame["type"] == "expense.created":
            if previous is not None and not resynced:
                assert frame["version"] == previous + 1, (previous, frame["version"])
            previous, resynced = frame["version"], False
    # Socket connects during the failover: let in, or refused with 1013 (retry), never more.
    assert set(connect_codes) <= {0, 1013}, connect_codes
    assert connect_codes.count(0) > 0

    async def churn_connects() -> bool:
        try:
            socket, _ = await open_socket(second.ws_url, churn.org.id, churn_token)
        except ConnectionClosed:
            return False
        await socket.close()
        return True

    wait_until(lambda: asyncio.run(churn_connects()), timeout=20, interval=0.2)  # clients followed

    # Caps stay exact on the promoted master: 12 at once across both processes, 8 get in.
    capped = make_tenant()
    capped_tokens = [token_of(capped.users[role]) for role in ("owner", "manager")]

    async def connect_many() -> list[Any]:
        async def one(n: int) -> Any:
            server = cluster_stack.realtime[n % 2]
            try:
                socket, _ = await open_socket(server.ws_url, capped.org.id, capped_tokens[n % 2])
                return socket
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else -1

        outcomes = await asyncio.gather(*(one(n) for n in range(12)))
        for outcome in outcomes:
            if not isinstance(outcome, int):
                await outcome.close()
        return [outcome if isinstance(outcome, int) else 0 for outcome in outcomes]

    outcomes = asyncio.run(connect_many())
    assert outcomes.count(0) == CAP_PER_ORG and outcomes.count(4430) == 12 - CAP_PER_ORG, outcomes


def test_a_cluster_with_no_reachable_seed_degrades_like_a_dead_redis(settings, tenant):
    """redis-py raises RedisClusterException (not a RedisError) when no seed answers:
    the Redis module turns it into a RedisError, so every fallback applies, never a 500."""
    from tests.live_server import free_port

    settings.REDIS_CLUSTER_NODES = [f"127.0.0.1:{free_port()}"]  # nothing listens there
    created = tenant.manager.post(
        tenant.url("/expenses"), tenant.entry_payload(), format="json", HTTP_IDEMPOTENCY_KEY="no-seed"
    )
    replayed = tenant.manager.post(
        tenant.url("/expenses"), tenant.entry_payload(), format="json", HTTP_IDEMPOTENCY_KEY="no-seed"
    )
    assert created.status_code == 201 and replayed.status_code in (200, 201)
    assert replayed.json()["id"] == created.json()["id"]
    assert Expense.objects.filter(org=tenant.org).count() == 1
    health = tenant.manager.get("/v1/system/health")
    assert health.status_code in (200, 503) and health.json()["checks"]["redis"] == "failing"
