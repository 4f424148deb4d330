"""CONTRACT §3 through real server processes (gunicorn, 2 workers x 8 threads) on
loopback: 50 concurrent duplicates, and a mismatch while the first is still running,
with Redis healthy, stopped, and hung (a dedicated redis-server under SIGSTOP)."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import psycopg
import pytest

from finance.models import Expense
from idempotency.models import IdempotencyRecord
from tests import conftest
from tests.live_server import free_port, running_server
from tests.redis_server import dedicated_redis
from tests.tokens import token_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

DUPLICATES = 50


@pytest.fixture(scope="module", params=["redis-up", "redis-stopped", "redis-hung"])
def server(request, django_db_setup, django_db_blocker) -> Iterator[tuple[str, str]]:
    env = {"WEB_CONCURRENCY": "2", "WEB_THREADS": "8"}
    with ExitStack() as stack:
        if request.param == "redis-stopped":
            env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        if request.param == "redis-hung":
            hung = stack.enter_context(dedicated_redis())
            env["REDIS_URL"] = hung.url
            stack.enter_context(hung.paused())  # accepts connections, never answers
        stack.enter_context(django_db_blocker.unblock())
        yield stack.enter_context(running_server(conftest.test_database_url(), **env)), request.param


def headers_for(user, key: str) -> dict[str, str]:
    return {"Authorization": f"Token {token_for(user)}", "Idempotency-Key": key}


def test_50_concurrent_identical_posts_write_exactly_once(server, tenant):
    base_url, mode = server
    url = base_url + tenant.url("/expenses")
    headers = headers_for(tenant.users["manager"], "fifty")
    body = tenant.entry_payload()
    start = threading.Barrier(DUPLICATES)

    def send(_: int) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            start.wait()
            return client.post(url, json=body, headers=headers)

    started = time.monotonic()
    with ThreadPoolExecutor(DUPLICATES) as pool:
        responses = list(pool.map(send, range(DUPLICATES)))
    elapsed = time.monotonic() - started

    assert Expense.objects.filter(org=tenant.org).count() == 1
    assert IdempotencyRecord.objects.count() == 1
    statuses = [r.status_code for r in responses]
    print(mode, "statuses:", {s: statuses.count(s) for s in set(statuses)}, f"{elapsed:.2f}s")
    assert set(statuses) <= {201, 409}, statuses
    created = [r for r in responses if r.status_code == 201]
    originals = [r for r in created if "idempotent-replayed" not in r.headers]
    assert len(originals) == 1, statuses
    assert all(r.content == originals[0].content for r in created)
    assert all(r.headers["idempotent-replayed"] == "true" for r in created if r is not originals[0])
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 409)
    if mode != "redis-up":
        assert statuses == [201] * DUPLICATES  # no claims without Redis: duplicates wait, then replay
    # A hung Redis costs each request at most one short timeout, and only until the
    # breaker opens: the burst is not serialised behind Redis.
    assert elapsed < 10, elapsed

    later = httpx.post(url, json=body, headers=headers, timeout=30)
    assert later.status_code == 201
    assert later.content == originals[0].content
    assert later.headers["idempotent-replayed"] == "true"


def _hold_property_lock(tenant) -> psycopg.Connection:
    """Lock the property row, so an expense insert (its foreign key check) waits."""
    conn = psycopg.connect(conftest.test_database_url(), autocommit=False)
    conn.execute("SELECT 1 FROM tenancy_property WHERE id = %s FOR UPDATE", [tenant.property.id])
    return conn


def _wait_until_blocked(count: int) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(conftest.test_database_url(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            assert waiting is not None
            if waiting[0] >= count:
                return
            time.sleep(0.05)
    raise AssertionError(f"expected {count} requests waiting on the row lock")


def test_a_different_amount_while_the_first_is_still_running_is_422_and_writes_nothing(server, tenant):
    base_url, mode = server
    url = base_url + tenant.url("/expenses")
    headers = headers_for(tenant.users["manager"], "in-flight")
    lock = _hold_property_lock(tenant)
    with ThreadPoolExecutor(4) as pool:
        try:
            first = pool.submit(httpx.post, url, json=tenant.entry_payload(), headers=headers, timeout=30)
            _wait_until_blocked(1)
            if mode == "redis-up":
                # The claim in Redis carries the first request's fingerprint: answered at once.
                different = httpx.post(
                    url, json=tenant.entry_payload(amount="99.00"), headers=headers, timeout=30
                )
                same = httpx.post(url, json=tenant.entry_payload(), headers=headers, timeout=30)
                assert different.status_code == 422
                assert same.status_code == 409
                assert same.headers["retry-after"] == "1"
                assert Expense.objects.count() == 0
                lock.rollback()
                assert first.result().status_code == 201
            else:
                # Without Redis the duplicate runs too, waits on the first one's record,
                # and then loses: 422 and its write rolled back.
                pending = pool.submit(
                    httpx.post, url, json=tenant.entry_payload(amount="99.00"), headers=headers, timeout=30
                )
                _wait_until_blocked(2)
                lock.rollback()
                different = pending.result()
                outcomes = sorted([first.result().status_code, different.status_code])
                assert outcomes == [201, 422]
        finally:
            lock.close()
    rows = list(Expense.objects.values_list("amount", flat=True))
    assert len(rows) == 1
    winner = first.result() if first.result().status_code == 201 else different
    assert str(rows[0]) == winner.json()["amount"]
    replay = httpx.post(
        url, json=tenant.entry_payload(amount=winner.json()["amount"]), headers=headers, timeout=30
    )
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == winner.content
