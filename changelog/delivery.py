"""Delivering a change: at once on the request thread, or later by the outbox worker.

After commit the request thread runs the inline handlers (replica position, edge purge,
realtime event) and then deletes the outbox row, or leaves it to the worker when
deferred handlers (push) remain or a handler failed. Nothing here ever raises into the
request: a failure only leaves the row for the worker, which retries with backoff
(changelog.worker).
"""

import logging
import os
import random
import signal

from django.conf import settings
from django.db import DatabaseError, connections

from changelog.dispatch import Change, HandlerFailed, handlers, run_handlers
from changelog.metrics import DELIVERY_PATHS, changelog_deliveries

logger = logging.getLogger(__name__)

# SKIP LOCKED: a row the worker holds is the worker's to finish; never wait for it here.
_DELETE_DONE = """
DELETE FROM changelog_outbox WHERE id = (
    SELECT id FROM changelog_outbox WHERE id = %s FOR UPDATE SKIP LOCKED)
"""
_HAND_TO_WORKER = """
UPDATE changelog_outbox SET inline_done = true, available_at = clock_timestamp() WHERE id = (
    SELECT id FROM changelog_outbox WHERE id = %s FOR UPDATE SKIP LOCKED)
"""
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


def deliver_after_commit(change: Change) -> None:
    """Run the inline handlers now; what is left (or failed) stays for the worker."""
    if settings.CHANGELOG_CRASH_AFTER_COMMIT:  # test-only: die between commit and delivery
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        run_handlers(change, handlers(inline=True))
    except HandlerFailed as failure:
        _execute(change.database, _RECORD_FAILURE, [str(failure)[:2000], retry_delay(1), change.outbox_id])
        return
    except Exception:  # a handler bug must not turn a committed write into a 500
        logger.exception("change delivery failed unexpectedly; the outbox worker will retry")
        return
    if handlers(inline=False):
        _execute(change.database, _HAND_TO_WORKER, [change.outbox_id])
    else:
        _execute(change.database, _DELETE_DONE, [change.outbox_id])
        changelog_deliveries.labels(path=DELIVERY_PATHS.inline).inc()


def _execute(database: str, sql: str, params: list[object]) -> None:
    try:
        with connections[database].cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError:
        logger.warning("could not update the outbox row; the worker will deliver it again", exc_info=True)
