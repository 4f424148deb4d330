"""Realtime under faults, on real processes: Redis unreachable at connect (1013), the
Pub/Sub connection killed under live sockets (1012, then resume loses nothing), and
bin/serve stopping both servers on TERM."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import cast

import httpx
import pytest
import redis
from websockets.asyncio.client import connect

from core.redis_clients import cluster_mode, sync_redis
from realtime.publishing import event_publish
from tests import conftest
from tests.live_server import ROOT, free_port, server_process
from tests.realtime_client import next_change, open_socket, org_url, token_of

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_redis_unreachable_at_connect_is_1013_and_holds_nothing(django_db_blocker, tenant):
    token = token_of(tenant.users["owner"])
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # a closed port: connection refused

    async def scenario(ws: str):
        async with connect(
            org_url(ws, tenant.org.id), additional_headers={"Authorization": f"Token {token}"}
        ) as s:
            await s.wait_closed()
            return s.close_code

    env = conftest.REALTIME_TEST_ENV | {"REDIS_URL": dead_redis}
    with django_db_blocker.unblock(), server_process(conftest.test_database_url(), "asgi", **env) as server:
        assert asyncio.run(scenario(server.ws_url)) == 1013


def _kill_pubsub_connections() -> int:
    """CLIENT KILL TYPE pubsub on the one node, or on every master of a cluster."""
    client = sync_redis()
    if cluster_mode():
        # redis-py types the answer as one int; with target_nodes a cluster answers per node.
        killed = client.client_kill_filter(_type="pubsub", target_nodes=redis.RedisCluster.PRIMARIES)
        return sum(cast(dict[str, int], killed).values())
    return client.client_kill_filter(_type="pubsub")


def test_a_lost_pubsub_connection_closes_sockets_with_1012_and_resume_misses_nothing(
    realtime_servers, tenant
):
    org_id = str(tenant.org.id)
    token = token_of(tenant.users["owner"])
    ws = realtime_servers[0].ws_url

    async def scenario():
        socket, ready = await open_socket(ws, org_id, token)
        killed = await asyncio.to_thread(_kill_pubsub_connections)
        assert killed >= 1
        await socket.wait_closed()
        # Written while the client is away: it must get them on resume.
        missed = [
            await asyncio.to_thread(event_publish, org_id=org_id, event_type="expense.created", data={"n": n})
            for n in range(3)
        ]
        socket2, resumed = await open_socket(ws, org_id, token, last_event_id=ready["last_event_id"])
        live = await asyncio.to_thread(
            event_publish, org_id=org_id, event_type="expense.created", data={"n": 3}
        )
        live_event = await next_change(socket2)
        await socket2.close()
        return socket.close_code, missed, resumed, live, live_event

    code, missed, resumed, live, live_event = asyncio.run(scenario())
    assert code == 1012
    assert [event["event_id"] for event in resumed["before_ready"]] == missed
    assert live_event["event_id"] == live  # the process subscribed afresh


def test_bin_serve_runs_the_servers_and_the_worker_and_term_stops_all(django_db_blocker):
    port, realtime_port = free_port(), free_port()
    env = os.environ | {
        "DATABASE_URL": conftest.test_database_url(), "REST_PORT": str(port), "REALTIME_PORT": str(realtime_port),
        "PORT": str(free_port()),
        # its own free port: the default, REST_PORT + 1, may be held by anything here
        "PUSH_WORKER_METRICS_PORT": str(free_port()),
        "WEB_CONCURRENCY": "1", "REALTIME_WORKERS": "1", "ACCESS_LOG": "", "PYTHON": sys.executable,
    }  # fmt: skip
    with django_db_blocker.unblock():
        serve = subprocess.Popen([str(ROOT / "bin" / "serve")], cwd=ROOT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 90  # three servers starting on a busy shared machine
            while True:
                try:
                    rest = httpx.get(f"http://127.0.0.1:{port}/v1/system/health", timeout=2)
                    realtime = httpx.get(f"http://127.0.0.1:{realtime_port}/v1/system/health", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "bin/serve did not come up"
                    time.sleep(0.2)
            assert rest.status_code in (200, 503) and realtime.status_code in (200, 503)
            children = subprocess.run(
                ["pgrep", "-P", str(serve.pid)], check=True, capture_output=True, text=True
            ).stdout.split()
            assert len(children) == 4  # gunicorn, uvicorn, the outbox worker and the push worker
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=20) == 0
            for pid in children:
                deadline = time.monotonic() + 10
                while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not os.path.exists(f"/proc/{pid}"), f"child {pid} outlived bin/serve"
        finally:
            if serve.poll() is None:
                serve.terminate()  # bin/serve stops its children on TERM
                try:
                    serve.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(serve.pid, signal.SIGKILL)  # its children too: none may outlive a failed test


def test_a_hung_redis_pubsub_subscribe_is_bounded_by_the_breaker_and_recovers(settings, monkeypatch):
    """The hub's Pub/Sub subscribe (realtime/hub.py) behind the project's one Redis
    breaker, in-process against a real redis-server: SIGSTOPped, each subscribe gives up
    at its deadline until the breaker opens, then fails at once; after SIGCONT and the
    cooldown, a subscribe succeeds and receives what is published."""
    from realtime import hub as hub_module
    from realtime import keys
    from tests.redis_server import dedicated_redis
    from tests.replica_support import wait_until

    deadline = 0.5
    monkeypatch.setattr(hub_module, "SUBSCRIBE_TIMEOUT_SECONDS", deadline)
    with dedicated_redis() as server, asyncio.Runner() as runner:
        settings.REDIS_URL = server.url  # a breaker of its own (one per URL)
        settings.REDIS_BREAKER_FAILURES = 2
        settings.REDIS_BREAKER_COOLDOWN_SECONDS = 1.0
        hub = runner.run(_make_hub(hub_module))
        runner.run(hub.subscribe(org_id="org-before", queue_size=10))  # connected, healthy

        def attempt(org_id: str) -> tuple[str, float]:
            started = time.monotonic()
            try:
                runner.run(hub.subscribe(org_id=org_id, queue_size=10))
                outcome = "subscribed"
            except Exception as error:  # TimeoutError at the deadline, RedisUnavailable once open
                outcome = type(error).__name__
            return outcome, time.monotonic() - started

        with server.paused():
            hung = [attempt(f"org-hung-{n}") for n in range(6)]
        # The breaker opens after REDIS_BREAKER_FAILURES (2) failures in this process; the
        # hub's own reader may add one while Redis hangs, so one or two subscribes pay the
        # deadline, and every later one fails at once.
        timed_out = next(n for n, (outcome, _) in enumerate(hung) if outcome != "TimeoutError")
        assert 1 <= timed_out <= 2, hung
        assert [outcome for outcome, _ in hung[timed_out:]] == ["RedisUnavailable"] * (6 - timed_out), hung
        assert all(seconds < deadline + 1.0 for _, seconds in hung[:timed_out]), (
            hung
        )  # bounded by the deadline
        assert all(seconds < 0.05 for _, seconds in hung[timed_out:]), hung  # open: Redis not even asked

        # After SIGCONT: refused until the cooldown ends, then the probe subscribes.
        wait_until(lambda: attempt("org-after")[0] == "subscribed", timeout=15, interval=0.2)
        subscriber = hub._subscribers["org-after"]
        (subscriber,) = subscriber
        frame = '{"event_id":"1700000000000-0","type":"expense.created"}'
        wait_until(lambda: server.client().publish(keys.org_channel("org-after"), f"{time.time()} {frame}"))
        event = runner.run(asyncio.wait_for(subscriber.queue.get(), 10))
        assert event.frame == frame
    print(f"hung subscribes: {[(o, round(s * 1000)) for o, s in hung]} (outcome, ms)")


async def _make_hub(hub_module):
    return hub_module.OrgEventHub()
