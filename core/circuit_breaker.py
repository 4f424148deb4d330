"""A small circuit breaker, so a dead or hung dependency costs a few timeouts, not one per request.

Closed: calls go through; `failure_threshold` failures in a row open it. Open: calls
are refused for `cooldown_seconds`. Then half-open: one caller at a time probes; a
success closes it, a failure opens it for another cooldown. Shared by the threads of
one process (guarded by a lock); each process keeps its own.
"""

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = max(1, failure_threshold)
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None

    def allow(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return True
            if self._clock() < self._open_until or self._probing:
                return False
            self._probing = True  # half-open: this caller probes, the others wait
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = None
            self._probing = False

    def record_failure(self) -> bool:
        """Count a failure; True when this one opened the circuit (worth a log line)."""
        with self._lock:
            self._failures += 1
            self._probing = False
            was_open = self._open_until is not None
            if was_open or self._failures >= self._threshold:
                self._open_until = self._clock() + self._cooldown
            return not was_open and self._open_until is not None

    @property
    def has_failures(self) -> bool:
        """True when a failure was recorded since the last success (cheap, no lock:
        callers use it to skip record_success() on the hot path)."""
        return self._failures > 0 or self._open_until is not None
