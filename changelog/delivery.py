"""Delivering a change: at once on the request thread, or later by the outbox worker.

After commit the request thread runs the inline handlers (replica position, edge purge,
realtime event); then the outbox row is deleted, or handed to the worker when deferred
handlers (push) remain (the org was not quiet, changelog.services), in this process's
next batch (changelog.finishing); a failed handler leaves it to the worker. Nothing here ever raises into the
request: a failure only leaves the row for the worker, which retries with backoff
(changelog.worker).

Inside `delivery_batch()` (a sync push: one transaction per mutation, up to 100 per
request) the changes committed meanwhile are collected and delivered together when the
block ends: each handler runs once for all of them (one purge of the union of the tags,
one Redis round trip for the events, in version order) and one statement deletes their
outbox rows. The rows exist from each commit on, so a crash inside the block loses
nothing (the worker delivers them); the block ends before the response, so the purge
still precedes it. A batch is also delivered once it holds BATCH_MAX changes or its
oldest is half the worker's grace period old, so the worker does not race it.
"""

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections

from changelog.dispatch import Change, HandlerFailed, handlers, run_handlers_batch
from changelog.finishing import outbox_rows_finish

logger = logging.getLogger(__name__)

BATCH_MAX = 100

_RECORD_FAILURE = """
UPDATE changelog_outbox
SET attempts = attempts + 1, last_error = %s, available_at = clock_timestamp() + make_interval(secs => %s)
WHERE id = (SELECT id FROM changelog_outbox WHERE id = %s FOR UPDATE SKIP LOCKED)
"""


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failures: exponential from 0.25 s,
    capped at CHANGELOG_RETRY_MAX_SECONDS, with jitter so a fleet does not retry in step."""
    base = min(settings.CHANGELOG_RETRY_MAX_SECONDS, 0.25 * 2 ** max(attempts - 1, 0))
    return base * random.uniform(0.75, 1.0)  # noqa: S311 (jitter, not security)


class _Batch:
    def __init__(self) -> None:
        self.depth = 0
        self.changes: list[Change] = []
        self.started = 0.0


_local = threading.local()


def _batch() -> _Batch:
    batch = getattr(_local, "batch", None)
    if batch is None:
        batch = _local.batch = _Batch()
    return batch


@contextmanager
def delivery_batch() -> Iterator[None]:
    """Deliver the changes committed inside the block together when it ends (nested
    blocks: the outermost one delivers). For a request that commits many changes."""
    batch = _batch()
    batch.depth += 1
    try:
        yield
    finally:
        batch.depth -= 1
        if batch.depth == 0:
            _flush(batch)


def deliver_after_commit(change: Change) -> None:
    """Run the inline handlers now (or at the end of the current delivery_batch); what
    is left (or failed) stays for the worker."""
    if settings.CHANGELOG_CRASH_AFTER_COMMIT:  # test-only: die between commit and delivery
        os.kill(os.getpid(), signal.SIGKILL)
    batch = _batch()
    if batch.depth == 0:
        deliver_changes([change])
        return
    if not batch.changes:
        batch.started = time.monotonic()
    batch.changes.append(change)
    if len(batch.changes) >= BATCH_MAX or (
        time.monotonic() - batch.started >= settings.CHANGELOG_WORKER_GRACE_SECONDS / 2
    ):
        _flush(batch)


def _flush(batch: _Batch) -> None:
    changes, batch.changes = batch.changes, []
    if changes:
        deliver_changes(changes)


def deliver_changes(changes: list[Change]) -> None:
    """Run the inline handlers for `changes` (in commit order), then delete their
    outbox rows or hand them to the worker. Never raises."""
    try:
        run_handlers_batch(changes, handlers(inline=True))
    except Exception as error:
        if len(changes) > 1:  # which change failed is unknown: deliver each on its own
            for change in changes:
                deliver_changes([change])
            return
        if isinstance(error, HandlerFailed):
            _execute(
                changes[0].database,
                _RECORD_FAILURE,
                [str(error)[:2000], retry_delay(1), changes[0].outbox_id],
            )
        else:  # a handler bug must not turn a committed write into a 500
            logger.exception("change delivery failed unexpectedly; the outbox worker will retry")
        return
    deferred = bool(handlers(inline=False))
    for database in dict.fromkeys(change.database for change in changes):
        mine = [change for change in changes if change.database == database]
        # A quiet org's change has no deferred work: done once its inline handlers ran.
        outbox_rows_finish(
            database,
            done=[change.outbox_id for change in mine if not deferred or change.quiet],
            for_worker=[change.outbox_id for change in mine if deferred and not change.quiet],
            committed_at=min(change.committed_at for change in mine),
        )


def _execute(database: str, sql: str, params: list[Any]) -> bool:
    try:
        with connections[database].cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError:
        logger.warning("could not update the outbox rows; the worker will deliver them again", exc_info=True)
        return False
    return True
