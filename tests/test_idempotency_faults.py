"""Faults around an idempotent write, against the real Postgres and a real, dedicated
redis-server (stopped, flushed, or frozen with SIGSTOP; the stack's Redis is never
touched). Data is committed (`transaction=True`), as in production.

The two crash points inside a request are injected by wrapping our own functions
(monkeypatch): the test is about our transaction boundaries, not about a service.
"""

import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from finance.models import Expense
from idempotency import calls
from idempotency.models import IdempotencyRecord
from idempotency.redis_fast_path import ClaimAhead, fast_path
from tests.redis_server import DedicatedRedis, dedicated_redis

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 0.25  # REDIS_SOCKET_TIMEOUT_SECONDS


class InjectedFault(Exception):
    pass


def post(tenant, key, **payload):
    client = tenant.manager
    client.raise_request_exception = False  # a crash must reach us as the server's 500
    return client.post(
        tenant.url("/expenses"), tenant.entry_payload(**payload), format="json", HTTP_IDEMPOTENCY_KEY=key
    )


def degraded_count() -> float:
    return REGISTRY.get_sample_value("idempotency_redis_degraded_total") or 0.0


@pytest.fixture
def redis_server(settings) -> Iterator[DedicatedRedis]:
    with dedicated_redis() as server:
        settings.REDIS_URL = server.url
        settings.REDIS_CLUSTER_NODES = []  # this one node, not the cluster
        settings.REDIS_SOCKET_TIMEOUT_SECONDS = TIMEOUT
        settings.REDIS_BREAKER_FAILURES = 3
        settings.REDIS_BREAKER_COOLDOWN_SECONDS = 30
        yield server


def test_a_fault_after_the_insert_and_before_commit_leaves_nothing_and_the_key_then_succeeds(
    tenant, monkeypatch
):
    real_insert = calls.idempotency_record_insert

    def insert_then_crash(**kwargs):
        assert real_insert(**kwargs)  # the record row is written in the transaction...
        raise InjectedFault("crash before commit")  # ...which then never commits

    monkeypatch.setattr(calls, "idempotency_record_insert", insert_then_crash)
    crashed = post(tenant, "crash-1")
    assert crashed.status_code == 500
    assert Expense.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0

    monkeypatch.setattr(calls, "idempotency_record_insert", real_insert)
    retry = post(tenant, "crash-1")
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers
    assert Expense.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_a_fault_after_commit_and_before_the_response_is_replayed_on_retry_without_a_second_row(
    tenant, monkeypatch
):
    def crash_after_commit(self):
        raise InjectedFault("connection lost after commit")  # Redis never hears back either

    monkeypatch.setattr(calls.IdempotentCall, "after_transaction", crash_after_commit)
    lost = post(tenant, "crash-2")
    assert lost.status_code == 500  # the client never saw its 201
    committed = Expense.objects.get()
    monkeypatch.undo()

    # The Redis claim of the dead attempt is still held: Postgres says it finished.
    retry = post(tenant, "crash-2")
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == str(committed.id)
    assert Expense.objects.count() == 1
    again = post(tenant, "crash-2")  # now from the Redis cache
    assert again.content == retry.content


def test_with_redis_stopped_writes_succeed_exactly_once_and_only_the_first_requests_wait(
    tenant, redis_server
):
    redis_server.stop()
    before = degraded_count()
    timings = []
    responses = []
    for n in range(12):
        started = time.monotonic()
        responses.append(post(tenant, f"down-{n % 4}"))  # each key three times
        timings.append(time.monotonic() - started)
    assert [r.status_code for r in responses] == [201] * 12
    assert Expense.objects.count() == 4
    for n in range(4):
        first, *retries = responses[n::4]
        assert all(r.content == first.content and r.headers["Idempotent-Replayed"] == "true" for r in retries)
    assert degraded_count() == before + 12
    assert fast_path().breaker.is_open
    assert max(timings) < 2.0  # a refused connection fails fast; none of them stalled
    assert post(tenant, "down-0", amount="1.00").status_code == 422  # mismatch without Redis


def test_redis_flushed_between_the_first_request_and_its_retry_still_replays(tenant, redis_server):
    first = post(tenant, "flushed")
    assert first.status_code == 201
    assert redis_server.client().dbsize() >= 1  # the response was cached
    redis_server.client().flushall()
    retry = post(tenant, "flushed")
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert Expense.objects.count() == 1
    assert redis_server.client().dbsize() >= 1  # and Redis is warm again


def test_redis_hung_with_sigstop_costs_a_few_timeouts_then_nothing(tenant, redis_server, monkeypatch):
    assert post(tenant, "warm-up").status_code == 201  # connections to Redis are open
    redis_path = fast_path()
    attempts = []
    real_command = redis_path._command
    real_queue = ClaimAhead.queue

    def counted(*args):  # a spy: the commands still go to the (hung) server
        attempts.append(args[0])
        return real_command(*args)

    def counted_in_pipeline(self, pipe):  # the claim sent with the rate limit's count
        attempts.append(self.command()[0])
        return real_queue(self, pipe)

    monkeypatch.setattr(redis_path, "_command", counted)
    monkeypatch.setattr(ClaimAhead, "queue", counted_in_pipeline)
    before = degraded_count()
    timings = []
    with redis_server.paused():
        responses = []
        for n in range(10):
            started = time.monotonic()
            responses.append(post(tenant, f"hung-{n % 5}"))
            timings.append(time.monotonic() - started)
    assert [r.status_code for r in responses] == [201] * 10
    assert [r.headers.get("Idempotent-Replayed") for r in responses[5:]] == ["true"] * 5
    assert Expense.objects.count() == 6
    # The project's one Redis breaker opens after 3 failures on any path (idempotency,
    # write positions, event publishing): at most 3 idempotency attempts, then none.
    assert 1 <= len(attempts) <= 3 and set(attempts) == {"SET"}, attempts
    assert max(timings) < 1.0, timings  # a timeout is 0.25 s: nobody waits for a hung server
    assert degraded_count() == before + 10


def test_after_the_cooldown_the_breaker_closes_and_redis_serves_again(tenant, redis_server, settings):
    settings.REDIS_BREAKER_COOLDOWN_SECONDS = 0.5
    with redis_server.paused():
        for n in range(3):
            assert post(tenant, f"recover-{n}").status_code == 201
    assert fast_path().breaker.is_open
    time.sleep(0.6)
    assert post(tenant, "recover-0").headers["Idempotent-Replayed"] == "true"
    assert not fast_path().breaker.is_open
    assert redis_server.client().dbsize() >= 1
