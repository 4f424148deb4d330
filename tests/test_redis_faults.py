"""A hung Redis (SIGSTOP) on every Redis path, through real gunicorn and uvicorn
processes: writes (idempotency claim and store, write positions, event publishing),
reads (positions) and websocket connects (connection caps) pay a few short timeouts
until the process's one Redis breaker (core/redis_clients.py) opens, then nothing."""

import asyncio
import statistics
import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests import conftest
from tests.live_server import server_process
from tests.realtime_client import refusal, token_of
from tests.redis_server import dedicated_redis

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TIMEOUT = 0.25
ENV = {
    "REDIS_SOCKET_TIMEOUT_SECONDS": str(TIMEOUT),
    "REDIS_BREAKER_FAILURES": "3",
    "REDIS_BREAKER_COOLDOWN_SECONDS": "60",  # stays open for the whole test
}


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_hung_redis_costs_writes_reads_and_sockets_a_few_timeouts_then_nothing(tenant, django_db_blocker):
    token = token_of(tenant.users["owner"])
    headers = {"Authorization": f"Token {token}"}
    with django_db_blocker.unblock(), dedicated_redis() as redis_server, ExitStack() as stack:
        env = ENV | {"REDIS_URL": redis_server.url}
        rest = stack.enter_context(server_process(conftest.test_database_url(), **env))
        realtime = stack.enter_context(
            server_process(conftest.test_database_url(), "asgi", **(conftest.REALTIME_TEST_ENV | env))
        )
        client = stack.enter_context(httpx.Client(base_url=rest.url, headers=headers, timeout=60))
        keys = iter(range(10_000))

        def write() -> httpx.Response:
            return client.post(
                tenant.url("/expenses"),
                json=tenant.entry_payload(),
                headers={"Idempotency-Key": f"redis-fault-{next(keys)}"},
            )

        def read() -> httpx.Response:
            return client.get(tenant.url("/expenses"))

        baseline = [_timed(write) for _ in range(8)] + [_timed(read) for _ in range(4)]
        assert all(r.status_code in (200, 201) for r, _ in baseline)
        assert redis_server.client().dbsize() > 0  # the paths really use this Redis
        with redis_server.paused():
            hung_writes = [_timed(write) for _ in range(12)]
            hung_reads = [_timed(read) for _ in range(6)]
            sockets = [
                _timed(lambda: asyncio.run(refusal(realtime.ws_url, tenant.org.id, token))) for _ in range(6)
            ]
    assert [r.status_code for r, _ in hung_writes] == [201] * 12
    assert [r.status_code for r, _ in hung_reads] == [200] * 6
    assert [code for (code, _), _ in sockets] == [1013] * 6
    usual = statistics.median(seconds for _, seconds in baseline)
    write_seconds = [seconds for _, seconds in hung_writes]
    # Before the breaker opens: at most a few timeouts (3 failures open it; each path
    # gives up after one 0.25 s timeout, never retried). Generous for a busy machine.
    assert max(write_seconds) < usual + 6 * TIMEOUT + 1.0, write_seconds
    assert sum(write_seconds) - usual * len(write_seconds) < 8 * TIMEOUT + 2.0, write_seconds
    # Once it is open, Redis costs nothing: the later writes take their usual time
    # (without the breaker each would wait a timeout on each of its 4 Redis calls).
    assert statistics.median(write_seconds[4:]) < usual + 2 * TIMEOUT, (usual, write_seconds)
    assert statistics.median(s for _, s in hung_reads) < usual + 2 * TIMEOUT, hung_reads
    socket_seconds = [seconds for _, seconds in sockets]
    assert max(socket_seconds) < 5.0 and statistics.median(socket_seconds[3:]) < 1.0, socket_seconds
    print(
        f"hung redis: usual {usual * 1000:.0f} ms; writes {[round(s * 1000) for s in write_seconds]} ms; "
        f"sockets refused in {[round(s * 1000) for s in socket_seconds]} ms"
    )
