"""A client-side timeout for queries on a server that stopped answering.

A replica that hangs (SIGSTOP, a frozen VM) never enforces its own statement_timeout,
and the kernel keeps acknowledging TCP, so libpq would wait forever. `guard()` arms a
deadline for a connection's socket; one watchdog thread per process shuts the socket
down when a deadline passes, which makes libpq fail the query at once with a
connection error (the caller then fails over). `shutdown()` (not `close()`) leaves
the descriptor to its owner, and it runs under the same lock the owner takes to
disarm, so a reused descriptor is never touched.
"""

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("replicas.watchdog")


class _Entry:
    __slots__ = ("armed", "fileno", "label")

    def __init__(self, fileno: int, label: str) -> None:
        self.fileno, self.label, self.armed = fileno, label, True


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.fired = 0

    def _ensure_thread(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="replicas-watchdog", daemon=True)
            self._thread.start()

    @contextmanager
    def guard(self, fileno: int, timeout: float, label: str = "") -> Iterator[None]:
        entry = _Entry(fileno, label)
        deadline = time.monotonic() + timeout
        with self._lock:
            self._ensure_thread()
            earliest = self._heap[0][0] if self._heap else None
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))
            if earliest is None or deadline < earliest:
                self._lock.notify()
        try:
            yield
        finally:
            with self._lock:
                entry.armed = False

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._lock.wait()
                deadline, _, entry = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                if entry.armed:
                    entry.armed = False
                    self.fired += 1
                    self._cut(entry)

    @staticmethod
    def _cut(entry: _Entry) -> None:
        logger.warning("replicas: %s did not answer in time; dropping its connection", entry.label)
        try:
            sock = socket.socket(fileno=os.dup(entry.fileno))
        except OSError:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()


watchdog = Watchdog()
