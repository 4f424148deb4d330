"""A keyed write's answer is cached in Redis with the write position's round trip, right
after its commit (core.redis_riders), and in no other way: committed data
(`transaction=True`), since that round trip only happens after a real commit."""

import pytest

from core.redis_riders import after_commit_riders_take
from finance.models import Expense
from idempotency.identity import IdempotencyScope
from idempotency.models import IdempotencyRecord
from idempotency.redis_fast_path import fast_path
from replicas.positions import PositionStore
from tests.redis_wire import written_together

pytestmark = pytest.mark.django_db(transaction=True)


def _post(tenant, key, **payload):
    return tenant.manager.post(
        tenant.url("/expenses"), tenant.entry_payload(**payload), format="json", HTTP_IDEMPOTENCY_KEY=key
    )


def _cached(tenant, key) -> bytes | None:
    scope = IdempotencyScope.of(org_id=tenant.org.id, user_id=tenant.users["manager"].id, key=key)
    value = fast_path()._client.get(scope.redis_key())  # the non-decoding client: bytes
    assert value is None or isinstance(value, bytes)
    return value


def _sends_naming(events, *parts: bytes) -> list[bytes]:
    return [event[1] for event in events if event[0] == "send" and all(part in event[1] for part in parts)]


def _replays_once(tenant, key, created) -> None:
    """A retry with the key gets the first answer's bytes; one row, one record."""
    replay = _post(tenant, key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == created.content
    assert Expense.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_the_answer_rides_with_the_write_position_and_a_retry_replays_it_from_redis(tenant, redis_wire):
    assert _post(tenant, "warm-up").status_code == 201  # connections, scripts: not counted
    redis_wire.clear()
    created = _post(tenant, "rides-along")
    assert created.status_code == 201
    # The key's two commands: the claim (with the rate limit's count, before the handler)
    # and the answer (with the position raise, after the commit); nothing alone.
    assert len(_sends_naming(redis_wire, b"idem:{")) == 2
    assert written_together(redis_wire, (b"replicas:pos:",), (b"idem:{", b"\r\nPX\r\n", b"\r\nD"))
    assert written_together(redis_wire, (b"rl:{",), (b"idem:{", b"\r\nNX\r\n"))
    cached = _cached(tenant, "rides-along")
    assert cached is not None and cached.startswith(b"D")  # the answer replaced the claim
    assert created.content in cached

    redis_wire.clear()
    replay = _post(tenant, "rides-along")
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == created.content
    assert Expense.objects.count() == 2
    assert after_commit_riders_take() == []  # nothing left waiting on this thread


def test_redis_failing_in_the_after_commit_round_trip_loses_nothing(tenant, monkeypatch):
    """Logic under test: what the rider does when the position's round trip fails (a mock
    stands in for Redis failing at exactly that moment). The write is committed and
    acknowledged; the answer is not cached, so a retry is answered from Postgres, once."""
    calls = []

    def failing_remember(self, cluster, clients, position):
        calls.append(position)
        for rider in after_commit_riders_take():
            rider.failed()  # as the real call does when its pipeline raises
        return False

    monkeypatch.setattr(PositionStore, "remember", failing_remember)
    created = _post(tenant, "redis-failed")
    assert created.status_code == 201
    assert calls  # the position's call was made, and failed
    assert not (_cached(tenant, "redis-failed") or b"").startswith(b"D")  # not sent again alone
    monkeypatch.undo()
    _replays_once(tenant, "redis-failed", created)


def test_redis_lost_mid_call_in_the_after_commit_round_trip_fails_nothing(tenant, monkeypatch):
    """The connection carrying the position raise is lost as the batch is written (on a
    Redis Cluster the answer's own node may still take it): the request succeeds, no
    rider is left waiting, and a retry replays the same bytes, from Redis or Postgres."""
    import redis.connection

    real_send = redis.connection.AbstractConnection.send_packed_command

    def send(self, command, check_health=True):
        packed = b"".join(bytes(c) for c in command) if isinstance(command, list) else bytes(command)
        if b"replicas:pos:" in packed and b"EVAL" in packed:
            self.disconnect()
            raise redis.ConnectionError("lost mid-call (test)")
        return real_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    created = _post(tenant, "connection-lost")
    assert created.status_code == 201
    assert after_commit_riders_take() == []
    monkeypatch.undo()
    _replays_once(tenant, "connection-lost", created)


def test_without_a_position_to_store_the_answer_is_cached_alone_after_the_commit(tenant, monkeypatch):
    """A write whose commit raises no position (none recorded: the change log's handler
    skipped) still caches its answer, in a call of its own after the transaction."""
    from replicas import middleware

    monkeypatch.setattr(middleware, "record_write_position", lambda: None)
    created = _post(tenant, "alone")
    assert created.status_code == 201
    cached = _cached(tenant, "alone")
    assert cached is not None and cached.startswith(b"D") and created.content in cached
    assert after_commit_riders_take() == []


def test_a_refused_keyed_write_leaves_no_rider_and_frees_its_key(tenant):
    refused = _post(tenant, "refused", amount="-1")
    assert refused.status_code == 400
    assert after_commit_riders_take() == []
    assert _cached(tenant, "refused") is None  # the claim was released
    assert _post(tenant, "refused").status_code == 201
    assert Expense.objects.count() == 1
