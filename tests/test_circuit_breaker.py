"""The circuit breaker's state machine, with a fake clock (pure logic, no Redis)."""

from core.circuit_breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_and_refuses_until_the_cooldown_ends():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=5, clock=clock)
    assert breaker.allow()
    assert breaker.record_failure() is False
    assert breaker.record_failure() is False
    assert breaker.record_failure() is True  # this one opened it
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()


def test_half_open_lets_one_probe_through_and_a_success_closes_it():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for it
    breaker.record_success()
    assert breaker.allow() and breaker.allow()
    assert not breaker.is_open


def test_a_failed_probe_opens_it_for_another_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=5, clock=clock)
    breaker.record_failure()
    assert breaker.allow()  # one failure is below the threshold
    breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    assert breaker.record_failure() is False  # already open: not "opened now"
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_seconds=5, clock=FakeClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.allow()
