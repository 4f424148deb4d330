"""Finishing delivered outbox rows: deleted (or handed to the worker) together, per process.

Once a change's inline handlers ran, its outbox row must go: deleted when nothing is
left to do, or handed to the outbox worker (its deferred handlers, push) at once. Doing
that with one statement per write cost a round trip on every request thread after its
commit; instead the ids wait here up to CHANGELOG_FINISH_DELAY_SECONDS and a daemon
thread of the process finishes all that gathered meanwhile in one statement per kind
and database.

What a wait can cost is bounded by the worker's grace period: a row still here when its
grace has passed (the process died, or stalled) is claimed by the outbox worker, which
runs its handlers again. Every handler is idempotent (realtime drops a version it
already published, a purge twice is a purge, deliveries are unique per event and
device), so a crash here repeats an effect and never loses one. The delay is checked to
stay well under the grace period (config.settings).
"""

import atexit
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections

from changelog.metrics import DELIVERY_PATHS, changelog_deliveries, changelog_finish_batches

logger = logging.getLogger(__name__)

# Rows younger than half the worker's grace period cannot be the worker's yet: plain
# statements. Older ones may be (a slow handler, a stalled process): SKIP LOCKED, a row
# the worker holds is the worker's to finish; never wait for it here.
_DELETE_YOUNG = "DELETE FROM changelog_outbox WHERE id = ANY(%s)"
_DELETE_DONE = """
DELETE FROM changelog_outbox WHERE id IN (
    SELECT id FROM changelog_outbox WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED)
"""
_HAND_YOUNG_TO_WORKER = (
    "UPDATE changelog_outbox SET inline_done = true, available_at = clock_timestamp() WHERE id = ANY(%s)"
)
_HAND_TO_WORKER = """
UPDATE changelog_outbox SET inline_done = true, available_at = clock_timestamp() WHERE id IN (
    SELECT id FROM changelog_outbox WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED)
"""


@dataclass
class _Pending:
    """What waits to be finished on one database."""

    done: list[int] = field(default_factory=list)
    for_worker: list[int] = field(default_factory=list)
    oldest_committed_at: float = float("inf")


class _Finisher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[str, _Pending] = {}
        self._pid = 0  # the process whose thread runs (a forked child starts its own)

    def add(self, database: str, *, done: list[int], for_worker: list[int], committed_at: float) -> None:
        delay = settings.CHANGELOG_FINISH_DELAY_SECONDS
        with self._lock:
            pending = self._pending.setdefault(database, _Pending())
            pending.done += done
            pending.for_worker += for_worker
            pending.oldest_committed_at = min(pending.oldest_committed_at, committed_at)
            if delay > 0:
                self._ensure_thread()
        if delay <= 0:
            self.flush()
        else:
            self._wake.set()

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="changelog-finisher", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(settings.CHANGELOG_FINISH_DELAY_SECONDS)  # let the batch gather
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Finish everything waiting now, on this thread (also at process exit)."""
        with self._lock:
            batches, self._pending = self._pending, {}
        if batches and settings.CHANGELOG_CRASH_BEFORE_FINISH:  # test-only: die with the rows unfinished
            os.kill(os.getpid(), signal.SIGKILL)
        for database, pending in batches.items():
            _finish(database, pending)


def _finish(database: str, pending: _Pending) -> None:
    young = time.time() - pending.oldest_committed_at < settings.CHANGELOG_WORKER_GRACE_SECONDS / 2
    if pending.for_worker:
        _execute(database, _HAND_YOUNG_TO_WORKER if young else _HAND_TO_WORKER, [pending.for_worker])
    if pending.done and _execute(database, _DELETE_YOUNG if young else _DELETE_DONE, [pending.done]):
        changelog_deliveries.labels(path=DELIVERY_PATHS.inline).inc(len(pending.done))
    changelog_finish_batches.inc()


def _execute(database: str, sql: str, params: list[Any]) -> bool:
    """The finisher thread keeps its connection between batches (a checkout from the
    pool per batch cost more than the statements it saved). A connection the server
    closed meanwhile (a restart, a failover, a terminated backend) fails the first try:
    it is dropped and the statement runs once more on a fresh one, which is safe since
    deleting or handing over the same ids twice changes nothing. Only a second failure
    leaves the rows to the worker."""
    for attempt in (1, 2):
        try:
            with connections[database].cursor() as cursor:
                cursor.execute(sql, params)
            return True
        except Exception as error:  # never let the finisher thread die: the worker delivers them again
            connections[database].close()
            if attempt == 1 and isinstance(error, DatabaseError):
                continue
            if isinstance(error, DatabaseError):
                logger.warning(
                    "could not finish outbox rows; the worker will deliver them again", exc_info=True
                )
            else:
                logger.exception(
                    "finishing outbox rows failed unexpectedly; the worker will deliver them again"
                )
    return False


_finisher = _Finisher()
atexit.register(_finisher.flush)


def outbox_rows_finish(database: str, *, done: list[int], for_worker: list[int], committed_at: float) -> None:
    """Delete the `done` rows and hand `for_worker` to the outbox worker, soon (in this
    process's next batch) or at once when CHANGELOG_FINISH_DELAY_SECONDS is 0.
    `committed_at`: the oldest of their changes' commit times."""
    _finisher.add(database, done=done, for_worker=for_worker, committed_at=committed_at)


def outbox_rows_finish_now() -> None:
    """Finish what waits in this process now (a graceful stop; tests)."""
    _finisher.flush()
